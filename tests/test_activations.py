"""fastntk.activations: the registry, the forward functions and derivatives, user-given
activations, and the accuracy of the Gauss–Hermite dual kernels against closed forms."""

import math

import numba
import numpy as np
import pytest
from conftest import (
    RTOL,
    activation_catalogue,
    assert_close,
    fc_net,
    normwise_error,
    np_cos,
    np_sin,
    np_tanh,
    np_tanh_prime,
)
from scipy.special import erf, expit, ndtr

from fastntk import activations, stax
from fastntk.activations import ACTIVATIONS, Activation, by_name

X = np.linspace(-6, 6, 241)

# --- registry -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_by_name_builds_every_registered_activation(name):
    act = by_name(name)
    assert isinstance(act, Activation)
    assert act.dual is None or isinstance(act.dual, (*activations.CLOSED_FORMS, activations.QuadratureDual))
    assert np.all(np.isfinite(act.fn(X)))


@pytest.mark.parametrize("name", ["rleu", "ReLU", "", None, 3])
def test_by_name_rejects_unknown_names_and_lists_supported(name):
    with pytest.raises(ValueError, match=f"unknown activation {name!r}; supported: ") as info:
        by_name(name)
    for supported in ACTIVATIONS:
        assert repr(supported) in str(info.value)


FORWARD = {
    "relu": (activations.relu(), lambda x: np.maximum(x, 0)),
    "leaky_relu": (activations.leaky_relu(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    "abrelu": (activations.abrelu(-0.4, 1.3), lambda x: np.where(x > 0, 1.3 * x, -0.4 * x)),
    "abs": (activations.abs_(), np.abs),
    "erf": (activations.erf(1.2, 0.8, 0.1), lambda x: 1.2 * erf(0.8 * x) + 0.1),
    "sigmoid_like": (activations.sigmoid_like(), lambda x: 0.5 * erf(x / 2.4020563531719796) + 0.5),
    "gelu": (activations.gelu(), lambda x: x * ndtr(x)),
    "gelu_tanh": (
        activations.gelu(True),
        lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    ),
    "sin": (activations.sin(1.1, 0.9, 0.3), lambda x: 1.1 * np.sin(0.9 * x + 0.3)),
    "cos": (activations.cos(0.9, 1.2, -0.2), lambda x: 0.9 * np.cos(1.2 * x - 0.2)),
    "identity": (activations.identity(), lambda x: x),
    "tanh": (activations.tanh(), np.tanh),
    "softplus": (activations.softplus(), lambda x: np.log1p(np.exp(x))),
    "silu": (activations.silu(), lambda x: x * expit(x)),
}


@pytest.mark.parametrize("name", list(FORWARD))
def test_forward_function(name):
    act, expected = FORWARD[name]
    np.testing.assert_allclose(act.fn(X), expected(X), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", ["tanh", "softplus", "silu", "gelu_tanh"])
def test_derivative_of_quadrature_activations(name):
    """The φ' each numerical built-in passes to the quadrature (its Θ) is φ's derivative."""
    act, _ = FORWARD[name]
    fn, df, deg = act.dual.fn, act.dual.df, act.dual.deg
    # The finite network's namespace-generic φ, φ' and the quadrature's NumPy twins agree on NumPy.
    np.testing.assert_array_equal(act.fn(X), fn(X))
    np.testing.assert_array_equal(act.df(X), df(X))
    assert deg == 25
    h = 1e-5
    np.testing.assert_allclose(df(X), (fn(X + h) - fn(X - h)) / (2 * h), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", [name for name in FORWARD if name != "identity"])
def test_closed_form_property(name):
    closed = {"relu", "leaky_relu", "abrelu", "abs", "erf", "sigmoid_like", "gelu", "sin", "cos"}
    assert FORWARD[name][0].closed_form == (name in closed)


def test_identity_is_not_a_closed_form():
    assert activations.identity().closed_form is False


def test_cos_is_a_shifted_sin():
    assert activations.cos(0.9, 1.2, -0.2).dual == activations.SinDual(0.9, 1.2, -0.2 + math.pi / 2)


def test_sigmoid_like_is_neural_tangents_erf():
    assert activations.sigmoid_like().dual == activations.ErfDual(0.5, 1 / 2.4020563531719796, 0.5)


def test_relu_family_shares_the_abrelu_path():
    assert activations.relu().dual == activations.ABReluDual(0.0, 1.0)
    assert activations.leaky_relu(0.1).dual == activations.ABReluDual(0.1, 1.0)
    assert activations.abs_().dual == activations.ABReluDual(-1.0, 1.0)


# --- user-given activations -------------------------------------------------------------


def test_central_difference():
    df = activations.central_difference(np.sin)
    assert df.central_difference_of is np.sin
    np.testing.assert_allclose(df(X), np.cos(X), rtol=0, atol=1e-9)


@pytest.mark.parametrize("deg", [1, 0, 201, 2.5, True, "25"])
def test_numerical_rejects_bad_degree(deg):
    with pytest.raises(ValueError, match=r"deg must be an integer in \[2, 200\]"):
        activations.numerical(np.sin, deg)


def test_numerical_accepts_numpy_integer_degree():
    assert activations.numerical(np.sin, np.int64(12)).dual.deg == 12


def test_numerical_without_df_uses_central_difference():
    rule = activations.numerical(np_sin, 10).dual
    assert rule.df.central_difference_of is rule.fn is np_sin


@pytest.mark.parametrize(
    ("args", "match"),
    [((None, 10), "fn must be callable"), ((np.sin, 10, "cos"), "df must be callable or None")],
    ids=["fn", "df"],
)
def test_numerical_rejects_non_callables(args, match):
    with pytest.raises(TypeError, match=match):
        activations.numerical(*args)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1.0, np.sin), "fn must be callable"),
        ((np.sin, "nngp"), "nngp_fn must be callable"),
        ((np.sin, np.sin, 0), "d_nngp_fn must be callable or None"),
    ],
    ids=["fn", "nngp_fn", "d_nngp_fn"],
)
def test_elementwise_rejects_non_callables(args, match):
    with pytest.raises(TypeError, match=match):
        activations.elementwise(*args)


