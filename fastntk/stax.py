"""neural-tangents-compatible network combinators (fully-connected part).

Every layer and ``serial`` return ``(init_fn, apply_fn, kernel_fn)``, as
``neural_tangents.stax`` does, with the same conventions and numbers::

    from fastntk import stax
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.05))
    k = kernel_fn(x1, x2, ('nngp', 'ntk'))   # k.nngp, k.ntk: (N1, N2)

Parameters are NumPy arrays: a Dense layer holds ``(W, b)`` with W of shape
(fan_in, out_dim) and b of shape (1, out_dim) (``b = None`` when ``b_std=None``);
an activation holds ``()``. ``init_fn(jax.random.PRNGKey(k), shape)`` instead draws the JAX
arrays neural-tangents 0.6.5 draws from that key, and ``apply_fn`` computes in the namespace
of its inputs: JAX or PyTorch arrays in, the same kind out, differentiable by
``jax.grad``/``jax.jit``/``jax.vmap`` or torch autograd.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace

from . import _backend, network, spec
from . import activations as _act
from ._types import Kernel
from ._validation import (
    check_block_rows,
    check_get,
    check_out,
    check_pair,
    check_positive,
)
from .infinite import infinite_kernels

__all__ = [
    "ABRelu",
    "Abs",
    "Activation",
    "Cos",
    "Dense",
    "Elementwise",
    "ElementwiseNumerical",
    "Erf",
    "Gelu",
    "Identity",
    "Kernel",
    "LeakyRelu",
    "Relu",
    "Sigmoid_like",
    "Silu",
    "Sin",
    "Swish",
    "Softplus",
    "Tanh",
    "fc_network",
    "serial",
]


class Layer(NamedTuple):
    """``(init_fn, apply_fn, kernel_fn)`` of a network; each carries its typed spec as ``.spec``."""

    init_fn: object
    apply_fn: object
    kernel_fn: object


class _KernelFn:
    """``kernel_fn(x1, x2=None, get=None, *, diagonal=False, out=None, dtype=None, progress=False)``."""

    def __init__(self, layer_spec):
        self.spec = layer_spec
        self.__doc__ = _KERNEL_FN_DOC

    def __call__(self, x1, x2=None, get=None, *, diagonal=False, out=None, dtype=None, progress=False,
                 block_rows=None, backend="auto"):
        names = check_get(get)
        be = _backend.select(x1, x2, backend=backend)
        x1, x2, dtype = check_pair(x1, x2, dtype)
        if diagonal and x2 is not None:
            raise ValueError("diagonal=True gives Σ(x, x) and Θ(x, x) of x1 alone; x2 must be None")
        outs = check_out(out, get, names, (x1.shape[0], (x1 if x2 is None else x2).shape[0]), dtype, {"x1": x1, "x2": x2})
        if diagonal and outs:
            raise ValueError("out is for full (N1, N2) kernels; it cannot be used with diagonal=True")
        check_block_rows(block_rows)
        res = infinite_kernels(x1, x2, self.spec, names, dtype, be, diagonal=diagonal, out=outs,
                               block_rows=block_rows, progress=progress)
        if isinstance(get, str):
            return res[get]
        return Kernel(names, [res[n] for n in names], res["cov1"], res["cov2"])


_KERNEL_FN_DOC = """Infinite-width NNGP Σ and NTK Θ of the network.

Parameters
----------
x1 : ndarray of shape (N1, d), float32 or float64
    First batch of inputs. Rows with zero norm give finite kernels, never NaN.
x2 : ndarray of shape (N2, d) or None
    Second batch; None means x1 (the result is then symmetric and half the work).
get : None, 'nngp', 'ntk' or a tuple of them
    A string returns that array; None (= ('nngp', 'ntk')) or a tuple, a :class:`Kernel`: a
    namedtuple-like tuple of those kernels in that order, with ``cov1`` and ``cov2``.
diagonal : bool, keyword-only
    Return only Σ(x1ᵢ, x1ᵢ) and Θ(x1ᵢ, x1ᵢ), shape (N1,): O(N1·depth) work and memory.
out : ndarray, tuple or dict of them, keyword-only
    Preallocated results of shape (N1, N2) and the result dtype with unit-stride rows,
    e.g. ``np.memmap``; one array when ``get`` is a string, else one per name of ``get``.
