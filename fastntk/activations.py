"""One registry of activations: φ, φ' and the rule for their dual kernels.

Each activation is an :class:`Activation`: ``fn`` is the pointwise φ used by the finite
network, ``df`` its derivative φ', and ``dual`` a typed rule for the dual kernels
E[φ(u)φ(v)] and E[φ'(u)φ'(v)] that the infinite-width recursion needs:

* closed forms: :class:`ABReluDual` (the arc-cosine kernels of the ReLU family),
  :class:`ErfDual`, :class:`SinDual`, :class:`GeluDual`, and neural-tangents' others:
  :class:`ExpDual`, :class:`GaussianDual`, :class:`ExpNormalizedDual`, :class:`RbfDual`,
  :class:`SignDual`, :class:`GaborDual`, :class:`MonomialDual`,
  :class:`RectifiedMonomialDual`, :class:`PolynomialDual`, :class:`HermiteDual`;
* :class:`QuadratureDual`: any φ by Gauss–Hermite quadrature (compiled with Numba once
  per function);
* :class:`GivenDual`: dual kernels the user writes as Python functions.

``dual`` is None for the identity, which is no layer at all in the recursion.

``fn`` and ``df`` are written against the array namespace of their argument (NumPy, JAX,
PyTorch: :func:`namespace`), so the finite network runs, and differentiates, where its
inputs live. The quadrature rules keep NumPy-only functions, which Numba compiles.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable

import numpy as np
import scipy.special
from array_api_compat import array_namespace, is_torch_namespace

__all__ = [
    "ACTIVATIONS",
    "ABReluDual",
    "Activation",
    "ErfDual",
    "ExpDual",
    "ExpNormalizedDual",
    "GaborDual",
    "GaussianDual",
    "GeluDual",
    "GivenDual",
    "HermiteDual",
    "MAX_RECTIFIED_DEGREE",
    "MonomialDual",
    "PolynomialDual",
    "QuadratureDual",
    "RbfDual",
    "RectifiedMonomialDual",
    "SignDual",
    "SinDual",
    "by_name",
    "namespace",
]


def namespace(x):
    """(xp, special) for the array x: its array namespace and one with ``erf`` and ``ndtr``.

    NumPy arrays and scalars: (numpy, scipy.special); JAX: (jax.numpy, jax.scipy.special);
    PyTorch: (array_api_compat.torch, torch.special). Any other array-API namespace: its own
    ``erf`` and ``ndtr`` where it has them (None where not).

    JAX arrays (tracers included) are recognised as ``jax.Array`` before array_api_compat is
    asked: jax before 0.4.32 gives its arrays no ``__array_namespace__``, and there
    array_api_compat may name ``jax.experimental.array_api`` instead of ``jax.numpy``.
    """
    if isinstance(x, (np.ndarray, np.generic, float, int)):
        return np, scipy.special
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        import jax.scipy.special

        return jax.numpy, jax.scipy.special
    xp = array_namespace(x)
    if is_torch_namespace(xp):
        return xp, sys.modules["torch"].special
    return xp, SimpleNamespace(erf=getattr(xp, "erf", None), ndtr=getattr(xp, "ndtr", None))


@dataclass(frozen=True)
class ABReluDual:
    """φ(x) = a·min(x, 0) + b·max(x, 0): arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009)."""

    a: float
    b: float


@dataclass(frozen=True)
class ErfDual:
    """φ(x) = a·erf(b·x) + c (Williams 1997)."""

    a: float
    b: float
    c: float


@dataclass(frozen=True)
class SinDual:
    """φ(x) = a·sin(b·x + c)."""

    a: float
    b: float
    c: float


@dataclass(frozen=True)
class GeluDual:
    """φ(x) = x·Φ(x), the exact GELU."""


@dataclass(frozen=True, eq=False)
class QuadratureDual:
    """Any φ: both expectations by deg×deg Gauss–Hermite quadrature of ``fn`` and ``df``."""

    fn: Callable
    df: Callable
    deg: int


@dataclass(frozen=True, eq=False)
class GivenDual:
    """User-given ``nngp_fn(cov12, var1, var2)`` = E[φ(u)φ(v)] and ``d_nngp_fn`` = E[φ'(u)φ'(v)]."""

    nngp_fn: Callable
    d_nngp_fn: Callable


@dataclass(frozen=True)
class ExpDual:
    """φ(x) = a·exp(b·x)."""

    a: float
    b: float


@dataclass(frozen=True)
class GaussianDual:
    """φ(x) = a·exp(b·x²) (E[φ(u)φ(v)] is infinite where I − 2bΣ is not positive definite)."""

    a: float
    b: float


@dataclass(frozen=True)
class ExpNormalizedDual:
    """No φ: the "Gaussian normalised kernel" s·exp(γ(ρ + shift)), s = √(Σ₁₁Σ₂₂), ρ = Σ₁₂/s
    (Shankar et al. 2020, arXiv:2003.02237), ρ clipped to [−1, 1] when ``do_clip``."""

    gamma: float
    shift: float
    do_clip: bool


@dataclass(frozen=True)
class RbfDual:
    """φ(x) = √2·sin(√(2γ)·x + π/4): E[φ(u)φ(v)] = exp(−γ(Σ₁₁ + Σ₂₂ − 2Σ₁₂))."""

    gamma: float


@dataclass(frozen=True)
class SignDual:
    """φ(x) = sign(x): E[φ(u)φ(v)] = 1 − 2θ/π; φ' = 0 wherever it is defined."""


