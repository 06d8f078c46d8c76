"""neural-tangents 0.6.5's other elementwise activations (Exp, ExpNormalized, Gaussian, Rbf,
Sign, Gabor, Monomial, RectifiedMonomial, Polynomial, Hermite; Cos rechecked).

Four independent checks: the fused C++ pass against the NumPy reference (to rounding), the
reference's closed forms against Gauss–Hermite quadrature of φ and φ' (where the expectation
is smooth) or textbook closed forms (where it is not), neural-tangents' own kernels and
finite networks (tests/compat/data/activations.npz, from tests/compat/generate_activations.py),
and the range: positive homogeneity of the polynomial-type kernels over the float range.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import RTOL, assert_close, assert_rounding

from fastntk import _core, _reference, activations, stax
from fastntk.activations import ABReluDual, PolynomialDual, QuadratureDual
from fastntk.spec import Act, Serial, leaves

pytestmark = pytest.mark.filterwarnings("ignore:fastntk's stax.Hermite kernel")

#: One instance per activation, non-default parameters where it has any.
CASES = {
    "exp": lambda: stax.Exp(0.8, 0.6),
    "exp_default": stax.Exp,
    "exp_normalized": stax.ExpNormalized,
    "exp_normalized_clip": lambda: stax.ExpNormalized(1.3, -0.5, True),
    "gaussian": stax.Gaussian,
    "gaussian_ab": lambda: stax.Gaussian(1.2, -0.7),
    "gaussian_positive_b": lambda: stax.Gaussian(0.9, 0.03),
    "rbf": lambda: stax.Rbf(0.7),
    "sign": stax.Sign,
    "gabor": stax.Gabor,
    "cos": lambda: stax.Cos(0.9, 1.2, -0.2),
    **{f"monomial{n}": (lambda n=n: stax.Monomial(n)) for n in range(7)},
    **{f"rectified_monomial{n}": (lambda n=n: stax.RectifiedMonomial(n)) for n in range(6)},
    "polynomial_linear": lambda: stax.Polynomial([0.1, 0.4]),
    "polynomial_cubic": lambda: stax.Polynomial([0.3, -1.0, 0.5, 0.2]),
    "polynomial_quintic": lambda: stax.Polynomial([0.3, -1.0, 0.5, 0.2, 0.1, -0.05]),
    **{f"hermite{n}": (lambda n=n: stax.Hermite(n)) for n in range(6)},
}

NETS = [(1.0, 0.1), (1.3, None), (0.8, 0.3)]

#: Deepest test network per activation where deeper kernels leave float64 (exp(2·exp(2·exp(…)))).
MAX_DEPTH = {"exp_default": 2}


def _net(act, depth, W_std, b_std, parameterization, width=8):
    layers = []
    for i in range(depth):
        layers += [stax.Dense(width + i, W_std, b_std, parameterization=parameterization), act]
    return stax.serial(*layers, stax.Dense(1, W_std, b_std, parameterization=parameterization))


def _inputs(seed=0, n=5, d=4, scale=0.7, zero_row=True):
    x = scale * np.random.default_rng(seed).standard_normal((n, d))
    if zero_row:
        x[2] = 0.0
    return x


# --- the fused pass against the reference --------------------------------------------------


@pytest.mark.parametrize(("depth", "W_std", "b_std"), [(1, *NETS[0]), (2, *NETS[1]), (2, *NETS[2]), (3, *NETS[2]),
                                                     (3, *NETS[0])], ids=str)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("act", list(CASES))
def test_compiled_equals_reference(act, parameterization, W_std, b_std, depth):
    """kernel_fn (C++ fused pass; Numba for the quintic) == _reference, float64, x2 given and None,
    a zero-norm row included."""
    if depth > MAX_DEPTH.get(act, depth):
        pytest.skip("the kernels overflow float64")
    net = _net(CASES[act](), depth, W_std, b_std, parameterization=parameterization)
    x1, x2 = _inputs(0), _inputs(1, n=4, zero_row=False)
    for y2 in (x2, None):
        k = net.kernel_fn(x1, y2)
        nngp, ntk = _reference.infinite_kernels(x1, y2, net.kernel_fn.spec)
        assert_rounding(k.nngp, nngp, f"{act} nngp")
        assert_rounding(k.ntk, ntk, f"{act} ntk")
        assert np.isfinite(k.nngp).all()
        assert np.isfinite(k.ntk).all()


def test_diagonal_equals_full():
    for act in ("gabor", "rectified_monomial3", "hermite3", "sign", "exp_normalized"):
        kernel_fn = _net(CASES[act](), 2, 1.2, 0.1, "ntk").kernel_fn
        x = _inputs(3)
        k, kd = kernel_fn(x), kernel_fn(x, diagonal=True)
        assert_rounding(kd.nngp, np.diag(k.nngp), act)
        assert_rounding(kd.ntk, np.diag(k.ntk), act)


# --- the reference's closed forms against quadrature and textbook forms --------------------


def _grid():
    """(k12, k11, k22) of many shapes: unit and unequal variances, ρ from −1 to 1, coincident
    points, zero variances."""
    rng = np.random.default_rng(5)
    k11, k22 = rng.uniform(0.05, 2.0, 60), rng.uniform(0.05, 2.0, 60)
    rho = np.concatenate([np.linspace(-0.999, 0.999, 50), [-1.0, 1.0] * 5])
    k12 = rho * np.sqrt(k11 * k22)
    k11, k22, k12 = np.append(k11, [0.7, 0.0, 0.0, 1.0]), np.append(k22, [0.7, 0.9, 0.0, 1.0]), np.append(k12, [0.7, 0.0, 0.0, 0.3])
    return k12, k11, k22


SMOOTH = ["exp", "exp_default", "gaussian", "gaussian_ab", "gaussian_positive_b", "rbf", "gabor", "cos",
          *[f"monomial{n}" for n in range(7)], "polynomial_linear", "polynomial_cubic", "polynomial_quintic",
          *[f"hermite{n}" for n in range(6)]]

#: Quadrature error beyond rounding (polynomial φ are integrated exactly).
QUADRATURE_RTOL = {"gaussian": 1e-12, "gaussian_ab": 1e-12}


def _rule(act):
    return next(leaf for leaf in leaves(CASES[act]().kernel_fn.spec)).activation


@pytest.mark.parametrize("act", SMOOTH)
def test_reference_equals_quadrature(act):
    """dual(rule) == high-degree Gauss–Hermite quadrature of φ and φ' on the grid (120 nodes;
    the narrow φ of Gabor and Gaussian(b=−1) need 200 at variance 2)."""
    activation = _rule(act)
    k12, k11, k22 = _grid()
    sigma, t_dot = _reference.dual(activation.dual, k12, k11, k22)
    nodes = 200 if act in ("gabor", "gaussian") else 120
    q_sigma, q_t_dot = _reference.dual(QuadratureDual(activation.fn, activation.df, nodes), k12, k11, k22)
    rtol = QUADRATURE_RTOL.get(act, 1e-13)
    assert_close(sigma, q_sigma, rtol, f"{act} sigma")
    assert_close(t_dot, q_t_dot, rtol, f"{act} t_dot")


def test_sign_and_low_rectified_monomials_equal_textbook_forms():
    """Kernels with kinks or jumps at 0, where quadrature converges slowly: E[sign u sign v] =
    (2/π)·arcsin ρ; degree 0: (π − θ)/(2π); degree 1 is ReLU; degree 2: Cho & Saul's J₂."""
    k12, k11, k22 = _grid()
    s = np.sqrt(k11 * k22)
    # |ρ| = 1 only up to the rounding of k12 = ±√(k11·k22): θ ≈ √eps there, in both forms alike.
    ok = (s > 0) & (np.abs(k12) < 0.9999 * s)
    k12, k11, k22, s = k12[ok], k11[ok], k22[ok], s[ok]
    rho = k12 / s
    theta = np.arccos(rho)
    sigma, t_dot = _reference.dual(activations.SignDual(), k12, k11, k22)
    assert_close(sigma, 2 / np.pi * np.arcsin(rho), 1e-14, "sign")
    assert not t_dot.any()
    j0 = (np.pi - theta) / (2 * np.pi)
    j2 = s**2 * (3 * np.sin(theta) * np.cos(theta) + (np.pi - theta) * (1 + 2 * np.cos(theta) ** 2)) / (2 * np.pi)
    relu = _reference.dual(ABReluDual(0.0, 1.0), k12, k11, k22)
    for n, (want_sigma, want_t_dot) in enumerate([(j0, 0 * j0), relu, (j2, 4 * relu[0])]):
        sigma, t_dot = _reference.dual(activations.RectifiedMonomialDual(n), k12, k11, k22)
        assert_close(sigma, want_sigma, 1e-13, f"degree {n} sigma")
        assert_close(t_dot, want_t_dot, 1e-13, f"degree {n} t_dot")