dtype : float32 or float64, keyword-only
    Result dtype; by default float32 when every input is float32, else float64.
progress : bool, keyword-only
    Show a progress bar.
backend : 'auto' or 'cpu', keyword-only
    Where to compute; 'auto' chooses by the type of the inputs (NumPy arrays: 'cpu').
block_rows : int, keyword-only
    Rows of x1 per tile of the fused pass; by default about 32 MiB of each result per tile.
    Results agree to rounding whatever its value (BLAS may block other tiles differently).

Returns
-------
Kernel or ndarray, dtype as above. The readout width O does not appear:
the kernel of an O-output network is Σ ⊗ I_O.

Raises
------
ValueError, TypeError
    Bad shapes, dtypes, NaN/inf, unknown ``get``.
MemoryError
    The results would not fit in available memory (checked before allocating).
"""


def _layer(layer_spec):
    """The (init_fn, apply_fn, kernel_fn) of a spec node; each function carries it as ``.spec``."""
    kernel_fn = _KernelFn(layer_spec)

    def init_fn(rng, input_shape):
        """(output_shape, params) of the network for inputs of shape input_shape.

        ``rng``: an int seed or numpy Generator (NumPy params), or a JAX PRNG key
        (neural-tangents' JAX params, drawn exactly as ``neural_tangents.stax`` 0.6.5 does).
        """
        return network.init(layer_spec, rng, _input_shape(input_shape))

    def apply_fn(params, inputs, *, rng=None, **kwargs):
        """Outputs of the finite network with parameters ``params`` on ``inputs`` of shape (..., d).

        ``rng`` is accepted as neural-tangents' layers accept it (no layer here is random, so
        it is unused); any other keyword is refused.
        """
        if kwargs:
            raise TypeError(f"apply_fn got unexpected keyword arguments {sorted(kwargs)}; accepted: rng "
                            "(unused: no layer of this network is random)")
        return _apply(layer_spec, params, inputs)

    init_fn.spec = apply_fn.spec = layer_spec  # read by fastntk.empirical
    return Layer(init_fn, apply_fn, kernel_fn)


def _input_shape(input_shape):
    """input_shape as a tuple of positive ints (at least 1-D: the last axis is the features)."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints such as (N, d); got {input_shape!r}")
    return tuple(int(n) for n in shape)


def _as_array(x):
    """(x, its namespace): any array-API array (NumPy, JAX, PyTorch) as is, else np.asarray(x)."""
    try:
        return x, array_namespace(x)
    except TypeError:
        h = np.asarray(x)
        return h, array_namespace(h)


def _apply(layer_spec, params, x):
    h, xp = _as_array(x)
    if h.ndim < 1 or not xp.isdtype(h.dtype, ("real floating", "integral")):
        raise ValueError(f"inputs must be a real array of shape (..., d); got shape {h.shape}, dtype {h.dtype}")
    return network.apply(network.check_params(layer_spec, params, h.shape[-1]), h)


def serial(*layers):
    """Layers applied one after the other; params are a list with one entry per layer."""
    for i, layer in enumerate(layers):
        kernel_fn = layer[2] if isinstance(layer, tuple) and len(layer) == 3 else None
        if not isinstance(kernel_fn, _KernelFn):
            raise TypeError(f"serial argument {i} must be a fastntk.stax layer; got {type(layer).__name__}")
    return _layer(spec.Serial(tuple(layer[2].spec for layer in layers)))


def _act_layer(activation):
    return _layer(spec.Identity() if activation.dual is None else spec.Act(activation))


def Dense(out_dim, W_std=1.0, b_std=None, parameterization="ntk"):
    """Fully-connected layer.

    'ntk' parameterization (Jacot et al. 2018, arXiv:1806.07572): z = W_std/√fan_in·h W + b_std·b
    with W, b ~ N(0, 1). 'standard' (Sohl-Dickstein et al. 2020, arXiv:2001.07301): z = h W + b with
    W ~ N(0, W_std²/fan_in), b ~ N(0, b_std²). ``b_std=None`` means no bias parameter at all,
    which differs from ``b_std=0.0`` in the standard-parameterization NTK (+1 per layer).
    """
    return _layer(_dense(out_dim, W_std, b_std, parameterization))


