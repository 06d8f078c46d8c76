"""Plain NumPy implementations that read like the maths: the oracle for every backend.

float64, a loop over layers, no tiling, no tricks. It reads the typed network spec
(:mod:`fastntk.spec`: Dense, Act, Identity, Serial) and the dual rules of
:mod:`fastntk.activations` — data only — and none of fastntk's numerics:

* ``Dense(out_dim, W_std, b_std, parameterization, s)``; ``b_std`` is None for no bias; ``s`` the width scalings.
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

The recursion computes in the array namespace of its inputs (:func:`fastntk.activations.namespace`):
NumPy arrays give float64 NumPy results, JAX arrays (tracers included) jax.numpy results in
their own float dtype, which ``jax.jvp``/``jax.grad`` differentiate; ``fastntk._jax_dispatch``
uses it for the derivatives of ``kernel_fn``. Square roots and divisions that meet 0 use the
double-``where`` idiom, so derivatives are finite wherever the kernel is smooth; where it is not
(ReLU family at ρ = ±1, θ held at 0 or π) the derivative is that along the directions keeping
ρ = ±1, the mean of the one-sided derivatives.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.special

from ..activations import (
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
    namespace,
)
from ..spec import Act, Dense, Dropout, FanInConcat, FanInProd, FanInSum, FanOut, Parallel, Repeat, Serial

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
    if isinstance(rule, (ExpDual, GaussianDual, ExpNormalizedDual, RbfDual, SignDual, GaborDual, MonomialDual,
                         RectifiedMonomialDual, PolynomialDual, HermiteDual)):
        return _nt_dual(rule, k12, k11, k22, rho_tol, xp, special)
    if isinstance(rule, QuadratureDual):
        return _gauss_hermite_dual(rule.fn, rule.df, rule.deg, k12, k11, k22, xp)
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
        # Sohl-Dickstein et al. (2020), neural-tangents: Θ ← n_in·Σ + W²Θ + [bias], n_in = width/s_in.
        c = 0.0 if b_std is None else 1.0
        ntk, ntk1, ntk2 = (layer.n_in(k.width) * s + W_std**2 * t + c
                           for s, t in ((k.nngp, k.ntk), (k.cov1, k.ntk1), (k.cov2, k.ntk2)))
    return _Branch(nngp, ntk, cov1, cov2, ntk1, ntk2, layer.width)


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