@pytest.mark.parametrize("n", [2, 3, 5])
def test_rectified_monomials_equal_two_dimensional_integration(n):
    """Degrees ≥ 2 against adaptive integration over the half-plane u, v ≥ 0 (scipy dblquad):
    u = √k11·z₁, v = √k22·(ρz₁ + √(1 − ρ²)z₂), both kernels."""
    from scipy.integrate import dblquad

    k11, k22 = 1.3, 0.6

    def moment(m, rho):
        c = math.sqrt(1 - rho**2)

        def f(z2, z1):
            u, v = math.sqrt(k11) * z1, math.sqrt(k22) * (rho * z1 + c * z2)
            return u**m * v**m * math.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi)

        def lower(z1):  # v = 0
            return -rho * z1 / c

        return dblquad(f, 0, 14, lower, lambda z1: max(lower(z1), 0.0) + 14, epsabs=1e-13, epsrel=1e-12)[0]

    for rho in (-0.8, 0.1, 0.95):
        sigma, t_dot = _reference.dual(activations.RectifiedMonomialDual(n), rho * math.sqrt(k11 * k22), k11, k22)
        assert sigma == pytest.approx(moment(n, rho), rel=1e-10, abs=1e-12)
        assert t_dot == pytest.approx(n**2 * moment(n - 1, rho), rel=1e-10, abs=1e-12)