@dataclass(frozen=True)
class GaborDual:
    """φ(x) = exp(−x²)·sin(x)."""


@dataclass(frozen=True)
class MonomialDual:
    """φ(x) = xⁿ, n = ``degree`` (E[uⁿvⁿ] by Isserlis' theorem)."""

    degree: int


#: Largest degree of a rectified monomial (the fused pass keeps its arc-cosine polynomials on the stack).
MAX_RECTIFIED_DEGREE = 64


@dataclass(frozen=True)
class RectifiedMonomialDual:
    """φ(x) = [x ≥ 0]·xⁿ: the arc-cosine kernel of degree n = ``degree`` (Cho & Saul 2009)."""

    degree: int


@dataclass(frozen=True)
class PolynomialDual:
    """φ(x) = Σᵢ coef[i]·xⁱ (the fused pass takes up to 4 coefficients, cubics)."""

    coef: tuple


@dataclass(frozen=True)
class HermiteDual:
    """φ(x) = Heₙ(x)/√(n!), the probabilists' Hermite polynomial of degree n = ``degree``,
    normalised so that E[φ(z)²] = 1 for z ~ N(0, 1)."""

    degree: int


#: Rules with closed-form dual kernels (the compiled backends evaluate these).
CLOSED_FORMS = (ABReluDual, ErfDual, SinDual, GeluDual, ExpDual, GaussianDual, ExpNormalizedDual, RbfDual,
                SignDual, GaborDual, MonomialDual, RectifiedMonomialDual, PolynomialDual, HermiteDual)


@dataclass(frozen=True, eq=False)
class Activation:
    """A pointwise activation φ, its derivative and its dual-kernel rule.

    Attributes
    ----------
    name : str
    fn : callable, array -> array
        φ, applied elementwise in the namespace of its argument (NumPy, JAX, PyTorch).
    df : callable, array -> array
        φ', likewise; used by the empirical NTK and the finite network's derivatives.
    dual : a rule of CLOSED_FORMS, QuadratureDual, GivenDual or None
        The rule for the dual kernels; None for the identity (no layer in the recursion).
    """

    name: str
    fn: Callable
    df: Callable
    dual: object

    @property
    def closed_form(self) -> bool:
        return isinstance(self.dual, CLOSED_FORMS)


def _relu_family_prime(a, b):
    # φ' = a (x < 0), b (x > 0), 0 at x = 0 exactly (jax.nn.relu's convention; measure zero).
    # Scalars of x's dtype, so float32 stays float32 (no float64 temporary and cast).
    def prime(x):
        xp, _ = namespace(x)
        if xp is not np:  # b·[x > 0] + a·[x < 0]: the same exact values, any namespace
            d = b * xp.astype(x > 0, x.dtype)
            return d if a == 0 else d + a * xp.astype(x < 0, x.dtype)
        t = x.dtype.type
        if a == 0:
            d = (x > 0).astype(x.dtype)
            return d if b == 1 else np.multiply(d, t(b), out=d)
        return np.where(x > 0, t(b), np.where(x < 0, t(a), t(0)))

    return prime


