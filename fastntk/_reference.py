"""Plain NumPy implementations that read like the maths: the oracle for every backend.

float64, a loop over layers, no tiling, no tricks. It reads the typed network spec
(:mod:`fastntk.spec`: Dense, Act, Identity, Serial) and the dual rules of
:mod:`fastntk.activations` — data only — and none of fastntk's numerics:

* ``Dense(out_dim, W_std, b_std, parameterization)``; ``b_std`` is None for no bias.
* ``ABReluDual(a, b)``: φ(x) = a·min(x, 0) + b·max(x, 0) (ReLU = (0, 1), Abs = (−1, 1)).
* ``ErfDual(a, b, c)``: φ(x) = a·erf(b·x) + c.
* ``SinDual(a, b, c)``: φ(x) = a·sin(b·x + c).
* ``GeluDual()``: φ(x) = x·Φ(x).
* ``QuadratureDual(fn, df, deg)``: any φ, by Gauss–Hermite quadrature of degree ``deg``.
* ``GivenDual(nngp_fn, d_nngp_fn)``: user-given dual kernels.

Conventions are neural-tangents' (0.6.5, ``stax/linear.py`` and ``stax/elementwise.py``).

The recursion computes in the array namespace of its inputs (:func:`fastntk.activations.namespace`):
NumPy arrays give float64 NumPy results, JAX arrays (tracers included) jax.numpy results in
their own float dtype, which ``jax.jvp``/``jax.grad`` differentiate; ``fastntk._jax_dispatch``
uses it for the derivatives of ``kernel_fn``. Square roots and divisions that meet 0 use the
double-``where`` idiom, so derivatives are finite wherever the kernel is smooth; where it is not
(ReLU family at ρ = ±1, θ held at 0 or π) the derivative is that along the directions keeping
ρ = ±1, the mean of the one-sided derivatives.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.special

from .activations import ABReluDual, ErfDual, GeluDual, GivenDual, QuadratureDual, SinDual, namespace
from .spec import Act, Dense, Dropout, FanInConcat, FanInProd, FanInSum, FanOut, Parallel, Repeat, Serial

__all__ = ["dual", "infinite_kernels", "rho_tolerance"]


def rho_tolerance(d, dtype):
    """Tolerance on 1 − ρ² below which two points count as parallel (ρ = ±1).

    The Gram entry x·x' of d-dimensional inputs carries a relative rounding error of
    about √d·eps; the ReLU-family NTK factor is first order in θ ≈ √(1 − ρ²), so that
    error would become an error of order √eps in Θ at coincident points, whose exact θ
    is 0. Below this tolerance θ is set to 0 (or π); the NNGP changes only at third
    order in θ.
    """
    return 16.0 * np.sqrt(d) * np.finfo(dtype).eps


def _residual(k12, k11, k22, xp=np):
    """r = k22·(1 − ρ²) = k22 − k12²/k11, ρ = k12/√(k11·k22); 0 where k11 = 0.

    Never the product k11·k22, which overflows (or underflows) long before the kernels
    do; r ≤ k22. r = 0 exactly at coincident points (k12 = k11 = k22), whose ρ is 1.
    """
    k12, k11, k22 = _broadcast_float(xp, k12, k11, k22)
    inv11 = xp.where(k11 > 0, 1.0 / _where_positive(xp, k11, k11), 0.0)
    return xp.where((k12 == k11) & (k12 == k22), 0.0, k22 - k12 * (k12 * inv11))


def _broadcast_float(xp, *arrays):
    """The arrays broadcast together: float64 for NumPy, as they are (floating) for another namespace."""
    if xp is np:
        return np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in arrays))
    return xp.broadcast_arrays(*(xp.asarray(a) for a in arrays))


def _where_positive(xp, cond, a):
    """a where cond > 0, else 1: the inner half of the double-``where`` idiom.

    ``xp.where(c, f(a), 0)`` differentiates both branches under JAX, and f = √ or 1/· has an
    infinite derivative at 0 that turns the discarded branch's zero cotangent into NaN; f of
    ``_where_positive(xp, c, a)`` is finite everywhere, so the derivative of the selected
    branch is exact and the discarded one contributes 0. Values are unchanged.
    """
    return xp.where(cond > 0, a, 1.0)


def _sqrt(xp, a):
    """√a for a ≥ 0, with derivative 0 rather than ∞·0 = NaN at a = 0 (see ``_where_positive``)."""
    return xp.where(a > 0, xp.sqrt(_where_positive(xp, a, a)), 0.0)


def _ldexp(xp, x, e):
    """x·2^e, exact. NumPy's ldexp; elsewhere two power-of-two factors (each within range),
    because old jax (0.4) gives ldexp a zero derivative in x."""
    if xp is np:
        return np.ldexp(x, e)
    half = e // 2
    return x * xp.exp2(xp.astype(half, x.dtype)) * xp.exp2(xp.astype(e - half, x.dtype))


def dual(rule, k12, k11, k22, rho_tol=0.0, xp=np, special=scipy.special):
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]).

    ``rule`` is an activation's dual rule. Arrays broadcast against each other. Returns
    ``(sigma, t_dot)``. No closed form takes
    the product k11·k22 of the two variances, which overflows (or underflows) long before
    the kernels do, so they hold over the whole float range.

    ``xp``, ``special``: the array namespace of the kernels and its ``erf``/``ndtr`` module
    (:func:`fastntk.activations.namespace`); NumPy and SciPy by default. Every operation has
    a JAX equivalent, and square roots and divisions that can meet 0 use the double-``where``
    idiom (``_sqrt``), so JAX derivatives are finite wherever the kernel is smooth.
    """
    if isinstance(rule, ABReluDual):
        a, b = rule.a, rule.b
        # Cho & Saul (2009): s = √(k11·k22 − k12²), θ = atan2(s, k12), the angle between the
        # two pre-activations. Both are homogeneous: computed on k11·4^−h1, k22·4^−h2 (in
        # [1/2, 2)) and k12·2^−(h1+h2), then s is scaled back. Powers of two are exact, so
        # the product form rounds as without them and cannot overflow or underflow.
        h1, h2 = xp.frexp(k11)[1] // 2, xp.frexp(k22)[1] // 2
        k11_, k22_, k12_ = _ldexp(xp, k11, -2 * h1), _ldexp(xp, k22, -2 * h2), _ldexp(xp, k12, -(h1 + h2))
        s2 = k11_ * k22_ - k12_**2
        # 1 − ρ² ≤ rho_tol: ρ = ±1; and ρ = 1 exactly at coincident points (k12 = k11 = k22).
        # There s = 0 is held constant: the derivative returned is that along the directions
        # that keep ρ = ±1, the mean of the one-sided derivatives of s ∝ |sin θ|.
        s2 = xp.where((s2 > rho_tol * k11_ * k22_) & ~((k12 == k11) & (k12 == k22)), s2, 0.0)
        s = _ldexp(xp, _sqrt(xp, s2), h1 + h2)
        zero_var = (s2 == 0) & (k12_ == 0)  # θ = π/2; atan2(0, 0) has no derivative
        theta = xp.where(zero_var, np.pi / 2, xp.arctan2(xp.where(zero_var, 1.0, _sqrt(xp, s2)), k12_))
        t_dot = (a**2 + b**2) / 2 - (a - b) ** 2 * theta / (2 * np.pi)
        return (a - b) ** 2 / (2 * np.pi) * s + t_dot * k12, t_dot
    if isinstance(rule, ErfDual):
        a, b, c = rule.a, rule.b, rule.c
        # Williams (1997), with A = b²k: den = √((1 + 2A11)(1 + 2A22) − 4A12²),
        # Σ' = a²(2/π)·atan2(2A12, den) + c², T' = a²b²(4/π)/den.
        # den² = 1 + 2A11 + 2A22 + 4b⁴·k11·r = q1²w², with e1 = 1/(1 + 2A11), t1² = 2A11·e1,
        # q1 = √(1 + 2A11): w² = 1 + 2b²e1·k22 + 2b²t1²·r, every term ≥ 0 (no cancellation at
        # coincident points, where den = √(1 + 4A)), and atan2(2A12, den) = atan2(2b²k12/q1, w).
        e1 = 1 / (1 + 2 * b**2 * k11)
        t1_sq, inv_q1 = 2 * b**2 * k11 * e1, xp.sqrt(e1)
        r = xp.maximum(_residual(k12, k11, k22, xp), 0.0)
        w = xp.sqrt(1 + 2 * b**2 * e1 * k22 + 2 * b**2 * t1_sq * r)
        sigma = a**2 * (2 / np.pi) * xp.arctan2(2 * b**2 * inv_q1 * k12, w) + c**2
        return sigma, a**2 * b**2 * (4 / np.pi) * inv_q1 / w
    if isinstance(rule, SinDual):
        a, b, c = rule.a, rule.b, rule.c
        # Both exponents are ≤ 0 (|k12| ≤ √(k11·k22) ≤ S/2): rounding above 0 is clamped.
        # S/2 = k11/2 + k22/2, which does not overflow.
        half_s = k11 / 2 + k22 / 2
        ep = xp.exp(xp.minimum(b**2 * (k12 - half_s), 0.0))
        em = xp.exp(xp.minimum(-(b**2) * (k12 + half_s), 0.0))
        sigma = a**2 / 2 * (ep - np.cos(2 * c) * em)
        return sigma, a**2 * b**2 / 2 * (ep + np.cos(2 * c) * em)
    if isinstance(rule, GeluDual):
        # neural-tangents' exact x·Φ(x): with P = k11·k22, P1 = (1 + k11)(1 + k22),
        # D² = P1 − k12², A = atan2(k12, D):
        #   Σ' = [(k12² + P·D²)/(P1·D) + k12·A]/(2π) + k12/4,
        #   T' = k12/(2πD)·[1/D² + (1 − P)/P1 + 1] + 1/4 + A/(2π).
        # With e = 1/(1 + k), t1² = k11·e1, q1 = √(1 + k11), κ = k12/q1, as for erf:
        #   D² = 1 + k11 + k22 + k11·r = q1²w², w² = 1 + e1·k22 + t1²·r (≥ 1),
        #   k12²/(P1·D) = κ²e2/(q1·w), P·D/P1 = t1²·q1·w·k22·e2, (1 − P)/P1 + 1 = e1 + e2,
        #   k12/D = κ/w, 1/D² = e1/w², A = atan2(κ, w).
        e1, e2 = 1 / (1 + k11), 1 / (1 + k22)
        t1_sq, q1 = k11 * e1, xp.sqrt(1 + k11)
        r = xp.maximum(_residual(k12, k11, k22, xp), 0.0)
        w = xp.sqrt(1 + e1 * k22 + t1_sq * r)
        kappa = k12 / q1
        ang = xp.arctan2(kappa, w)
        sigma = (kappa**2 * e2 / (q1 * w) + t1_sq * q1 * w * (k22 * e2) + k12 * ang) / (2 * np.pi) + k12 / 4
        t_dot = kappa / (2 * np.pi * w) * (e1 / w**2 + e1 + e2) + 1 / 4 + ang / (2 * np.pi)
        return sigma, t_dot
    if isinstance(rule, QuadratureDual):
        return _gauss_hermite_dual(rule.fn, rule.df, rule.deg, k12, k11, k22, xp)
    if isinstance(rule, GivenDual):
        return rule.nngp_fn(k12, k11, k22), rule.d_nngp_fn(k12, k11, k22)
    raise ValueError(f"unknown dual rule {type(rule).__name__}")


