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
"""

from __future__ import annotations

import numpy as np

from .activations import ABReluDual, ErfDual, GeluDual, GivenDual, QuadratureDual, SinDual
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


def _residual(k12, k11, k22):
    """r = k22·(1 − ρ²) = k22 − k12²/k11, ρ = k12/√(k11·k22); 0 where k11 = 0.

    Never the product k11·k22, which overflows (or underflows) long before the kernels
    do; r ≤ k22. r = 0 exactly at coincident points (k12 = k11 = k22), whose ρ is 1.
    """
    k12, k11, k22 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (k12, k11, k22)))
    inv11 = np.divide(1.0, k11, out=np.zeros_like(k11), where=k11 > 0)
    return np.where((k12 == k11) & (k12 == k22), 0.0, k22 - k12 * (k12 * inv11))


def dual(rule, k12, k11, k22, rho_tol=0.0):
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]]).

    ``rule`` is an activation's dual rule. Arrays broadcast against each other. Returns
    ``(sigma, t_dot)``. No closed form takes
    the product k11·k22 of the two variances, which overflows (or underflows) long before
    the kernels do, so they hold over the whole float range.
    """
    if isinstance(rule, ABReluDual):
        a, b = rule.a, rule.b
        # Cho & Saul (2009): s = √(k11·k22 − k12²), θ = atan2(s, k12), the angle between the
        # two pre-activations. Both are homogeneous: computed on k11·4^−h1, k22·4^−h2 (in
        # [1/2, 2)) and k12·2^−(h1+h2), then s is scaled back. Powers of two are exact, so
        # the product form rounds as without them and cannot overflow or underflow.
        h1, h2 = np.frexp(k11)[1] // 2, np.frexp(k22)[1] // 2
        k11_, k22_, k12_ = np.ldexp(k11, -2 * h1), np.ldexp(k22, -2 * h2), np.ldexp(k12, -(h1 + h2))
        s2 = k11_ * k22_ - k12_**2
        # 1 − ρ² ≤ rho_tol: ρ = ±1; and ρ = 1 exactly at coincident points (k12 = k11 = k22).
        s2 = np.where((s2 > rho_tol * k11_ * k22_) & ~((k12 == k11) & (k12 == k22)), s2, 0.0)
        s = np.ldexp(np.sqrt(s2), h1 + h2)
        theta = np.where((s2 == 0) & (k12_ == 0), np.pi / 2, np.arctan2(np.sqrt(s2), k12_))  # π/2: zero variance
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
        t1_sq, inv_q1 = 2 * b**2 * k11 * e1, np.sqrt(e1)
        r = np.maximum(_residual(k12, k11, k22), 0.0)
        w = np.sqrt(1 + 2 * b**2 * e1 * k22 + 2 * b**2 * t1_sq * r)
        sigma = a**2 * (2 / np.pi) * np.arctan2(2 * b**2 * inv_q1 * k12, w) + c**2
        return sigma, a**2 * b**2 * (4 / np.pi) * inv_q1 / w
    if isinstance(rule, SinDual):
        a, b, c = rule.a, rule.b, rule.c
        # Both exponents are ≤ 0 (|k12| ≤ √(k11·k22) ≤ S/2): rounding above 0 is clamped.
        # S/2 = k11/2 + k22/2, which does not overflow.
        half_s = k11 / 2 + k22 / 2
        ep = np.exp(np.minimum(b**2 * (k12 - half_s), 0.0))
        em = np.exp(np.minimum(-(b**2) * (k12 + half_s), 0.0))
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
        t1_sq, q1 = k11 * e1, np.sqrt(1 + k11)
        r = np.maximum(_residual(k12, k11, k22), 0.0)
        w = np.sqrt(1 + e1 * k22 + t1_sq * r)
        kappa = k12 / q1
        ang = np.arctan2(kappa, w)
        sigma = (kappa**2 * e2 / (q1 * w) + t1_sq * q1 * w * (k22 * e2) + k12 * ang) / (2 * np.pi) + k12 / 4
        t_dot = kappa / (2 * np.pi * w) * (e1 / w**2 + e1 + e2) + 1 / 4 + ang / (2 * np.pi)
        return sigma, t_dot
    if isinstance(rule, QuadratureDual):
        return _gauss_hermite_dual(rule.fn, rule.df, rule.deg, k12, k11, k22)
    if isinstance(rule, GivenDual):
        return rule.nngp_fn(k12, k11, k22), rule.d_nngp_fn(k12, k11, k22)
    raise ValueError(f"unknown dual rule {type(rule).__name__}")