def _relu_family(name, fn, a, b):
    return Activation(name, fn, _relu_family_prime(a, b), ABReluDual(a, b))


def _abrelu_fn(a, b):
    def fn(x):
        xp, _ = namespace(x)
        return a * xp.minimum(x, 0) + b * xp.maximum(x, 0)

    return fn


def _relu(x):
    return namespace(x)[0].maximum(x, 0)


def _abs(x):
    return namespace(x)[0].abs(x)


def abrelu(a: float, b: float) -> Activation:
    """φ(x) = a·min(x, 0) + b·max(x, 0); arc-cosine dual kernels (Cho & Saul 2009)."""
    a, b = float(a), float(b)
    return _relu_family("abrelu", _abrelu_fn(a, b), a, b)


def relu() -> Activation:
    return _relu_family("relu", _relu, 0.0, 1.0)


def leaky_relu(alpha: float = 0.01) -> Activation:
    alpha = float(alpha)
    return _relu_family("leaky_relu", lambda x: namespace(x)[0].where(x >= 0, x, alpha * x), alpha, 1.0)


def abs_() -> Activation:
    return _relu_family("abs", _abs, -1.0, 1.0)


def erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Activation:
    """φ(x) = a·erf(b·x) + c; dual kernels of Williams (1997)."""
    a, b, c = float(a), float(b), float(c)
    scale = a * b * 2 / np.sqrt(np.pi)  # φ' = a·b·2/√π·exp(−b²x²)
    return Activation("erf", lambda x: a * namespace(x)[1].erf(b * x) + c,
                      lambda x: scale * namespace(x)[0].exp(-(b * x) ** 2), ErfDual(a, b, c))


def sigmoid_like() -> Activation:
    """The erf that best matches the logistic sigmoid (neural-tangents ``Sigmoid_like``)."""
    act = erf(0.5, 1 / 2.4020563531719796, 0.5)
    return Activation("sigmoid_like", act.fn, act.df, act.dual)


def sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Activation:
    """φ(x) = a·sin(b·x + c)."""
    a, b, c = float(a), float(b), float(c)
    return Activation("sin", lambda x: a * namespace(x)[0].sin(b * x + c),
                      lambda x: (a * b) * namespace(x)[0].cos(b * x + c), SinDual(a, b, c))


def cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Activation:
    """φ(x) = a·cos(b·x + c) = a·sin(b·x + c + π/2)."""
    return sin(a, b, float(c) + math.pi / 2)


# Numerical activations are compiled by Numba, so the quadrature gets np-ufunc twins (``_np``)
# of the namespace-generic φ and φ' that the finite network applies.
def _gelu_tanh(x):
    return 0.5 * x * (1 + namespace(x)[0].tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _gelu_tanh_prime(x):
    th = namespace(x)[0].tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))
    return 0.5 * (1 + th) + 0.5 * x * (1 - th**2) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x**2)


def _gelu_tanh_np(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _gelu_tanh_prime_np(x):
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)
    th = np.tanh(u)
    return 0.5 * (1 + th) + 0.5 * x * (1 - th**2) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x**2)


def _gelu(x):
    return x * namespace(x)[1].ndtr(x)


def _gelu_prime(x):  # d/dx x·Φ(x) = Φ(x) + x·φ(x)
    xp, special = namespace(x)
    return special.ndtr(x) + x * xp.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def gelu(approximate: bool = False) -> Activation:
    """φ(x) = x·Φ(x); ``approximate=True`` uses the tanh form, whose kernels go by quadrature."""
    if approximate:
        return _builtin_numerical("gelu", (_gelu_tanh_np, _gelu_tanh_prime_np), (_gelu_tanh, _gelu_tanh_prime), 25)
    return Activation("gelu", _gelu, _gelu_prime, GeluDual())


def _one(x):
    return namespace(x)[0].ones_like(x)


def identity() -> Activation:
    """φ(x) = x: no layer at all in the recursion (``dual`` is None)."""
    return Activation("identity", lambda x: x, _one, None)