def _gauss_hermite_dual(fn, df, deg, k12, k11, k22, xp=np):
    """Both expectations by deg×deg Gauss–Hermite quadrature.

    u = √k11·z₁, v = √k22·(ρ z₁ + √(1 − ρ²) z₂) with z₁, z₂ ~ N(0, 1) independent, and
    E[h(z)] = π^(−1/2) Σᵢ wᵢ h(√2 xᵢ) for the Hermite nodes xᵢ and weights wᵢ.
    """
    x, w = np.polynomial.hermite.hermgauss(deg)
    z, w = np.sqrt(2) * x, w / np.sqrt(np.pi)
    k12, k11, k22 = _broadcast_float(xp, k12, k11, k22)
    # ρ = k12/(√k11·√k22) (not k12/√(k11·k22), whose product overflows); k11 itself where
    # k11 = k22, so ρ = 1 exactly at coincident points; 0 at a zero-variance point.
    scale = xp.where(k11 == k22, k11, _sqrt(xp, k11) * _sqrt(xp, k22))
    rho = xp.clip(xp.where(scale > 0, k12 / _where_positive(xp, scale, scale), 0.0), -1, 1)
    u = _sqrt(xp, k11)[..., None, None] * z[:, None]
    v = _sqrt(xp, k22)[..., None, None] * (rho[..., None, None] * z[:, None]
                                          + _sqrt(xp, 1 - rho**2)[..., None, None] * z)
    ww = w[:, None] * w
    return (ww * fn(u) * fn(v)).sum((-2, -1)), (ww * df(u) * df(v)).sum((-2, -1))