def _gauss_hermite_dual(fn, df, deg, k12, k11, k22):
    """Both expectations by deg×deg Gauss–Hermite quadrature.

    u = √k11·z₁, v = √k22·(ρ z₁ + √(1 − ρ²) z₂) with z₁, z₂ ~ N(0, 1) independent, and
    E[h(z)] = π^(−1/2) Σᵢ wᵢ h(√2 xᵢ) for the Hermite nodes xᵢ and weights wᵢ.
    """
    x, w = np.polynomial.hermite.hermgauss(deg)
    z, w = np.sqrt(2) * x, w / np.sqrt(np.pi)
    k12, k11, k22 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (k12, k11, k22)))
    # ρ = k12/(√k11·√k22) (not k12/√(k11·k22), whose product overflows); k11 itself where
    # k11 = k22, so ρ = 1 exactly at coincident points; 0 at a zero-variance point.
    scale = np.where(k11 == k22, k11, np.sqrt(k11) * np.sqrt(k22))
    rho = np.clip(np.divide(k12, scale, out=np.zeros_like(k12), where=scale > 0), -1, 1)
    u = np.sqrt(k11)[..., None, None] * z[:, None]
    v = np.sqrt(k22)[..., None, None] * (rho[..., None, None] * z[:, None] + np.sqrt(1 - rho**2)[..., None, None] * z)
    ww = w[:, None] * w
    return (ww * fn(u) * fn(v)).sum((-2, -1)), (ww * df(u) * df(v)).sum((-2, -1))


def infinite_kernels(x1, x2, network, start=None):
    """NNGP Σ and NTK Θ of a network, by the layer recursion over its tree.

    Parameters
    ----------
    x1 : ndarray of shape (N1, d)
    x2 : ndarray of shape (N2, d) or None (then x2 = x1)
    network : a spec node (see module docstring), e.g. ``kernel_fn.spec``
    start : None, or a dict continuing another network's kernels instead of the inputs':
        nngp (N1, N2), ntk (N1, N2), cov1 (N1,), cov2 (N2,) (x1 and x2 are then unused but for
        x2 None meaning symmetric) and width, the number of features of its last layer.

    Returns
    -------
    nngp, ntk : ndarrays of shape (N1, N2), float64
    """
    if start is None:
        x1 = np.asarray(x1, dtype=np.float64)
        x2 = x1 if x2 is None else np.asarray(x2, dtype=np.float64)
        d = x1.shape[1]
        # Input kernel Σ⁰ = x·x'/d; Θ⁰ = 0. cov1, cov2 are the per-point variances Σ(x, x).
        k = _Branch(x1 @ x2.T / d, np.zeros((x1.shape[0], x2.shape[0])), (x1 * x1).sum(1) / d,
                    (x2 * x2).sum(1) / d, np.zeros(x1.shape[0]), np.zeros(x2.shape[0]), d)
    else:
        nngp = np.asarray(start["nngp"], dtype=np.float64)
        cov1 = np.asarray(start["cov1"], dtype=np.float64)
        cov2 = cov1 if start.get("cov2") is None else np.asarray(start["cov2"], dtype=np.float64)
        ntk = np.asarray(start["ntk"], dtype=np.float64)
        d = start["width"]
        # Θ(x, x) of the inputs: the diagonal when symmetric (only the diagonal pass reads it).
        k = _Branch(nngp, ntk, cov1, cov2, np.zeros_like(cov1), np.zeros_like(cov2), d)
    x1_is_x2 = x2 is None or (np.shape(x1) == np.shape(x2) and np.all(np.abs(np.asarray(x1) - x2) < 1e-12))
    (k,) = _kernels(network, [k], rho_tolerance(d, np.float64), x1_is_x2)
    return k.nngp, k.ntk


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