def _tanh_prime(x):
    return 1 - np.tanh(x) ** 2


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


def _softplus(x):
    return np.logaddexp(x, 0.0)


def _silu(x):
    return x * 0.5 * (1 + np.tanh(0.5 * x))


def _silu_prime(x):
    s = 0.5 * (1 + np.tanh(0.5 * x))
    return s * (1 + x * (1 - s))


def _xp_tanh(x):
    return namespace(x)[0].tanh(x)


def _xp_tanh_prime(x):
    return 1 - namespace(x)[0].tanh(x) ** 2


def _xp_sigmoid(x):
    return 0.5 * (1 + namespace(x)[0].tanh(0.5 * x))


def _xp_softplus(x):
    xp = namespace(x)[0]
    return xp.logaddexp(x, xp.zeros_like(x))


def _xp_silu(x):
    return x * _xp_sigmoid(x)


def _xp_silu_prime(x):
    s = _xp_sigmoid(x)
    return s * (1 + x * (1 - s))


def _xp_sigmoid_prime(x):
    s = _xp_sigmoid(x)
    return s * (1 - s)


def _builtin_numerical(name, quadrature, finite, deg):
    """A built-in quadrature activation: the Numba-compiled NumPy (φ, φ') pair ``quadrature``
    for its dual kernels, the namespace-generic pair ``finite`` for the finite network."""
    act = numerical(quadrature[0], deg=deg, df=quadrature[1], name=name)
    return replace(act, fn=finite[0], df=finite[1])


def tanh(deg: int = 25) -> Activation:
    return _builtin_numerical("tanh", (np.tanh, _tanh_prime), (_xp_tanh, _xp_tanh_prime), deg)


def softplus(deg: int = 25) -> Activation:
    return _builtin_numerical("softplus", (_softplus, _sigmoid), (_xp_softplus, _xp_sigmoid), deg)


def silu(deg: int = 25) -> Activation:
    return _builtin_numerical("silu", (_silu, _silu_prime), (_xp_silu, _xp_silu_prime), deg)


def central_difference(fn: Callable) -> Callable:
    """φ' by a central difference with step ∛eps·max(1, |x|) (relative error ~1e-10)."""

    def df(x):
        h = 6.0554544523933395e-06 * np.maximum(1.0, np.abs(x))
        return (fn(x + h) - fn(x - h)) / (2 * h)

    df.central_difference_of = fn  # the Numba backend compiles the same rule from fn
    return df