def test_zero_variance_kernels_are_those_of_phi_at_zero():
    """u ≡ 0: E[φ(0)φ(v)] = φ(0)·E[φ(v)]; [x ≥ 0]·x⁰ is 1 at 0, sign(0) = 0."""
    v = np.array([0.0, 0.8])
    for rule, want in [(activations.RectifiedMonomialDual(0), [1.0, 0.5]), (activations.SignDual(), [0.0, 0.0]),
                       (activations.RectifiedMonomialDual(2), [0.0, 0.0]), (activations.MonomialDual(0), [1.0, 1.0]),
                       (activations.MonomialDual(3), [0.0, 0.0])]:
        sigma, _ = _reference.dual(rule, 0.0 * v, 0.0 * v, v)
        np.testing.assert_array_equal(sigma, want, err_msg=type(rule).__name__)


def test_long_polynomial_quadrature_is_the_closed_form():
    """Polynomials of more than 4 coefficients run by exact (n + 1)-node quadrature: equal to the
    reference's closed form for any length."""
    coef = (0.3, -1.0, 0.5, 0.2, 0.1, -0.05, 0.02)
    net = _net(stax.Polynomial(coef), 2, 1.1, 0.2, "standard")
    closed = Serial(tuple(Act(replace(leaf.activation, dual=PolynomialDual(coef))) if isinstance(leaf, Act) else leaf
                          for leaf in leaves(net.kernel_fn.spec)))
    assert isinstance(next(leaf for leaf in leaves(net.kernel_fn.spec) if isinstance(leaf, Act)).activation.dual,
                      QuadratureDual)
    x = _inputs(4)
    k = net.kernel_fn(x)
    nngp, ntk = _reference.infinite_kernels(x, None, closed)
    assert_close(k.nngp, nngp, 1e-13, "nngp")
    assert_close(k.ntk, ntk, 1e-13, "ntk")


def test_hermite_kernel_is_the_networks_at_any_variance():
    """Hermite(2) = (x² − 1)/√2: Σ' = Σ₁₂² + (Σ₁₁ − 1)(Σ₂₂ − 1)/2 (neural-tangents: Σ₁₂²)."""
    k12, k11, k22 = np.array([0.3, 0.5]), np.array([1.0, 2.0]), np.array([1.0, 0.4])
    sigma, t_dot = _reference.dual(activations.HermiteDual(2), k12, k11, k22)
    np.testing.assert_allclose(sigma, k12**2 + (k11 - 1) * (k22 - 1) / 2, rtol=1e-15)
    np.testing.assert_allclose(t_dot, 2 * k12, rtol=1e-15)
    assert sigma[0] == k12[0] ** 2  # unit variances: neural-tangents' value


def test_hermite_warns_once():
    stax._WARNED.discard("Hermite")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stax.Hermite(3), stax.Hermite(2)
    assert len([w for w in caught if "neural-tangents" in str(w.message)]) == 1


def test_gaussian_with_positive_b_diverges_to_inf():
    """E[exp(b(u² + v²))] is infinite once 1 − 2b·Σ ≤ 0."""
    sigma, t_dot = _reference.dual(activations.GaussianDual(1.0, 1.0), np.array([0.1, 0.0]), np.array([0.6, 0.2]),
                                   np.array([0.3, 0.2]))
    assert np.isinf(sigma[0])
    assert np.isinf(t_dot[0])
    assert np.isfinite(sigma[1])
    x = np.ones((2, 3))
    with pytest.raises(OverflowError):
        _net(stax.Gaussian(1.0, 1.0), 1, 1.0, None, "ntk").kernel_fn(x)