def _kernels(node, ks, rho_tol, x1_is_x2):
    """The branches' kernels after ``node`` for the branches ``ks`` (a list of :class:`_Branch`)."""
    if isinstance(node, Serial):
        for child in node.layers:
            ks = _kernels(child, ks, rho_tol, x1_is_x2)
        return ks
    if isinstance(node, Parallel):
        return [_kernels(child, [k], rho_tol, x1_is_x2)[0] for child, k in zip(node.layers, ks)]
    if isinstance(node, Repeat):
        for _ in range(node.n):
            ks = _kernels(node.layer, ks, rho_tol, x1_is_x2)
        return ks
    if isinstance(node, FanOut):
        return ks * node.num
    if isinstance(node, FanInSum):  # independent branches: covariances add
        return [ks[0].with_(**{f: sum(getattr(k, f) for k in ks) for f in _FIELDS})]
    if isinstance(node, FanInProd):
        # E[∏ᵢ fᵢ ∏ᵢ f'ᵢ] = ∏ᵢ Σᵢ for independent branches; Θ by the product rule: Σᵢ Θᵢ ∏ⱼ≠ᵢ Σⱼ.
        nngp, cov1, cov2 = (np.prod([getattr(k, f) for k in ks], axis=0) for f in ("nngp", "cov1", "cov2"))
        prod_rule = {t: sum(getattr(ks[i], t) * np.prod([getattr(k, s) for j, k in enumerate(ks) if j != i], axis=0)
                            for i in range(len(ks))) for t, s in (("ntk", "nngp"), ("ntk1", "cov1"), ("ntk2", "cov2"))}
        return [ks[0].with_(nngp=nngp, cov1=cov1, cov2=cov2, **prod_rule)]
    if isinstance(node, FanInConcat):
        # A neuron of the concatenation is one of branch i's nᵢ: the mean over neurons weighs by width.
        w = np.array([k.width for k in ks], dtype=np.float64)
        return [ks[0].with_(width=int(w.sum()), **{f: sum(wi * getattr(k, f) for wi, k in zip(w, ks)) / w.sum()
                                                   for f in _FIELDS})]
    if isinstance(node, Dropout) and node.mode == "train":
        # Inverted dropout (keep rate q): E[(m·f/q)(m·f/q)] = Σ/q at one point, Σ₁₂ between two.
        (k,) = ks
        q = node.rate
        diag = np.eye(*k.nngp.shape, dtype=bool) if x1_is_x2 else np.zeros(k.nngp.shape, dtype=bool)
        return [k.with_(nngp=np.where(diag, k.nngp / q, k.nngp), ntk=np.where(diag, k.ntk / q, k.ntk),
                        cov1=k.cov1 / q, cov2=k.cov2 / q, ntk1=k.ntk1 / q, ntk2=k.ntk2 / q)]
    if isinstance(node, Dense):
        return [_dense(node, ks[0])]
    if isinstance(node, Act):
        return [_act(node.activation.dual, ks[0], rho_tol)]
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


def _act(rule, k, rho_tol):
    sigma, t_dot = dual(rule, k.nngp, k.cov1[:, None], k.cov2[None, :], rho_tol)
    sigma1, t_dot1 = dual(rule, k.cov1, k.cov1, k.cov1)
    sigma2, t_dot2 = dual(rule, k.cov2, k.cov2, k.cov2)
    return _Branch(sigma, k.ntk * t_dot, sigma1, sigma2, k.ntk1 * t_dot1, k.ntk2 * t_dot2, k.width)