def infinite_kernels(x1, x2, network, start=None):
    """NNGP Σ and NTK Θ of a network, by the layer recursion over its tree.

    Parameters
    ----------
    x1 : array of shape (N1, d): NumPy, or JAX (the recursion then runs in jax.numpy)
    x2 : array of shape (N2, d) or None (then x2 = x1)
    network : a spec node (see module docstring), e.g. ``kernel_fn.spec``
    start : None, or a dict continuing another network's kernels instead of the inputs':
        nngp (N1, N2), ntk (N1, N2), cov1 (N1,), cov2 (N2,) (x1 and x2 are then unused but for
        x2 None meaning symmetric) and width, the number of features of its last layer.

    Returns
    -------
    nngp, ntk : arrays of shape (N1, N2) in x1's namespace; float64 for NumPy
    """
    xp, special = namespace(x1 if start is None else start["nngp"])
    if start is None:
        x1 = _broadcast_float(xp, x1)[0]
        x2 = x1 if x2 is None else _broadcast_float(xp, x2)[0]
        d = x1.shape[1]
        # Input kernel Σ⁰ = x·x'/d; Θ⁰ = 0. cov1, cov2 are the per-point variances Σ(x, x).
        k = _Branch(x1 @ x2.T / d, xp.zeros((x1.shape[0], x2.shape[0]), dtype=x1.dtype), (x1 * x1).sum(1) / d,
                    (x2 * x2).sum(1) / d, xp.zeros(x1.shape[0], dtype=x1.dtype), xp.zeros(x2.shape[0], dtype=x1.dtype),
                    d)
    else:
        nngp, cov1, ntk = _broadcast_float(xp, start["nngp"])[0], _broadcast_float(xp, start["cov1"])[0], \
            _broadcast_float(xp, start["ntk"])[0]
        cov2 = cov1 if start.get("cov2") is None else _broadcast_float(xp, start["cov2"])[0]
        d = start["width"]
        # Θ(x, x) of the inputs: the diagonal when symmetric (only the diagonal pass reads it).
        k = _Branch(nngp, ntk, cov1, cov2, xp.zeros_like(cov1), xp.zeros_like(cov2), d)

    def x1_is_x2():  # neural-tangents' test, read only by Dropout in mode 'train' (needs values)
        return x2 is None or (x1.shape == x2.shape and bool(xp.all(xp.abs(x1 - x2) < 1e-12)))

    ctx = _Context(xp, special, rho_tolerance(d, k.nngp.dtype), x1_is_x2)
    (k,) = _kernels(network, [k], ctx)
    return k.nngp, k.ntk