def _dense(out_dim, W_std, b_std, parameterization, out_dim_name="out_dim"):
    if isinstance(out_dim, bool) or not isinstance(out_dim, numbers.Integral) or out_dim < 1:
        raise ValueError(f"{out_dim_name} must be a positive integer; got {out_dim!r}")
    W_std = check_positive(W_std, "W_std", allow_zero=True)  # 0: neural-tangents allows it (phase diagrams)
    b_std = check_positive(b_std, "b_std", allow_zero=True, allow_none=True)
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard'; got {parameterization!r}")
    return spec.Dense(int(out_dim), W_std, b_std, parameterization)


def _finite(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return float(value)


def ABRelu(a, b):
    """φ(x) = a·min(x, 0) + b·max(x, 0)."""
    return _act_layer(_act.abrelu(_finite(a, "a"), _finite(b, "b")))


def Relu():
    return _act_layer(_act.relu())


def LeakyRelu(alpha):
    return _act_layer(_act.leaky_relu(_finite(alpha, "alpha")))


def Abs():
    return _act_layer(_act.abs_())


def Erf(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·erf(b·x) + c."""
    return _act_layer(_act.erf(_finite(a, "a"), _finite(b, "b"), _finite(c, "c")))


def Sigmoid_like():
    """0.5·erf(x/2.4020563531719796) + 0.5, neural-tangents' erf stand-in for the sigmoid."""
    return _act_layer(_act.sigmoid_like())


def Gelu(approximate=False):
    """φ(x) = x·Φ(x); ``approximate=True``: the tanh approximation (kernels by quadrature).

    With ``approximate=True`` the kernels are those of the tanh form the network computes,
    0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), by Gauss–Hermite quadrature, so kernel and
    network agree. neural-tangents differs here: its kernel is the exact GELU's while its
    network uses the tanh form (kernels ~1e-4 apart for unit-variance inputs).
    """
    return _act_layer(_act.gelu(bool(approximate)))


def Sin(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·sin(b·x + c)."""
    return _act_layer(_act.sin(_finite(a, "a"), _finite(b, "b"), _finite(c, "c")))


def Cos(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·cos(b·x + c)."""
    return _act_layer(_act.cos(_finite(a, "a"), _finite(b, "b"), _finite(c, "c")))


def Activation(name):
    """The activation registered as ``name`` in ``fastntk.activations.ACTIVATIONS`` (default parameters)."""
    return _act_layer(_act.by_name(name))


def fc_network(depth, activation="relu", W_std=1.0, b_std=None, parameterization="ntk", width=512, out_dim=1):
    """``depth`` × (Dense(width) + activation) then a Dense(out_dim) readout, one W_std/b_std throughout.

    ``activation`` is a name in ``fastntk.activations.ACTIVATIONS``. ``width`` enters the
    kernels only in the 'standard' parameterization (and the finite network).
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer; got {depth!r}")
    hidden = _layer(_dense(width, W_std, b_std, parameterization, "width"))
    act = _act_layer(_act.by_name(activation))
    return serial(*[hidden, act] * depth, _layer(_dense(out_dim, W_std, b_std, parameterization)))


def Identity():
    """No-op layer."""
    return _act_layer(_act.identity())


def Tanh(deg=25):
    """tanh; dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _act_layer(_act.tanh(deg))


def Softplus(deg=25):
    """log(1 + eˣ); dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _act_layer(_act.softplus(deg))


def Silu(deg=25):
    """x·sigmoid(x) (SiLU, Swish); dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _act_layer(_act.silu(deg))


def ElementwiseNumerical(fn, deg, df=None):
    """Any activation φ = fn, dual kernels by deg×deg Gauss–Hermite quadrature.

    ``fn`` and ``df`` (φ') must be NumPy-vectorised and compilable by Numba; without ``df``
    φ' is a central difference of ``fn`` (relative error ~1e-10).
    """
    return _act_layer(_act.numerical(fn, deg, df))


def Elementwise(fn, nngp_fn, d_nngp_fn=None):
    """Activation φ = fn with given dual kernels ``nngp_fn(cov12, var1, var2)`` = E[φ(u)φ(v)]
    and ``d_nngp_fn`` = E[φ'(u)φ'(v)] (by a central difference of nngp_fn when None)."""
    return _act_layer(_act.elementwise(fn, nngp_fn, d_nngp_fn))


Swish = Silu


# --- neural-tangents 0.6.5's other elementwise activations (stax/elementwise.py) ------------
# Same signatures and defaults; where neural-tangents' kernel is not that of its own network
# (Hermite at variances other than 1), fastntk's is the network's, with a one-time warning.

__all__ += ["Exp", "ExpNormalized", "Gabor", "Gaussian", "Hermite", "Monomial", "Polynomial",
            "RectifiedMonomial", "Rbf", "Sign"]

_WARNED = set()


def _warn_once(key, message):
    if key not in _WARNED:
        _WARNED.add(key)
        import warnings

        warnings.warn(message, UserWarning, stacklevel=3)


def Exp(a=1, b=1):
    """φ(x) = a·exp(b·x)."""
    return _act_layer(_act.exp(_finite(a, "a"), _finite(b, "b")))


def ExpNormalized(gamma=1, shift=-1, do_clip=False):
    """The "Gaussian normalised kernel" (Shankar et al. 2020, arXiv:2003.02237), a kernel only:
    Σ' = s·exp(γ(ρ + shift)), Θ' = γ·exp(γ(ρ + shift))·Θ, s = √(Σ₁₁Σ₂₂), ρ = Σ₁₂/s (clipped to
    [−1, 1] with ``do_clip``). ``apply_fn`` raises NotImplementedError, as neural-tangents'.
    """
    return _act_layer(_act.exp_normalized(_finite(gamma, "gamma"), _finite(shift, "shift"), bool(do_clip)))


def Gaussian(a=1, b=-1):
    """φ(x) = a·exp(b·x²). For b > 0, E[φ(u)φ(v)] is infinite where I − 2bΣ is not positive
    definite (a variance ≥ 1/(2b)): the dual kernels are +inf there, and kernel_fn raises
    OverflowError (neural-tangents returns a finite number from its product formula when
    both variances exceed 1/(2b))."""
    return _act_layer(_act.gaussian(_finite(a, "a"), _finite(b, "b")))


def Rbf(gamma=1.0):
    """φ(x) = √2·sin(√(2γ)·x + π/4): Σ' = exp(−γ(Σ₁₁ + Σ₂₂ − 2Σ₁₂)), the RBF kernel of the
    layer's inputs (γ = 1/(2ℓ²))."""
    return _act_layer(_act.rbf(check_positive(gamma, "gamma", allow_zero=True)))


def Sign():
    """φ(x) = sign(x): Σ' = 1 − 2θ/π; Θ' = 0 (sign' = 0 wherever it is defined, so the layers
    below a Sign do not move its output)."""
    return _act_layer(_act.sign())


def Gabor():
    """φ(x) = exp(−x²)·sin(x)."""
    return _act_layer(_act.gabor())


def Monomial(degree):
    """φ(x) = xⁿ, n = ``degree``: any integer 0 ≤ n ≤ 170 (neural-tangents: 0 to 5)."""
    return _act_layer(_act.monomial(degree))


def RectifiedMonomial(degree):
    """φ(x) = [x ≥ 0]·xⁿ: the arc-cosine kernel of degree n (Cho & Saul 2009), 0 ≤ n ≤ 64."""
    return _act_layer(_act.rectified_monomial(degree))


def Polynomial(coef):
    """φ(x) = coef[0] + coef[1]·x + … + coef[n]·xⁿ (closed form; see ``activations.polynomial``)."""
    return _act_layer(_act.polynomial(coef))


def Hermite(degree):
    """φ(x) = Heₙ(x)/√(n!), the probabilists' Hermite polynomial normalised to unit norm under N(0, 1).

    The kernel is that of this network for any variance the layer receives:
    Σ' = Σ_j n!/((n − 2j)!·j!²·4ʲ)·Σ₁₂ⁿ⁻²ʲ·((Σ₁₁ − 1)(Σ₂₂ − 1))ʲ. neural-tangents returns Σ₁₂ⁿ
    (and Θ' = n·Σ₁₂ⁿ⁻¹), which is this where Σ₁₁ = Σ₂₂ = 1 and not elsewhere; fastntk warns
    once about the difference.
    """
    layer = _act_layer(_act.hermite(degree))
    _warn_once("Hermite", "fastntk's stax.Hermite kernel is that of the network for any pre-activation "
               "variance; neural-tangents' (Σ12**degree) assumes unit variances and differs elsewhere")
    return layer