def numerical(fn: Callable, deg: int, df: Callable | None = None, name: str = "numerical") -> Activation:
    """Any φ: dual kernels by deg×deg Gauss–Hermite quadrature (neural-tangents ``ElementwiseNumerical``).

    The rule is exact for polynomial φ of degree < deg and converges fast for φ analytic in a
    wide strip; saturating φ converge slowly as the pre-activation variance Σ grows (tanh at
    deg 25, ρ = 1: absolute error 3e-4 in E[φφ] and 2e-3 in E[φ'φ'] at Σ = 1.7, 1e-2 and 4e-2
    at Σ = 5). Raise deg for more: the cost is deg² evaluations of φ per entry and layer.

    ``fn`` (and ``df``) must be NumPy-vectorised and compilable by Numba (plain arithmetic
    and ``np`` ufuncs). Without ``df`` the derivative is a central difference of ``fn``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable; got {type(fn).__name__}")
    if df is not None and not callable(df):
        raise TypeError(f"df must be callable or None; got {type(df).__name__}")
    if isinstance(deg, bool) or not isinstance(deg, (int, np.integer)) or not 2 <= deg <= 200:
        raise ValueError(f"deg must be an integer in [2, 200]; got {deg!r}")
    df = central_difference(fn) if df is None else df
    return Activation(name, fn, df, QuadratureDual(fn, df, int(deg)))


def elementwise(fn: Callable | None, nngp_fn: Callable | None, d_nngp_fn: Callable | None = None) -> Activation:
    """φ with user-given dual kernels ``nngp_fn(cov12, var1, var2)`` and ``d_nngp_fn(...)``.

    Without ``d_nngp_fn``, E[φ'(u)φ'(v)] = ∂ nngp_fn/∂cov12 (Price's theorem), taken by
    complex-step differentiation in cov12 where nngp_fn takes complex input (exact to rounding,
    ~1e-15, |ρ| = 1 included), else second-order differences (~1e-10 inside, ~1e-3 at a
    |ρ| = 1 branch point such as ReLU's); see ``_d_cov12``.
    φ' (for the finite network's derivatives) is a central difference of ``fn``.
    As in neural-tangents, ``fn=None`` gives a layer with kernels only (the finite network
    raises NotImplementedError) and ``nngp_fn=None`` one without kernels (kernel_fn raises).
    """
    if fn is None and nngp_fn is None:
        raise ValueError("Elementwise needs fn (the finite network) or nngp_fn (its kernels); got neither")
    for arg, name in ((fn, "fn"), (nngp_fn, "nngp_fn"), (d_nngp_fn, "d_nngp_fn")):
        if arg is not None and not callable(arg):
            raise TypeError(f"{name} must be callable or None; got {type(arg).__name__}")
    if nngp_fn is None:
        nngp_fn = d_nngp_fn = _missing("kernel_fn (the infinite-width kernels) needs nngp_fn")
    elif d_nngp_fn is None:

        def d_nngp_fn(cov12, var1, var2):
            return _d_cov12(nngp_fn, cov12, var1, var2)

    if fn is None:
        fn = df = _missing("the finite network (apply_fn, the empirical NTK) needs fn")
    else:
        df = central_difference(fn)
    return Activation("elementwise", fn, df, GivenDual(nngp_fn, d_nngp_fn))


def _missing(what):
    """A function that raises NotImplementedError: this Elementwise layer lacks what ``what`` needs."""

    def missing(*args):
        raise NotImplementedError(f"this stax.Elementwise layer was built without it: {what}")

    return missing


def _d_cov12(nngp_fn, cov12, var1, var2):
    """∂ nngp_fn/∂cov12: complex step where nngp_fn is analytic, else second-order differences.

    Complex step (Squire & Trapp 1998): ∂f/∂Σ₁₂ = Im f(Σ₁₂ + ih)/h + O(h²) with h = 1e-40·√(Σ₁₁Σ₂₂).
    It subtracts nothing, so it is exact to rounding (~1e-15 relative), at |ρ| = 1 too, and
    steps off the real axis, never outside |Σ₁₂| ≤ √(Σ₁₁Σ₂₂). It is used per point where
    nngp_fn takes complex input, returns a finite complex value and agrees with the difference
    below to 1e-2 (a function through np.abs, np.clip or a real cast has Im = 0 and fails this).
    Elsewhere (np.arctan2, real-only code, and branch points: the arc-cosine kernel at ρ = ±1,
    where Im f has no limit), second-order differences with h = ∛eps·√(Σ₁₁Σ₂₂): central where
    Σ₁₂ ± h fits (~1e-10), one-sided (3f₀ − 4f₁ + f₂)/(2h) at the edges (~√h ≈ 1e-3 at a
    (1 − ρ)^(3/2) term, as ReLU's). Zero-variance points give 0.
    """
    bound = np.sqrt(np.abs(var1 * var2))
    h = 6.0554544523933395e-06 * bound
    safe_h = np.where(h > 0, h, 1.0)

    c = np.clip(cov12, -bound, bound)  # rounding can put |cov12| a little above the bound

    def f(steps):
        return nngp_fn(np.clip(c + steps * h, -bound, bound), var1, var2)

    central = (f(1) - f(-1)) / (2 * safe_h)
    backward = (3 * f(0) - 4 * f(-1) + f(-2)) / (2 * safe_h)
    forward = (-3 * f(0) + 4 * f(1) - f(2)) / (2 * safe_h)
    d = np.where(c + h > bound, backward, np.where(c - h < -bound, forward, central))

    import warnings

    h_c = 1e-40 * np.where(bound > 0, bound, 1.0)  # no subtraction, so no rounding to amplify
    try:  # a probe: nngp_fn may reject complex input in any way
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            z = np.asarray(nngp_fn(c + 1j * h_c, var1, var2))
        step = np.imag(z) / h_c if np.iscomplexobj(z) else None
    except Exception:  # noqa: BLE001
        step = None
    if step is not None and step.shape == d.shape:
        with np.errstate(all="ignore"):
            ok = np.isfinite(step) & (np.abs(step - d) <= 1e-2 * np.abs(d) + 1e-12 * np.abs(step))
        d = np.where(ok, step, d)
    return np.where(h > 0, d, 0.0)


def _sigmoid_prime(x):
    s = _sigmoid(x)
    return s * (1 - s)


def sigmoid(deg: int = 25) -> Activation:
    """Logistic σ(x) = 1/(1 + e^(−x)); dual kernels by quadrature (``Sigmoid_like`` is its erf stand-in)."""
    return _builtin_numerical("sigmoid", (_sigmoid, _sigmoid_prime), (_xp_sigmoid, _xp_sigmoid_prime), deg)


# --- neural-tangents 0.6.5's other closed-form activations (stax/elementwise.py) ----------


def _degree(degree, top=None):
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 0 or (
            top is not None and degree > top):
        bound = "a non-negative integer" if top is None else f"an integer in [0, {top}]"
        raise ValueError(f"degree must be {bound}; got {degree!r}")
    return int(degree)


def exp(a: float = 1.0, b: float = 1.0) -> Activation:
    """φ(x) = a·exp(b·x)."""
    a, b = float(a), float(b)
    return Activation("exp", lambda x: a * namespace(x)[0].exp(b * x),
                      lambda x: (a * b) * namespace(x)[0].exp(b * x), ExpDual(a, b))


def gaussian(a: float = 1.0, b: float = -1.0) -> Activation:
    """φ(x) = a·exp(b·x²)."""
    a, b = float(a), float(b)
    return Activation("gaussian", lambda x: a * namespace(x)[0].exp(b * x * x),
                      lambda x: (2 * a * b) * x * namespace(x)[0].exp(b * x * x), GaussianDual(a, b))


def _no_finite_network(name):
    def fn(x):
        raise NotImplementedError(f"{name} is a kernel with no finite-width network (as in neural-tangents)")

    return fn


def exp_normalized(gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False) -> Activation:
    """The "Gaussian normalised kernel" (a kernel only: ``fn`` and ``df`` raise NotImplementedError)."""
    none = _no_finite_network("ExpNormalized")
    return Activation("exp_normalized", none, none, ExpNormalizedDual(float(gamma), float(shift), bool(do_clip)))


def rbf(gamma: float = 1.0) -> Activation:
    """φ(x) = √2·sin(√(2γ)·x + π/4), whose NNGP is the RBF kernel exp(−γ(Σ₁₁ + Σ₂₂ − 2Σ₁₂))."""
    gamma = float(gamma)
    b = math.sqrt(2 * gamma)
    return Activation("rbf", lambda x: math.sqrt(2) * namespace(x)[0].sin(b * x + math.pi / 4),
                      lambda x: (math.sqrt(2) * b) * namespace(x)[0].cos(b * x + math.pi / 4), RbfDual(gamma))


def _zeros(x):
    return namespace(x)[0].zeros_like(x)


def sign() -> Activation:
    """φ(x) = sign(x); φ' = 0 (the finite network's gradient through sign)."""
    return Activation("sign", lambda x: namespace(x)[0].sign(x), _zeros, SignDual())


def _gabor(x):
    xp = namespace(x)[0]
    return xp.exp(-x * x) * xp.sin(x)


def _gabor_prime(x):
    xp = namespace(x)[0]
    return xp.exp(-x * x) * (xp.cos(x) - 2 * x * xp.sin(x))


def gabor() -> Activation:
    """φ(x) = exp(−x²)·sin(x)."""
    return Activation("gabor", _gabor, _gabor_prime, GaborDual())


def _horner(coef):
    """x ↦ Σᵢ coef[i]·xⁱ by Horner's rule: plain arithmetic, so it runs in x's namespace
    (NumPy, JAX, PyTorch) and compiles with Numba; 0 for no coefficients."""
    descending = tuple(float(c) for c in reversed(coef))

    def fn(x):
        y = 0.0 * x
        for c in descending:
            y = y * x + c
        return y

    return fn


def _derivative(coef):
    return [i * c for i, c in enumerate(coef)][1:]


def monomial(degree: int) -> Activation:
    """φ(x) = xⁿ (neural-tangents takes n ≤ 5; any n ≤ 170 here, whose n! is a float)."""
    n = _degree(degree, 170)
    def df(x):
        return n * x ** (n - 1) if n else namespace(x)[0].zeros_like(x)

    return Activation("monomial", lambda x: x**n, df, MonomialDual(n))


def rectified_monomial(degree: int) -> Activation:
    """φ(x) = [x ≥ 0]·xⁿ (n ≤ MAX_RECTIFIED_DEGREE); φ' = n·[x ≥ 0]·xⁿ⁻¹ (0 for n = 0)."""
    n = _degree(degree, MAX_RECTIFIED_DEGREE)

    def fn(x):
        xp = namespace(x)[0]
        return xp.where(x >= 0, x**n, xp.zeros_like(x))

    def df(x):
        xp = namespace(x)[0]
        return xp.where(x >= 0, n * x ** max(n - 1, 0), xp.zeros_like(x)) if n else xp.zeros_like(x)

    return Activation("rectified_monomial", fn, df, RectifiedMonomialDual(n))


def polynomial(coef) -> Activation:
    """φ(x) = coef[0] + coef[1]·x + … + coef[n]·xⁿ (``numpy.polynomial.Polynomial``'s order).

    Up to 4 coefficients (cubics) the fused pass evaluates the closed form; a longer
    polynomial of degree n goes by (n + 1)-node Gauss–Hermite quadrature, which integrates
    φ(u)φ(v) (degree 2n in each node variable at most) exactly: the same kernel, to rounding.
    """
    try:
        coef = tuple(float(c) for c in np.asarray(coef, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        raise ValueError(f"coef must be a sequence of real numbers; got {coef!r}") from None
    if not all(math.isfinite(c) for c in coef):
        raise ValueError(f"coef must be finite; got {coef!r}")
    fn, df = _polynomial_pair(coef)
    if len(coef) <= 4:
        return Activation("polynomial", fn, df, PolynomialDual(coef + (0.0,) * (4 - len(coef))))
    return numerical(fn, len(coef), df, "polynomial")


@functools.lru_cache(maxsize=64)
def _polynomial_pair(coef):
    """(φ, φ') of a polynomial, one pair per coefficient tuple, so that Numba compiles each
    polynomial once however many layers use it."""
    return _horner(coef), _horner(_derivative(coef))


def _hermite_coef(n):
    """Monomial coefficients of Heₙ/√(n!) (neural-tangents': herme2poly, then ÷ √(n!))."""
    return np.polynomial.hermite_e.herme2poly([0] * n + [1]) / math.sqrt(math.factorial(n))


def hermite(degree: int) -> Activation:
    """φ(x) = Heₙ(x)/√(n!); the kernel holds for any pre-activation variance (neural-tangents'
    Σ₁₂ⁿ assumes Σ₁₁ = Σ₂₂ = 1)."""
    n = _degree(degree)
    coef = _hermite_coef(n)
    return Activation("hermite", _horner(coef), _horner(_derivative(coef)), HermiteDual(n))


#: Activations by name, for estimators and the command line. Values build an Activation.
ACTIVATIONS: dict[str, Callable[[], Activation]] = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "abs": abs_,
    "erf": erf,
    "sigmoid_like": sigmoid_like,
    "gelu": gelu,
    "sin": sin,
    "cos": cos,
    "identity": identity,
    "tanh": tanh,
    "softplus": softplus,
    "sigmoid": sigmoid,
    "silu": silu,
    "swish": silu,
    "exp": exp,
    "gaussian": gaussian,
    "rbf": rbf,
    "sign": sign,
    "gabor": gabor,
}


def by_name(name: str) -> Activation:
    """The activation called ``name``; ValueError listing the supported names otherwise."""
    try:
        return ACTIVATIONS[name]()
    except (KeyError, TypeError):
        supported = ", ".join(repr(k) for k in ACTIVATIONS)
        raise ValueError(f"unknown activation {name!r}; supported: {supported}") from None