# --- neural-tangents 0.6.5 -------------------------------------------------------------------

FIXTURE = Path(__file__).parent / "compat" / "data" / "activations.npz"


def _fixture_cases():
    z = np.load(FIXTURE, allow_pickle=False)
    return z, json.loads(str(z["spec"]))["cases"]


_Z, _NT_CASES = _fixture_cases()


def _fixture_net(case):
    act = eval(f"stax.{case['activation']}")  # the fixture's literal expressions
    layers = []
    for _ in range(case["depth"]):
        layers += [stax.Dense(case["width"], case["W_std"], case["b_std"], parameterization=case["parameterization"]), act]
    return stax.serial(*layers, stax.Dense(1, case["W_std"], case["b_std"], parameterization=case["parameterization"]))


@pytest.mark.parametrize("i", range(len(_NT_CASES)), ids=[c["activation"] for c in _NT_CASES])
def test_matches_neural_tangents(i):
    """Kernels and finite-network outputs equal neural-tangents' at 1e-12 normwise (float64)."""
    case = _NT_CASES[i]
    net = _fixture_net(case)
    x1, x2 = _Z[f"{i}/x1"], _Z[f"{i}/x2"]
    k = net.kernel_fn(x1, x2)
    for name in ("nngp", "ntk"):
        assert_close(getattr(k, name), _Z[f"{i}/{name}"], RTOL["float64"], name)
    if not case["finite"]:
        with pytest.raises(NotImplementedError):
            _apply_without_network(net, x1)
        return
    flat = iter(_Z[f"{i}/p{j}"] for j in range(2 * case["depth"] + 2) if f"{i}/p{j}" in _Z.files)
    params = []
    for leaf in leaves(net.kernel_fn.spec):
        params.append(() if isinstance(leaf, Act) else (next(flat), None if case["b_std"] is None else next(flat)))
    assert_close(net.apply_fn(params, x1), _Z[f"{i}/apply"], RTOL["float64"], "apply")


def _apply_without_network(net, x):
    _, params = net.init_fn(0, x.shape)
    return net.apply_fn(params, x)


# --- range -------------------------------------------------------------------------------------

#: (activation, depth, c): a bias-free network whose kernels scale as c^(2·n^depth) for an
#: activation homogeneous of degree n, with both kernels representable in float64.
HOMOGENEOUS = [
    ("monomial2", 1, 1e75), ("monomial2", 2, 1e-35), ("monomial3", 1, 1e-45), ("monomial5", 1, 1e25),
    ("rectified_monomial2", 1, 1e-70), ("rectified_monomial3", 2, 1e15), ("rectified_monomial1", 3, 1e150),
    ("exp_normalized", 3, 1e150), ("exp_normalized_clip", 2, 1e-150), ("sign", 2, 1e150), ("sign", 2, 1e-150),
    ("rectified_monomial0", 2, 1e-150),
]

DEGREE = {"exp_normalized": 1, "exp_normalized_clip": 1, "sign": 0}


@pytest.mark.parametrize(("act", "depth", "c"), HOMOGENEOUS, ids=str)
def test_homogeneous_kernels_over_the_float_range(act, depth, c):
    n = DEGREE[act] if act in DEGREE else int(act[-1])
    net = _net(CASES[act](), depth, 1.2, None, "ntk")
    x1, x2 = _inputs(6), _inputs(7, n=4, zero_row=False)
    k, kc = net.kernel_fn(x1, x2), net.kernel_fn(x1 * c, x2 * c)
    log_factor = 2 * n**depth * math.log10(c)
    for name in ("nngp", "ntk"):
        got = getattr(kc, name)
        assert np.isfinite(got).all(), name
        scale = 10.0 ** (log_factor / 2)
        assert_close(got / scale / scale, getattr(k, name), 1e-12, name)


RANGE = [(act, c) for act in ("gabor", "gaussian", "gaussian_ab", "rbf", "exp_normalized", "sign")
         for c in (1e-150, 1e40, 1e100, 1e150)] + [(act, c) for act in ("hermite2", "polynomial_cubic", "monomial2")
                                                  for c in (1e-150, 1e40)]


@pytest.mark.parametrize(("act", "c"), RANGE, ids=str)
def test_large_and_small_inputs_match_the_reference(act, c):
    """Inputs of norm up to 1e150 and down to 1e-150: finite kernels equal to the reference's
    (the variances' product 1e600 is never formed)."""
    net = _net(CASES[act](), 1, 1.0, None, "ntk")
    x = _inputs(8) * c
    k = net.kernel_fn(x)
    nngp, ntk = _reference.infinite_kernels(x, None, net.kernel_fn.spec)
    for got, want in ((k.nngp, nngp), (k.ntk, ntk)):
        assert np.isfinite(got).all()
        assert_close(got, want, 1e-14)