class _Context(NamedTuple):
    """What every layer map reads: the namespace (xp, special), ρ tolerance, and the x1-is-x2 test."""

    xp: object
    special: object
    rho_tol: float
    x1_is_x2: object


class _Branch:
    """The kernels of one branch: Σ₁₂, Θ₁₂ (N1, N2), the per-point Σ(x, x) and Θ(x, x) of x1 and x2,
    and the width of the finite layer (the fan in of a following 'standard' Dense layer)."""

    def __init__(self, nngp, ntk, cov1, cov2, ntk1, ntk2, width):
        self.nngp, self.ntk, self.cov1, self.cov2, self.ntk1, self.ntk2, self.width = (
            nngp, ntk, cov1, cov2, ntk1, ntk2, width)

    def with_(self, **kw):
        new = _Branch(self.nngp, self.ntk, self.cov1, self.cov2, self.ntk1, self.ntk2, self.width)
        new.__dict__.update(kw)
        return new


def _kernels(node, ks, ctx):
    """The branches' kernels after ``node`` for the branches ``ks`` (a list of :class:`_Branch`)."""
    if isinstance(node, Serial):
        for child in node.layers:
            ks = _kernels(child, ks, ctx)
        return ks
    if isinstance(node, Parallel):
        return [_kernels(child, [k], ctx)[0] for child, k in zip(node.layers, ks)]
    if isinstance(node, Repeat):
        for _ in range(node.n):
            ks = _kernels(node.layer, ks, ctx)
        return ks
    if isinstance(node, FanOut):
        return ks * node.num
    if isinstance(node, FanInSum):  # independent branches: covariances add
        return [ks[0].with_(**{f: sum(getattr(k, f) for k in ks) for f in _FIELDS})]
    if isinstance(node, FanInProd):
        # E[∏ᵢ fᵢ ∏ᵢ f'ᵢ] = ∏ᵢ Σᵢ for independent branches; Θ by the product rule: Σᵢ Θᵢ ∏ⱼ≠ᵢ Σⱼ.
        nngp, cov1, cov2 = (_product([getattr(k, f) for k in ks]) for f in ("nngp", "cov1", "cov2"))
        prod_rule = {t: sum(getattr(ks[i], t) * _product([getattr(k, s) for j, k in enumerate(ks) if j != i])
                            for i in range(len(ks))) for t, s in (("ntk", "nngp"), ("ntk1", "cov1"), ("ntk2", "cov2"))}
        return [ks[0].with_(nngp=nngp, cov1=cov1, cov2=cov2, **prod_rule)]
    if isinstance(node, FanInConcat):
        # A neuron of the concatenation is one of branch i's nᵢ: the mean over neurons weighs by width.
        w = [k.width for k in ks]
        return [ks[0].with_(width=sum(w), **{f: sum(wi * getattr(k, f) for wi, k in zip(w, ks)) / sum(w)
                                             for f in _FIELDS})]
    if isinstance(node, Dropout) and node.mode == "train":
        # Inverted dropout (keep rate q): E[(m·f/q)(m·f/q)] = Σ/q at one point, Σ₁₂ between two.
        (k,) = ks
        q = node.rate
        xp = ctx.xp
        diag = xp.eye(*k.nngp.shape, dtype=bool) if ctx.x1_is_x2() else xp.zeros(k.nngp.shape, dtype=bool)
        return [k.with_(nngp=xp.where(diag, k.nngp / q, k.nngp), ntk=xp.where(diag, k.ntk / q, k.ntk),
                        cov1=k.cov1 / q, cov2=k.cov2 / q, ntk1=k.ntk1 / q, ntk2=k.ntk2 / q)]
    if isinstance(node, Dense):
        return [_dense(node, ks[0])]
    if isinstance(node, Act):
        return [_act(node.activation.dual, ks[0], ctx)]
    return ks  # Identity, Flatten (of (N, d)), Dropout in mode 'test'


