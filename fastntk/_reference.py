"""Plain NumPy implementations that read like the maths: the oracle for every backend.

float64, a loop over layers, no tiling, no tricks. It reads the typed network spec
(:mod:`fastntk.spec`: Dense, Act, Identity, Serial) and the dual rules of
:mod:`fastntk.activations` — data only — and none of fastntk's numerics:

* ``Dense(out_dim, W_std, b_std, parameterization)``; ``b_std`` is None for no bias.
* ``ABReluDual(a, b)``: φ(x) = a·min(x, 0) + b·max(x, 0) (ReLU = (0, 1), Abs = (−1, 1)).
* ``ErfDual(a, b, c)``: φ(x) = a·erf(b·x) + c.
* ``SinDual(a, b, c)``: φ(x) = a·sin(b·x + c).
* ``GeluDual()``: φ(x) = x·Φ(x).
* neural-tangents' others: ``ExpDual(a, b)``, ``GaussianDual(a, b)``,
  ``ExpNormalizedDual(gamma, shift, do_clip)``, ``RbfDual(gamma)``, ``SignDual()``,
  ``GaborDual()``, ``MonomialDual(degree)``, ``RectifiedMonomialDual(degree)``,
  ``PolynomialDual(coef)``, ``HermiteDual(degree)`` (see their docstrings).
* ``QuadratureDual(fn, df, deg)``: any φ, by Gauss–Hermite quadrature of degree ``deg``.
* ``GivenDual(nngp_fn, d_nngp_fn)``: user-given dual kernels.

Conventions are neural-tangents' (0.6.5, ``stax/linear.py`` and ``stax/elementwise.py``).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special

from .activations import (
    ABReluDual,
    ErfDual,
    ExpDual,
    ExpNormalizedDual,
    GaborDual,
    GaussianDual,
    GeluDual,
    GivenDual,
    HermiteDual,
    MonomialDual,
    PolynomialDual,
    QuadratureDual,
    RbfDual,
    RectifiedMonomialDual,
    SignDual,
    SinDual,
)
from .spec import Act, Dense, leaves

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


def dual(rule, k12, k11, k22, rho_tol=0.0, xp=np, special=scipy.special):
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
    if isinstance(rule, (ExpDual, GaussianDual, ExpNormalizedDual, RbfDual, SignDual, GaborDual, MonomialDual,
                         RectifiedMonomialDual, PolynomialDual, HermiteDual)):
        return _nt_dual(rule, k12, k11, k22, rho_tol, xp, special)
    if isinstance(rule, QuadratureDual):
        return _gauss_hermite_dual(rule.fn, rule.df, rule.deg, k12, k11, k22)
    if isinstance(rule, GivenDual):
        return rule.nngp_fn(k12, k11, k22), rule.d_nngp_fn(k12, k11, k22)
    raise ValueError(f"unknown dual rule {type(rule).__name__}")

def _nt_dual(rule, k12, k11, k22, rho_tol, xp, special):
    """``dual`` for neural-tangents' other closed-form activations (stax/elementwise.py), in
    the array namespace xp. s = √k11·√k22 and ρ = k12/s stand in for the product k11·k22."""
    k12, k11, k22 = xp.broadcast_arrays(*(xp.asarray(k, dtype=xp.float64) for k in (k12, k11, k22)))
    # s = k11 where k11 = k22, so ρ = 1 exactly at coincident points; ρ = 0 where s = 0.
    s = xp.where(k11 == k22, k11, xp.sqrt(k11) * xp.sqrt(k22))
    rho = xp.where(s > 0, k12 / xp.where(s > 0, s, 1.0), 0.0)
    r = k22 * (1 - xp.clip(rho, -1, 1)) * (1 + xp.clip(rho, -1, 1))  # r = k22·(1 − ρ²) ≥ 0
    if isinstance(rule, ExpDual):
        a, b = rule.a, rule.b
        sigma = a**2 * xp.exp(b**2 * (k11 / 2 + k22 / 2 + k12))
        return sigma, b**2 * sigma
    if isinstance(rule, GaussianDual):
        # E[exp(bu² + bv²)] = det(I − 2bK)^(−1/2): with c = −2b, det² = (1 + c·k11)(1 + c·k22) − c²k12²
        # = q1²·w², q1² = 1 + c·k11, w² = 1 + (c·k22 + c²·k11·r)/q1² (no cancellation for b ≤ 0).
        # T' = ∂Σ'/∂k12 = 4a²b²·k12/det³. Infinite where I − 2bK is not positive definite (b > 0).
        a, b = rule.a, rule.b
        c = -2 * b
        # c·k11/q1² is bounded, so w² does not overflow where det does not.
        q1_sq = 1 + c * k11
        w_sq = 1 + c * k22 / q1_sq + c * (c * k11 / q1_sq) * r
        finite = (q1_sq > 0) & (w_sq > 0)
        det = xp.sqrt(xp.where(finite, q1_sq, 1.0)) * xp.sqrt(xp.where(finite, w_sq, 1.0))
        sigma = xp.where(finite, a**2 / det, xp.inf)
        return sigma, xp.where(finite, 4 * a**2 * b**2 * (k12 / det) / det / det, xp.inf)
    if isinstance(rule, ExpNormalizedDual):
        # Shankar et al. (2020): s·exp(γ(ρ + shift)); T' = γ·exp(γ(ρ + shift)).
        rho_ = xp.clip(rho, -1, 1) if rule.do_clip else rho
        e = xp.exp(rule.gamma * (rho_ + rule.shift))
        return s * e, rule.gamma * e
    if isinstance(rule, RbfDual):
        # exp(−γ(k11 + k22 − 2k12)); the exponent is ≤ 0 (rounding above 0 is clamped).
        e = xp.exp(xp.minimum(2 * rule.gamma * (k12 - (k11 / 2 + k22 / 2)), 0.0))
        return e, 2 * rule.gamma * e
    if isinstance(rule, SignDual):
        # E[sign(u)·sign(v)] = 1 − 2θ/π = E[|·|'(u)·|·|'(v)]: Abs's T'. sign' = 0 where defined.
        _, sigma = dual(ABReluDual(-1.0, 1.0), k12, k11, k22, rho_tol, xp, special)
        return sigma, xp.zeros_like(sigma)
    if isinstance(rule, GaborDual):
        # φ = exp(−x²)·sin(x) = Im exp(−x² + ix): with den = det(I + 2K) = 1 + 2(k11 + k22) + 4·k11·r,
        # X = (k11 + k22 + 4·k11·r)/den = 1 − (1 + k11 + k22)/den and y = k12/den,
        #   Σ' = exp(−X/2)·sinh(y)/√den,
        #   T' = ∂Σ'/∂k12 = exp(−X/2)/√den·[cosh(y)·(1 + 8A²)/den + 4A·sinh(y)·(1 + (1 + k11 + k22)/den)/√den],
        # A = k12/√den (|A| < 1/2). √den = q1·w, q1² = 1 + 2·k11, w² = 1 + 2·k22/q1² + 4·(k11/q1²)·r,
        # so den itself, which overflows before the kernels underflow, is never formed.
        q1_sq = 1 + 2 * k11
        root = xp.sqrt(q1_sq) * xp.sqrt(1 + 2 * k22 / q1_sq + 4 * (k11 / q1_sq) * r)
        inv_den = (1 / root) ** 2
        one_s = (1 + k11 + k22) * inv_den
        y, big_a = k12 / root / root, k12 / root
        ex = xp.exp(-(1 - one_s) / 2)
        sigma = ex * xp.sinh(y) / root
        t_dot = ex / root * (xp.cosh(y) * (1 + 8 * big_a**2) * inv_den + 4 * big_a * xp.sinh(y) * (1 + one_s) / root)
        return sigma, t_dot
    if isinstance(rule, MonomialDual):
        # Isserlis: E[uⁿvⁿ] = n!·sⁿ·H_n(ρ, 1); T' = n²·E[uⁿ⁻¹vⁿ⁻¹].
        n = rule.degree

        def moment(m):
            return math.factorial(m) * s**m * _isserlis_sum(m, rho, 1.0)

        return moment(n), (n**2 * moment(n - 1) if n else xp.zeros_like(s))
    if isinstance(rule, RectifiedMonomialDual):
        # Cho & Saul (2009): E[[u ≥ 0]uⁿ·[v ≥ 0]vⁿ] = sⁿ·J_n(θ)/(2π), cos θ = ρ,
        # J_n = P_n(ρ)·(π − θ) + Q_n(ρ)·sin θ (_arc_cosine_polynomials); T' = n²·sⁿ⁻¹·J_(n−1)/(2π).
        # sin θ = 0 where 1 − ρ² ≤ rho_tol, as the ReLU family.
        n = rule.degree
        rho_ = xp.clip(rho, -1, 1)
        sin2 = (1 - rho_) * (1 + rho_)
        sin_theta = xp.sqrt(xp.where(sin2 > rho_tol, sin2, 0.0))
        pi_minus_theta = xp.atan2(sin_theta, -rho_)

        def kernel(m):
            p, q = _arc_cosine_polynomials(m)
            j = sum(c * rho_**i for i, c in enumerate(p)) * pi_minus_theta
            j = j + sum(c * rho_**i for i, c in enumerate(q)) * sin_theta
            if m:
                return s**m * j / (2 * math.pi)
            # φ(0) = 1 for n = 0: E = 1 where both variances are 0, E[φ(v)] = 1/2 where one is.
            return xp.where(s > 0, j / (2 * math.pi), xp.where((k11 == 0) & (k22 == 0), 1.0, 0.5))

        return kernel(n), (n**2 * kernel(n - 1) if n else xp.zeros_like(s))
    if isinstance(rule, PolynomialDual):
        # Price's theorem (Taylor series in k12): E[φ(u)φ(v)] = Σ_l μ_l(k11)·μ_l(k22)·k12^l/l!,
        # μ_l(v) = E[φ⁽ˡ⁾(u)], u ~ N(0, v): Σ_i coef[l + 2i]·(l + 2i)!/(2^i·i!)·vⁱ.
        coef = rule.coef

        def mu(l, v):
            return sum(coef[l + 2 * i] * (math.factorial(l + 2 * i) / (2**i * math.factorial(i))) * v**i
                       for i in range((len(coef) - 1 - l) // 2 + 1))

        terms = [mu(l, k11) * mu(l, k22) for l in range(len(coef))]
        sigma = sum(t * k12**l / math.factorial(l) for l, t in enumerate(terms)) + xp.zeros_like(s)
        t_dot = sum(t * k12 ** (l - 1) / math.factorial(l - 1) for l, t in enumerate(terms) if l) + xp.zeros_like(s)
        return sigma, t_dot
    if isinstance(rule, HermiteDual):
        # h_n = Heₙ/√(n!), He_n(√v·z) = Σ_j n!/(j!(n−2j)!)·v^(n/2−j)·((v − 1)/2)^j·He_(n−2j)(z):
        # E[h_n(u)h_n(v)] = H_n(k12, (k11 − 1)(k22 − 1)); T' = n·H_(n−1) (h_n' = √n·h_(n−1)).
        # q overflows only where Σ' does (for n ≥ 2 its term has a coefficient ≥ 1/2).
        n = rule.degree
        q = (k11 - 1) * (k22 - 1)
        return _isserlis_sum(n, k12, q), (n * _isserlis_sum(n - 1, k12, q) if n else xp.zeros_like(s))
    raise ValueError(f"unknown dual rule {type(rule).__name__}")  # pragma: no cover - the caller checked


def _isserlis_sum(n, x, q):
    """H_n(x, q) = Σ_(j ≤ n/2) n!/((n − 2j)!·j!²·4ʲ)·x^(n−2j)·qʲ.

    E[uⁿvⁿ] = n!·H_n(k12, k11·k22) (Isserlis) and E[h_n(u)h_n(v)] = H_n(k12, (k11 − 1)(k22 − 1))
    for h_n = Heₙ/√(n!).
    """
    f = math.factorial
    return sum(f(n) / (f(n - 2 * j) * f(j) ** 2 * 4**j) * x ** (n - 2 * j) * q**j for j in range(n // 2 + 1))


def _arc_cosine_polynomials(n):
    """Integer coefficients (ascending) of P_n, Q_n with J_n(θ) = P_n(cos θ)(π − θ) + Q_n(cos θ) sin θ.

    J_n = (−1)ⁿ sin^(2n+1)θ·(1/sin θ·d/dθ)ⁿ((π − θ)/sin θ) (Cho & Saul 2009); 1/sin θ·d/dθ = −d/dρ:
    P_0 = 1, Q_0 = 0, P_(n+1) = (1 − ρ²)P_n' + (2n + 1)ρP_n, Q_(n+1) = P_n + (1 − ρ²)Q_n' + 2nρQ_n.
    """
    p, q = [1], [0]
    for m in range(n):
        new_p, new_q = [0] * (m + 2), [0] * (m + 2)
        for i, (pi, qi) in enumerate(zip(p, q + [0] * (len(p) - len(q)))):
            if i:
                new_p[i - 1] += i * pi
                new_q[i - 1] += i * qi
            new_p[i + 1] += (2 * m + 1 - i) * pi
            new_q[i + 1] += (2 * m - i) * qi
            new_q[i] += pi
        p, q = new_p, new_q
    return p, q


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


def infinite_kernels(x1, x2, network):
    """NNGP Σ and NTK Θ of a fully-connected network, by the layer recursion.

    Parameters
    ----------
    x1 : ndarray of shape (N1, d)
    x2 : ndarray of shape (N2, d) or None (then x2 = x1)
    network : a spec node (see module docstring), e.g. ``kernel_fn.spec``

    Returns
    -------
    nngp, ntk : ndarrays of shape (N1, N2), float64
    """
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = x1 if x2 is None else np.asarray(x2, dtype=np.float64)
    d = x1.shape[1]
    rho_tol = rho_tolerance(d, np.float64)
    # Input kernel Σ⁰ = x·x'/d; Θ⁰ = 0. cov1, cov2 are the per-point variances Σ(x, x).
    nngp = x1 @ x2.T / d
    cov1, cov2 = (x1 * x1).sum(1) / d, (x2 * x2).sum(1) / d
    ntk = np.zeros_like(nngp)
    ntk1, ntk2 = np.zeros_like(cov1), np.zeros_like(cov2)
    fan_in = d
    for layer in leaves(network):
        if isinstance(layer, Dense):
            W_std, b_std, parameterization = layer.W_std, layer.b_std, layer.parameterization
            b2 = 0.0 if b_std is None else b_std**2
            if parameterization == "ntk":
                # Jacot et al. (2018): Σ ← W²Σ + b², Θ ← Σ_new + W²Θ.
                nngp, cov1, cov2 = (W_std**2 * k + b2 for k in (nngp, cov1, cov2))
                ntk, ntk1, ntk2 = (k + W_std**2 * t for k, t in ((nngp, ntk), (cov1, ntk1), (cov2, ntk2)))
            else:
                # Sohl-Dickstein et al. (2020), neural-tangents: Θ ← n_in·Σ + W²Θ + [bias].
                c = 0.0 if b_std is None else 1.0
                ntk, ntk1, ntk2 = (fan_in * k + W_std**2 * t + c for k, t in ((nngp, ntk), (cov1, ntk1), (cov2, ntk2)))
                nngp, cov1, cov2 = (W_std**2 * k + b2 for k in (nngp, cov1, cov2))
            fan_in = layer.out_dim
        elif isinstance(layer, Act):  # Identity leaves change nothing
            rule = layer.activation.dual
            sigma, t_dot = dual(rule, nngp, cov1[:, None], cov2[None, :], rho_tol)
            sigma1, t_dot1 = dual(rule, cov1, cov1, cov1)
            sigma2, t_dot2 = dual(rule, cov2, cov2, cov2)
            nngp, ntk = sigma, ntk * t_dot
            cov1, ntk1 = sigma1, ntk1 * t_dot1
            cov2, ntk2 = sigma2, ntk2 * t_dot2
    return nngp, ntk