# --- parameters and registry ---------------------------------------------------------------


def test_compiled_rectified_degree_limit_is_the_modules():
    assert _core.max_rectified_degree == activations.MAX_RECTIFIED_DEGREE
    top = activations.MAX_RECTIFIED_DEGREE
    net = _net(stax.RectifiedMonomial(top), 1, 1.0, 0.1, "ntk")
    x = _inputs(9, zero_row=False)
    k = net.kernel_fn(x)
    nngp, ntk = _reference.infinite_kernels(x, None, net.kernel_fn.spec)
    assert_close(k.nngp, nngp, 1e-12, "nngp")
    assert_close(k.ntk, ntk, 1e-12, "ntk")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: stax.Monomial(-1), "degree must be an integer in"),
        (lambda: stax.Monomial(1.5), "degree must be an integer in"),
        (lambda: stax.Monomial(171), "degree must be an integer in"),
        (lambda: stax.RectifiedMonomial(65), r"degree must be an integer in \[0, 64\]"),
        (lambda: stax.Hermite(True), "degree must be a non-negative integer"),
        (lambda: stax.Polynomial(["a"]), "coef must be a sequence of real numbers"),
        (lambda: stax.Polynomial([1.0, np.inf]), "coef must be finite"),
        (lambda: stax.Exp(a=np.nan), "a must be a finite real number"),
        (lambda: stax.Gaussian(b="x"), "b must be a finite real number"),
        (lambda: stax.ExpNormalized(gamma=np.inf), "gamma must be a finite real number"),
    ],
)
def test_bad_parameters_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_rbf_rejects_negative_gamma():
    with pytest.raises(ValueError, match="gamma must be finite and >= 0"):
        stax.Rbf(-1.0)


def test_exp_normalized_has_no_finite_network():
    init_fn, apply_fn, _ = stax.serial(stax.Dense(3), stax.ExpNormalized())
    _, params = init_fn(0, (2, 4))
    with pytest.raises(NotImplementedError, match="ExpNormalized is a kernel"):
        apply_fn(params, np.ones((2, 4)))


@pytest.mark.parametrize("name", ["exp", "gaussian", "rbf", "sign", "gabor"])
def test_registered_by_name(name):
    assert isinstance(activations.by_name(name).dual, activations.CLOSED_FORMS)
    assert stax.Activation(name).kernel_fn.spec.activation.name == name


def test_derivatives_match_central_differences():
    x = np.linspace(-2.5, 2.5, 101) + 1e-3  # off 0, where sign and the rectified kinks sit
    for act in CASES:
        if act.startswith("exp_normalized"):
            continue
        a = _rule(act)
        h = 1e-6
        assert_close(a.df(x), (a.fn(x + h) - a.fn(x - h)) / (2 * h), 1e-8, act)


@pytest.mark.parametrize("act", ["gabor", "rectified_monomial2", "monomial3", "hermite3", "polynomial_cubic", "sign",
                                 "exp", "gaussian", "rbf", "exp_normalized"])
def test_float32_inputs_match_float64(act):
    net = _net(CASES[act](), 2, 1.1, 0.1, "ntk")
    x = _inputs(10)
    k64, k32 = net.kernel_fn(x), net.kernel_fn(x.astype(np.float32))
    assert k32.nngp.dtype == np.float32
    for name in ("nngp", "ntk"):
        assert_close(getattr(k32, name), getattr(k64, name), RTOL["float32_vs_float64"], name)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_phi_and_derivative_in_other_frameworks(framework):
    """fn and df run in the namespace of their argument (float64) and agree with NumPy."""
    x = np.linspace(-2.0, 2.0, 41)
    if framework == "torch":
        torch = pytest.importorskip("torch")
        _check_frameworks(torch.asarray(x), x, lambda a: a.numpy())
        return
    jax = pytest.importorskip("jax")
    if not hasattr(jax, "enable_x64"):
        pytest.skip("a jax without the enable_x64 context")
    with jax.enable_x64(True):
        _check_frameworks(jax.numpy.asarray(x), x, np.asarray)


def _check_frameworks(y, x, back):
    for act in CASES:
        if act.startswith("exp_normalized"):
            continue
        a = _rule(act)
        assert_close(back(a.fn(y)), a.fn(x), 1e-14, f"{act} fn")
        assert_close(back(a.df(y)), a.df(x), 1e-14, f"{act} df")