_FIELDS = ("nngp", "ntk", "cov1", "cov2", "ntk1", "ntk2")


def _dense(layer, k):
    W_std, b_std = layer.W_std, layer.b_std
    b2 = 0.0 if b_std is None else b_std**2
    nngp, cov1, cov2 = (W_std**2 * s + b2 for s in (k.nngp, k.cov1, k.cov2))
    if layer.parameterization == "ntk":
        # Jacot et al. (2018): Σ ← W²Σ + b², Θ ← Σ_new + W²Θ.
        ntk, ntk1, ntk2 = (s + W_std**2 * t for s, t in ((nngp, k.ntk), (cov1, k.ntk1), (cov2, k.ntk2)))
    else:
        # Sohl-Dickstein et al. (2020), neural-tangents: Θ ← n_in·Σ + W²Θ + [bias].
        c = 0.0 if b_std is None else 1.0
        ntk, ntk1, ntk2 = (k.width * s + W_std**2 * t + c
                           for s, t in ((k.nngp, k.ntk), (k.cov1, k.ntk1), (k.cov2, k.ntk2)))
    return _Branch(nngp, ntk, cov1, cov2, ntk1, ntk2, layer.out_dim)


def _product(arrays):
    out = arrays[0]
    for a in arrays[1:]:
        out = out * a
    return out


def _act(rule, k, ctx):
    sigma, t_dot = dual(rule, k.nngp, k.cov1[:, None], k.cov2[None, :], ctx.rho_tol, ctx.xp, ctx.special)
    sigma1, t_dot1 = dual(rule, k.cov1, k.cov1, k.cov1, 0.0, ctx.xp, ctx.special)
    sigma2, t_dot2 = dual(rule, k.cov2, k.cov2, k.cov2, 0.0, ctx.xp, ctx.special)
    return _Branch(sigma, k.ntk * t_dot, sigma1, sigma2, k.ntk1 * t_dot1, k.ntk2 * t_dot2, k.width)
