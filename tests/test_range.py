"""Range of the dual kernels: exact over the whole float range (DESIGN §2).

The recursion is written in correlations and per-point scales, never the product of two
variances, so inputs of norm 1e±150 give the kernels that inputs of norm 1 give, scaled.
Three independent checks: positive homogeneity (a bias-free ReLU-family network has
Σ(c·x, c·x') = c²·Σ(x, x') and the same for Θ), a 700-digit mpmath evaluation of the
product-form recursion, and the NumPy reference on the same scaled inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import RTOL, assert_close

from fastntk import _reference, stax
from fastntk.activations import ABReluDual, ErfDual, GeluDual, SinDual
from fastntk.spec import Dense, leaves

#: Homogeneity: kernel(c·x) = c²·kernel(x) to this normwise error (c·x carries one rounding).
HOMOGENEITY_RTOL = {np.dtype(np.float64): 1e-13, np.dtype(np.float32): 1e-5}

RELU_FAMILY = {"relu": stax.Relu, "leaky_relu": lambda: stax.LeakyRelu(0.1), "abs": stax.Abs,
               "abrelu": lambda: stax.ABRelu(-0.4, 1.3)}

#: (norm of the base inputs, factor c) with kernels of both representable in float64.
SCALES_64 = [(1.0, 1e100), (1.0, 1e-100), (1.0, 1e150), (1.0, 1e-150), (1e-150, 1e300), (1e150, 1e-300)]


def _inputs(rng, n=6, d=4, scale=1.0, dtype=np.float64, zero_row=True):
    x = rng.standard_normal((n, d)) + 0.5
    if zero_row:
        x[2] = 0.0
    return (x * scale).astype(dtype)


def _relu_net(act, depth, parameterization):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(8, 1.5, None, parameterization=parameterization), RELU_FAMILY[act]()]
    return stax.serial(*layers, stax.Dense(1, 1.5, None, parameterization=parameterization))


@pytest.mark.parametrize(("base", "c"), SCALES_64, ids=lambda v: f"{v:g}")
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("depth", [1, 2, 3, 5])
@pytest.mark.parametrize("act", sorted(RELU_FAMILY))
def test_relu_family_homogeneous(rng, act, depth, parameterization, base, c):
    """Bias-free ReLU-family networks: kernel(c·x, c·x') = c²·kernel(x, x'), x2 given and None."""
    kernel_fn = _relu_net(act, depth, parameterization).kernel_fn
    x1, x2 = _inputs(rng, scale=base), _inputs(rng, n=5, scale=base, zero_row=False)
    for y2 in (x2, None):
        k = kernel_fn(x1, y2)
        kc = kernel_fn(x1 * c, None if y2 is None else y2 * c)
        for name in ("nngp", "ntk"):
            expected = getattr(k, name) * c * c  # c² itself may overflow
            assert np.isfinite(getattr(kc, name)).all(), name
            assert_close(getattr(kc, name), expected, HOMOGENEITY_RTOL[np.dtype(np.float64)], name)
        assert not kc.nngp[2].any(), "a zero-norm row has a zero kernel"


@pytest.mark.parametrize("c", [1e15, 1e-15])
@pytest.mark.parametrize("act", sorted(RELU_FAMILY))
def test_relu_family_homogeneous_float32(rng, act, c):
    """The float32 analogue: Σ, Θ of ~1e±30 in float32 (the float64 kernel of the unscaled x, times c²)."""
    kernel_fn = _relu_net(act, 3, "ntk").kernel_fn
    x = _inputs(rng)
    k = kernel_fn(x)
    kc = kernel_fn((x * c).astype(np.float32))
    assert kc.nngp.dtype == np.float32
    for name in ("nngp", "ntk"):
        assert_close(getattr(kc, name), getattr(k, name) * c**2, HOMOGENEITY_RTOL[np.dtype(np.float32)], name)


def test_relu_range_was_lost_before():
    """The case of issue 7 §3: a bias-free ReLU net on inputs ×1e100 (product form: 30% off)."""
    kernel_fn = stax.serial(stax.Dense(1, W_std=1.5), stax.Relu(), stax.Dense(1, W_std=1.5)).kernel_fn
    x = np.array([[1.0, 2.0, -0.5], [0.3, -1.0, 2.0]])
    k, kc = kernel_fn(x), kernel_fn(x * 1e100)
    assert_close(kc.nngp, k.nngp * 1e200, HOMOGENEITY_RTOL[np.dtype(np.float64)], "nngp")
    assert_close(kc.ntk, k.ntk * 1e200, HOMOGENEITY_RTOL[np.dtype(np.float64)], "ntk")


# --- against a 700-digit evaluation of the product-form recursion ---------------------


def _mp_kernels(x1, x2, network, dps=700):
    """Σ and Θ of an 'ntk'-parameterised network spec (Dense and ReLU-family, erf, GELU, sin
    activations) by the textbook product-form recursion, in mpmath with ``dps`` digits: 60 and
    the ~2·300 that (1 + 2A)² − 4A² loses at coincident points for variances A ~ 1e300."""
    import mpmath as mp

    def pair(u, v):
        d = len(u)
        k = mp.fsum(mp.mpf(float(a)) * mp.mpf(float(b)) for a, b in zip(u, v)) / d
        k11 = mp.fsum(mp.mpf(float(a)) ** 2 for a in u) / d
        k22 = mp.fsum(mp.mpf(float(b)) ** 2 for b in v) / d
        t = t11 = t22 = mp.mpf(0)
        for layer in leaves(network):
            if isinstance(layer, Dense):
                assert layer.parameterization == "ntk"
                W2, b2 = mp.mpf(layer.W_std) ** 2, (0 if layer.b_std is None else mp.mpf(layer.b_std) ** 2)
                k, k11, k22 = (W2 * q + b2 for q in (k, k11, k22))
                t, t11, t22 = k + W2 * t, k11 + W2 * t11, k22 + W2 * t22
                continue
            rule = layer.activation.dual
            (k, t), (k11, t11), (k22, t22) = (
                _mp_dual(rule, q, q1, q2, tq) for q, q1, q2, tq in ((k, k11, k22, t), (k11, k11, k11, t11), (k22, k22, k22, t22))
            )
        return float(k), float(t)

    with mp.workdps(dps):
        x2 = x1 if x2 is None else x2
        res = np.array([[pair(u, v) for v in x2] for u in x1])
    return res[..., 0], res[..., 1]


def _mp_dual(rule, k, k11, k22, t):
    """One activation in mpmath: (E[φ(u)φ(v)], Θ·E[φ'(u)φ'(v)]), product forms."""
    import mpmath as mp

    if isinstance(rule, ABReluDual):
        a, b = mp.mpf(rule.a), mp.mpf(rule.b)
        s = mp.sqrt(max(k11 * k22 - k**2, 0))
        theta = mp.pi / 2 if s == 0 and k == 0 else mp.atan2(s, k)
        t_dot = (a**2 + b**2) / 2 - (a - b) ** 2 * theta / (2 * mp.pi)
        return (a - b) ** 2 / (2 * mp.pi) * s + t_dot * k, t * t_dot
    if isinstance(rule, ErfDual):
        a, b, c = mp.mpf(rule.a), mp.mpf(rule.b), mp.mpf(rule.c)
        A11, A22, A12 = b**2 * k11, b**2 * k22, b**2 * k
        den = mp.sqrt((1 + 2 * A11) * (1 + 2 * A22) - 4 * A12**2)
        return a**2 * 2 / mp.pi * mp.atan2(2 * A12, den) + c**2, t * a**2 * b**2 * 4 / mp.pi / den
    if isinstance(rule, GeluDual):
        P, P1 = k11 * k22, (1 + k11) * (1 + k22)
        D2 = P1 - k**2
        D, A = mp.sqrt(D2), mp.atan2(k, mp.sqrt(D2))
        sigma = ((k**2 + P * D2) / (P1 * D) + k * A) / (2 * mp.pi) + k / 4
        t_dot = k / (2 * mp.pi * D) * (1 / D2 + (1 - P) / P1 + 1) + mp.mpf(1) / 4 + A / (2 * mp.pi)
        return sigma, t * t_dot
    if isinstance(rule, SinDual):
        a, b, c = mp.mpf(rule.a), mp.mpf(rule.b), mp.mpf(rule.c)
        ep, em = mp.exp(b**2 * (k - (k11 + k22) / 2)), mp.exp(-(b**2) * (k + (k11 + k22) / 2))
        return a**2 / 2 * (ep - mp.cos(2 * c) * em), t * a**2 * b**2 / 2 * (ep + mp.cos(2 * c) * em)
    raise ValueError(rule)


MP_NETS = {
    "relu": stax.serial(stax.Dense(1, 1.5), stax.Relu(), stax.Dense(1, 1.5)),
    "abs": stax.serial(stax.Dense(1, 1.5, 0.1), stax.Abs(), stax.Dense(1, 1.2), stax.LeakyRelu(0.1), stax.Dense(1, 1.5)),
    "erf": stax.serial(stax.Dense(1, 1.5, 0.3), stax.Erf(1.2, 0.8, 0.1), stax.Dense(1, 1.0, 0.05),
                       stax.Erf(), stax.Dense(1, 1.5)),
    "gelu": stax.serial(stax.Dense(1, 1.5), stax.Gelu(), stax.Dense(1, 1.2, 0.1), stax.Gelu(), stax.Dense(1, 1.5)),
    "sin": stax.serial(stax.Dense(1, 1.5, 0.3), stax.Sin(1.1, 0.9, 0.3), stax.Dense(1, 1.0)),
}


@pytest.mark.parametrize("scale", [1e150, 1e100, 1e-100, 1e-150], ids=lambda v: f"{v:g}")
@pytest.mark.parametrize("act", sorted(MP_NETS))
def test_against_mpmath_at_extreme_scales(rng, act, scale):
    """Finite and to 1e-13 of the 700-digit product-form recursion on inputs of norm ~scale
    (erf and GELU on large inputs gave NaN before; the ReLU NTK was off by 30%)."""
    kernel_fn = MP_NETS[act].kernel_fn
    x1, x2 = _inputs(rng, n=4, scale=scale), _inputs(rng, n=3, scale=scale, zero_row=False)
    nngp, ntk = _mp_kernels(x1, x2, kernel_fn.spec)
    k = kernel_fn(x1, x2)
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
    assert_close(k.nngp, nngp, 1e-13, "nngp")
    assert_close(k.ntk, ntk, 1e-13, "ntk")


def test_erf_limit_at_large_variance():
    """As the variances grow, E[erf(u)erf(v)] → (2/π)·arcsin(ρ) and Θ₁₂·E[erf'erf'] stays
    finite: at inputs ×1e150 a Dense + Erf network has Σ = (2/π)·arcsin(ρ) to rounding."""
    x = np.array([[1.0, 2.0, -0.5], [0.3, -1.0, 2.0], [-2.0, 0.5, 0.5]])
    k = stax.serial(stax.Dense(1), stax.Erf()).kernel_fn(x * 1e150, get="nngp")
    norms = np.linalg.norm(x, axis=1)
    rho = np.clip(x @ x.T / np.outer(norms, norms), -1, 1)
    assert_close(k, 2 / np.pi * np.arcsin(rho), 1e-14, "nngp")


def test_gelu_tends_to_relu_at_large_variance():
    """x·Φ(x) − max(x, 0) is bounded (|x|·Φ(−|x|) ≤ 0.17), so on inputs ×1e150 a Dense + GELU
    layer has the kernel of Dense + ReLU to relative O(1e-150): rounding."""
    x = np.array([[1.0, 2.0, -0.5], [0.3, -1.0, 2.0], [-2.0, 0.5, 0.5]]) * 1e150
    gelu = stax.serial(stax.Dense(1, 1.5), stax.Gelu(), stax.Dense(1, 1.5)).kernel_fn(x)
    relu = stax.serial(stax.Dense(1, 1.5), stax.Relu(), stax.Dense(1, 1.5)).kernel_fn(x)
    assert_close(gelu.nngp, relu.nngp, 1e-14, "nngp")
    assert_close(gelu.ntk, relu.ntk, 1e-14, "ntk")


def test_sin_at_large_inputs():
    """Sin on inputs ×1e150: Σ(x, x) = a²/2·(1 − cos(2c)·e^(−2b²Σ)) = a²/2, distinct points give
    e^(−b²|x − x'|²/(2d)) = 0, and the exponents, ≤ 0 in exact arithmetic, never round above
    0 into overflow (x2 = a copy of x1: the Gram and the row norms round differently)."""
    x = np.array([[1.0, 2.0, -0.5], [0.3, -1.0, 2.0], [-2.0, 0.5, 0.5]]) * 1e150
    kernel_fn = stax.serial(stax.Dense(1), stax.Sin(1.1, 0.9, 0.3)).kernel_fn
    for x2 in (None, x.copy()):
        k = kernel_fn(x, x2)
        assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
        off = ~np.eye(3, dtype=bool)
        assert not k.nngp[off].any()
        if x2 is None:
            assert_close(np.diag(k.nngp), np.full(3, 1.1**2 / 2), 1e-15, "nngp diagonal")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", ["erf", "gelu", "sin"])
def test_smooth_activations_finite_at_largest_inputs(rng, act, dtype):
    """Inputs as large as validation allows (|x| ≤ √(max/d)/4): finite kernels, as the
    float64 computation of the same float inputs."""
    kernel_fn = MP_NETS[act].kernel_fn
    x = _inputs(rng, scale=1.0)
    x *= 0.9 * np.sqrt(np.finfo(dtype).max / x.shape[1]) / 4 / np.abs(x).max()
    k = kernel_fn(x.astype(dtype))
    k64 = kernel_fn(x.astype(dtype).astype(np.float64))
    for name in ("nngp", "ntk"):
        assert np.isfinite(getattr(k, name)).all(), name
        assert_close(getattr(k, name), getattr(k64, name), RTOL["float32_vs_float64"] if dtype == np.float32 else 0, name)


# --- the NumPy reference on the same scaled inputs -----------------------------------


REFERENCE_NETS = {
    "relu": stax.fc_network(3, "relu", 1.5, None),
    "abs": stax.fc_network(2, "abs", 1.5, None, "standard"),
    "erf": stax.fc_network(2, "erf", 1.5, 0.1),
    "gelu": stax.fc_network(2, "gelu", 1.5, 0.1),
    "sin": stax.fc_network(2, "sin", 1.5, 0.1),
    "tanh": stax.serial(stax.Dense(1, 1.5), stax.Tanh(), stax.Dense(1, 1.5)),
}


@pytest.mark.parametrize("scale", [1e150, 1e-150], ids=lambda v: f"{v:g}")
@pytest.mark.parametrize("act", sorted(REFERENCE_NETS))
def test_backends_match_reference_at_extreme_scales(rng, act, scale):
    """The C++ and Numba passes against fastntk._reference on the same inputs of norm ~scale
    (x2 given: no coincident pairs, so the float64 tolerance of the fixtures applies)."""
    kernel_fn = REFERENCE_NETS[act].kernel_fn
    x1, x2 = _inputs(rng, scale=scale), _inputs(rng, n=5, scale=scale, zero_row=False)
    nngp, ntk = _reference.infinite_kernels(x1, x2, kernel_fn.spec)
    k = kernel_fn(x1, x2)
    assert np.isfinite(nngp).all() and np.isfinite(ntk).all()
    assert_close(k.nngp, nngp, RTOL["float64"], "nngp")
    assert_close(k.ntk, ntk, RTOL["float64"], "ntk")


def test_quadrature_correlation_at_large_variance():
    """Gauss–Hermite with φ(x) = x is exact: E[uv] = Σ₁₂, also when Σ₁₁·Σ₂₂ overflows
    (ρ = Σ₁₂/√(Σ₁₁Σ₂₂) was 0 there)."""
    x1 = np.array([[1.0, 2.0, -0.5], [0.3, -1.0, 2.0]]) * 1e150
    x2 = np.array([[-2.0, 0.5, 0.5], [1.0, 1.0, 1.0]]) * 1e150
    identity = stax.serial(stax.Dense(1), stax.ElementwiseNumerical(lambda x: x, 4, lambda x: 1.0 + 0.0 * x))
    linear = x1 @ x2.T / 3
    assert_close(identity.kernel_fn(x1, x2, get="nngp"), linear, 1e-14, "numba")
    nngp, _ = _reference.infinite_kernels(x1, x2, identity.kernel_fn.spec)
    assert_close(nngp, linear, 1e-14, "reference")