def _erf_dual(cov12, var1, var2):
    return (2 / np.pi) * np.arcsin(2 * cov12 / np.sqrt((1 + 2 * var1) * (1 + 2 * var2)))


def test_elementwise_default_derivative_is_price_theorem():
    """E[φ'(u)φ'(v)] = ∂E[φ(u)φ(v)]/∂Σ₁₂, by a central difference, away from |ρ| = 1."""
    rng = np.random.default_rng(0)
    var1, var2 = rng.uniform(0.1, 3, 50), rng.uniform(0.1, 3, 50)
    cov12 = rng.uniform(-0.95, 0.95, 50) * np.sqrt(var1 * var2)
    d_nngp_fn = activations.elementwise(erf, _erf_dual).dual.d_nngp_fn
    exact = (4 / np.pi) / np.sqrt((1 + 2 * var1) * (1 + 2 * var2) - 4 * cov12**2)
    assert_close(d_nngp_fn(cov12, var1, var2), exact, 1e-14, "E[φ'φ']")  # complex step


def _relu_dual_arccos(cov12, var1, var2):
    """The arc-cosine kernel through np.arccos, which takes complex input."""
    s = np.sqrt(np.maximum(var1 * var2 - cov12**2, 0))  # complex: lexicographic, Im kept off ρ = ±1
    return (s + (np.pi - np.arccos(cov12 / np.sqrt(var1 * var2))) * cov12) / (2 * np.pi)


@pytest.mark.parametrize("rho", [-1.0, 1.0, "interior"])
def test_d_cov12_complex_step_is_exact_for_erf(rho):
    """erf's dual is analytic up to |ρ| = 1: the complex step is exact to rounding there too."""
    rng = np.random.default_rng(3)
    var1, var2 = rng.uniform(0.1, 3, 50), rng.uniform(0.1, 3, 50)
    r = rng.uniform(-0.99, 0.99, 50) if rho == "interior" else np.full(50, rho)
    cov12 = r * np.sqrt(var1 * var2)
    exact = (4 / np.pi) / np.sqrt((1 + 2 * var1) * (1 + 2 * var2) - 4 * cov12**2)
    assert_close(activations._d_cov12(_erf_dual, cov12, var1, var2), exact, 1e-14, "E[φ'φ']")


@pytest.mark.parametrize(("dual", "rho", "atol"), [
    (_relu_dual_arccos, "interior", 1e-14),  # complex step
    (_relu_dual_arccos, 1.0, 1e-3),  # branch point at ρ = ±1: Im f has no limit, differences
    (_relu_dual_arccos, -1.0, 1e-3),
    (lambda c, v1, v2: np.real(_relu_dual_arccos(c, v1, v2)), "interior", 1e-8),  # Im = 0: rejected
], ids=["arccos-interior", "arccos-rho=1", "arccos-rho=-1", "real-cast-interior"])
def test_d_cov12_relu_against_arc_cosine_derivative(dual, rho, atol):
    """∂/∂Σ₁₂ of the arc-cosine kernel is (π − θ)/(2π) (Cho & Saul 2009)."""
    rng = np.random.default_rng(4)
    var1, var2 = rng.uniform(0.1, 3, 50), rng.uniform(0.1, 3, 50)
    r = rng.uniform(-0.99, 0.99, 50) if rho == "interior" else np.full(50, rho)
    exact = (np.pi - np.arccos(r)) / (2 * np.pi)
    got = activations._d_cov12(dual, r * np.sqrt(var1 * var2), var1, var2)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, exact, rtol=0, atol=atol)


def _relu_dual(cov12, var1, var2):
    """Arc-cosine kernel E[relu(u) relu(v)] = (s + (π − θ)Σ₁₂)/(2π),
    s = √(Σ₁₁Σ₂₂ − Σ₁₂²)."""
    s = np.sqrt(var1 * var2 - cov12**2)
    return (s + (np.pi - np.arctan2(s, cov12)) * cov12) / (2 * np.pi)


@pytest.mark.parametrize(
    ("fn", "dual", "closed", "rtol"),
    [
        # The erf dual is analytic in Σ₁₂ up to |ρ| = 1: the complex step is exact to rounding.
        (lambda x: x, _erf_dual, stax.Erf(), 1e-12),
        # The arc-cosine dual has a (1 − ρ)^(3/2) term at ρ = 1 (and np.arctan2 rejects complex
        # input), so a one-sided difference with step h ~ 6e-6·Σ is accurate to ~√h there.
        (lambda x: np.maximum(x, 0), _relu_dual, stax.Relu(), 1e-3),
    ],
    ids=["erf", "relu"],
)
def test_elementwise_default_derivative_at_coincident_points(fn, dual, closed, rtol):
    """Θ(x, x) of Elementwise(φ, dual) without d_nngp_fn equals the closed form's: the
    finite difference in Σ₁₂ turns one-sided at |ρ| = 1 instead of leaving the domain."""
    x = np.random.default_rng(1).standard_normal((4, 3))
    user = fc_net(stax.Elementwise(fn, dual), 1).kernel_fn(x, None, "ntk")
    assert np.isfinite(user).all()
    assert_close(user, fc_net(closed, 1).kernel_fn(x, None, "ntk"), rtol, "ntk")


# --- accuracy of the Gauss–Hermite dual kernels ---------------------------------------


def _compare(numerical, closed, depth=2, W_std=1.3):
    """Normwise error of the numerical activation's kernels against the closed form's."""
    rng = np.random.default_rng(2)
    x1, x2 = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))
    x2[0], x2[1] = x1[0], -x1[1]
    a = fc_net(numerical, depth, "ntk", 0.1, W_std).kernel_fn(x1, x2)
    b = fc_net(closed, depth, "ntk", 0.1, W_std).kernel_fn(x1, x2)
    return normwise_error(a.nngp, b.nngp), normwise_error(a.ntk, b.ntk)


@pytest.mark.parametrize(("deg", "rtol"), [(25, 1e-10), (50, 1e-13)])
def test_quadrature_of_sin_matches_closed_form(deg, rtol):
    """sin is entire and of exponential type: Gauss–Hermite converges fast."""
    errors = _compare(stax.ElementwiseNumerical(np_sin, deg, np_cos), stax.Sin())
    assert max(errors) <= rtol, errors


# erf for both NumPy (the reference, apply_fn) and Numba (the quadrature): a Numba
# ufunc, callable from compiled code; scipy.special.erf is not.
_erf_ufunc = numba.vectorize(["float64(float64)"])(lambda x: math.erf(x))


def numba_erf(x):
    return _erf_ufunc(x)


def numba_erf_prime(x):
    return 2 / np.sqrt(np.pi) * np.exp(-x * x)


@pytest.mark.parametrize(("deg", "rtol"), [(25, 2e-3), (50, 5e-6), (100, 1e-11)])
def test_quadrature_of_erf_matches_closed_form(deg, rtol):
    """erf(z) grows like exp(y²) off the real axis, so the quadrature converges slowly
    (measured on these inputs: 8e-4, 1e-6, 2e-13 for deg 25, 50, 100; 1e-6 needs deg ≈ 50)."""
    errors = _compare(stax.ElementwiseNumerical(numba_erf, deg, numba_erf_prime), stax.Erf(), W_std=1.0)
    assert max(errors) <= rtol, errors


def test_quadrature_of_tanh_converges():
    """tanh has poles at ±iπ/2: the error falls with the degree, slowly. Tanh() (deg 25)
    and deg 50, 100 against deg 200."""
    best = stax.ElementwiseNumerical(np_tanh, 200, np_tanh_prime)
    errors = [max(_compare(layer, best)) for layer in
              (stax.Tanh(), stax.ElementwiseNumerical(np_tanh, 50, np_tanh_prime),
               stax.ElementwiseNumerical(np_tanh, 100, np_tanh_prime))]
    for error, bound in zip(errors, (3e-2, 2e-3, 2e-5)):
        assert error <= bound, errors
    assert errors == sorted(errors, reverse=True)


def test_tanh_is_numerical_tanh_of_degree_25():
    """Tanh() passes the np.tanh ufunc itself: compiled like a Python function."""
    a, b = _compare(stax.Tanh(), stax.ElementwiseNumerical(np_tanh, 25, np_tanh_prime))
    assert max(a, b) <= RTOL["float64"]


def test_numerical_without_df_matches_df():
    """φ' by a central difference (~1e-10 relative) instead of the exact derivative."""
    errors = _compare(activation_catalogue()["numerical"].layer, stax.ElementwiseNumerical(np_sin, 20, np_cos))
    assert errors[0] == 0
    assert errors[1] <= RTOL["central_difference"]


def test_gelu_tanh_approximation_is_close_to_exact_gelu():
    errors = _compare(stax.Gelu(approximate=True), stax.Gelu())
    assert max(errors) <= 1e-3, errors
