"""fastntk._reference: the NumPy oracle, and every backend against it.

kernel_fn (C++ for closed forms, Numba for quadratures, NumPy for user dual kernels) is
compared with ``_reference.infinite_kernels`` on random and edge inputs, for every kind
of activation, both parameterizations, b_std None / 0 / positive and depths 1–5. The
reference itself is checked against the neural-tangents fixtures and against identities
that need no stored numbers (exact quadrature of polynomials, symmetry of the duals).
"""

import numpy as np
import pytest
from conftest import (
    RELU_FAMILY,
    RTOL,
    activation_catalogue,
    assert_close,
    fc_net,
    fixture_paths,
    has_coincident_pairs,
    load_fixture,
    normwise_error,
)
from scipy.special import erf as scipy_erf
from scipy.special import ndtr

from fastntk import _reference, stax
from fastntk.activations import ABReluDual, ErfDual, GeluDual, QuadratureDual, SinDual

ACTIVATIONS = activation_catalogue()
PARAMETERIZATIONS = ("ntk", "standard")
D = 4


def _random(n1=6, n2=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n1, D)), rng.standard_normal((n2, D))


def _zero_rows():
    x1, x2 = _random(seed=1)
    x1[2] = 0.0
    x2[1] = 0.0
    return x1, x2


def _duplicate_rows():
    x1, x2 = _random(seed=2)
    x1[3] = x1[1]
    x2[0] = x1[0]
    return x1, x2


def _antipodal_rows():
    x1, x2 = _random(seed=3)
    x2[:3] = -x1[:3]
    return x1, x2


def _self(make):
    return lambda: (make()[0], None)


#: Input pairs (x1, x2) (x2 None: the kernel of x1 with itself), each with the
#: (parameterization, b_std) that stresses it most: zero rows with b_std = 0 keep a zero
#: variance in every layer and, in the standard parameterization, a non-zero NTK (θ = π/2).
EDGE_INPUTS = {
    "random": (_random, "standard", 0.4),
    "random_self": (_self(_random), "ntk", None),
    "zero_rows": (_zero_rows, "standard", 0.0),
    "zero_rows_self": (_self(_zero_rows), "ntk", None),
    "duplicate_rows": (_duplicate_rows, "ntk", 0.4),
    "duplicate_rows_self": (_self(_duplicate_rows), "standard", None),
    "antipodal_rows": (_antipodal_rows, "standard", 0.0),
    "single_point": (lambda: _random(1, 1, seed=4), "ntk", 0.0),
    "single_point_self": (_self(lambda: _random(1, 1, seed=4)), "standard", 0.4),
    "scaled_1e-3": (lambda: tuple(x * 1e-3 for x in _random(seed=5)), "standard", None),
    "scaled_1e3": (lambda: tuple(x * 1e3 for x in _random(seed=6)), "ntk", 0.0),
}


def _compare_with_reference(net, x1, x2, rtol):
    """kernel_fn against _reference.infinite_kernels, nngp and ntk.

    With x2 None only the upper triangles are compared: kernel_fn computes the upper
    triangle and mirrors it, while a deg×deg quadrature evaluated at (Σ₂₂, Σ₁₁) instead
    of (Σ₁₁, Σ₂₂) differs by its own error (symmetry is tested in test_stax.py).
    """
    nngp, ntk = _reference.infinite_kernels(x1, x2, net.kernel_fn.spec)
    k = net.kernel_fn(x1, x2, ("nngp", "ntk"))
    part = np.triu if x2 is None else np.asarray
    assert_close(part(k.nngp), part(nngp), rtol, "nngp")
    assert_close(part(k.ntk), part(ntk), rtol, "ntk")


#: (parameterization, depth, b_std): depths 1–5 in each parameterization, and each
#: parameterization meets every kind of bias (None, 0, positive) on the way.
RANDOM_CONFIGS = [
    *(("ntk", depth, b_std) for depth, b_std in zip(range(1, 6), (0.0, 0.4, None, 0.0, 0.4))),
    *(("standard", depth, b_std) for depth, b_std in zip(range(1, 6), (0.4, None, 0.0, 0.4, None))),
]


@pytest.mark.parametrize(("parameterization", "depth", "b_std"), RANDOM_CONFIGS, ids=lambda v: str(v))
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_backend_matches_reference_random_inputs(act, parameterization, depth, b_std):
    case = ACTIVATIONS[act]
    x1, x2 = _random(seed=depth)
    _compare_with_reference(fc_net(case.layer, depth, parameterization, b_std), x1, x2, case.rtol)


@pytest.mark.parametrize("b_std", [None, 0.0, 0.4], ids=["bNone", "b0", "b0.4"])
@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_backend_matches_reference_bias(act, parameterization, b_std):
    case = ACTIVATIONS[act]
    x1, x2 = _duplicate_rows()
    _compare_with_reference(fc_net(case.layer, 2, parameterization, b_std), x1, x2, case.rtol)


EDGE_CASES = [pytest.param(act, inputs, id=f"{act}-{inputs}") for act in ACTIVATIONS for inputs in EDGE_INPUTS]


@pytest.mark.parametrize(("act", "inputs"), EDGE_CASES)
def test_backend_matches_reference_edge_inputs(act, inputs):
    case = ACTIVATIONS[act]
    make, parameterization, b_std = EDGE_INPUTS[inputs]
    x1, x2 = make()
    _compare_with_reference(fc_net(case.layer, 3, parameterization, b_std), x1, x2, case.rtol)


#: Every closed form, one quadrature and one user dual: Numba compiles each quadrature
#: activation again for float32 tiles (~1 s each), so the others are left to float64.
FLOAT32_ACTIVATIONS = [act for act, case in ACTIVATIONS.items() if case.exact_dual] + ["numerical_df"]


@pytest.mark.parametrize("act", FLOAT32_ACTIVATIONS)
def test_backend_matches_reference_float32(act):
    """float32 inputs and results; the reference works in float64 on the same inputs."""
    case = ACTIVATIONS[act]
    x1, x2 = (x.astype(np.float32) for x in _duplicate_rows())
    net = fc_net(case.layer, 3, "standard", 0.1)
    nngp, ntk = _reference.infinite_kernels(x1, x2, net.kernel_fn.spec)
    k = net.kernel_fn(x1, x2)
    assert k.nngp.dtype == k.ntk.dtype == np.float32
    assert_close(k.nngp, nngp, RTOL["float32_vs_float64"], "nngp")
    assert_close(k.ntk, ntk, RTOL["float32_vs_float64"], "ntk")


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_zero_rows_give_finite_kernels(act):
    """A zero-norm input with no bias has variance 0 at every layer: finite, never NaN."""
    x1, x2 = _zero_rows()
    spec = fc_net(ACTIVATIONS[act].layer, 3, "ntk", None).kernel_fn.spec
    for array in _reference.infinite_kernels(x1, x2, spec):
        assert np.isfinite(array).all()


# --- the reference itself -----------------------------------------------------------


@pytest.mark.parametrize("path", fixture_paths("infinite"), ids=lambda p: p.stem)
def test_reference_matches_fixture(path):
    """The oracle agrees with neural-tangents (tests/data/README.md tolerances)."""
    z, spec = load_fixture(path)
    layers = eval(spec["stax"], {"stax": stax}).kernel_fn.spec
    x2 = z.get("x2")
    nngp, ntk = _reference.infinite_kernels(z["x1"], x2, layers)
    coincident_relu = spec["activation"]["name"] in RELU_FAMILY and has_coincident_pairs(z["x1"], x2)
    assert_close(nngp, z["nngp"], RTOL["float64"], "nngp")
    assert_close(ntk, z["ntk"], RTOL["float64_coincident_relu_ntk" if coincident_relu else "float64"], "ntk")


def _covariances(n=200, seed=7):
    """Valid (k12, k11, k22): variances in [0.01, 5], correlations in [−1, 1] with both ends."""
    rng = np.random.default_rng(seed)
    k11, k22 = rng.uniform(0.01, 5, n), rng.uniform(0.01, 5, n)
    rho = np.concatenate([rng.uniform(-1, 1, n - 2), [1.0, -1.0]])
    return rho * np.sqrt(k11 * k22), k11, k22


@pytest.mark.parametrize("deg", [3, 5, 12])
def test_gauss_hermite_dual_is_exact_for_polynomials(deg):
    """φ = x²: E[u²v²] = Σ₁₁Σ₂₂ + 2Σ₁₂², E[φ'(u)φ'(v)] = 4Σ₁₂; exact for deg ≥ 3."""
    k12, k11, k22 = _covariances()
    rule = QuadratureDual(lambda x: x**2, lambda x: 2 * x, deg)
    sigma, t_dot = _reference.dual(rule, k12, k11, k22)
    assert_close(sigma, k11 * k22 + 2 * k12**2, 1e-13, "E[u²v²]")
    assert_close(t_dot, 4 * k12, 1e-13, "E[4uv]")


@pytest.mark.parametrize(
    "rule",
    [ABReluDual(0.0, 1.0), ABReluDual(-0.4, 1.3), ErfDual(1.2, 0.8, 0.1), SinDual(1.1, 0.9, 0.3), GeluDual()],
    ids=repr,
)
def test_closed_form_duals_are_symmetric_in_the_two_points(rule):
    k12, k11, k22 = _covariances()
    forward, backward = _reference.dual(rule, k12, k11, k22), _reference.dual(rule, k12, k22, k11)
    for a, b in zip(forward, backward):
        assert_close(a, b, 4e-16, repr(rule))


@pytest.mark.parametrize(
    ("rule", "fn"),
    [
        (ABReluDual(0.0, 1.0), lambda x: np.maximum(x, 0)),
        (ABReluDual(-1.0, 1.0), np.abs),
        (ErfDual(1.0, 1.0, 0.0), scipy_erf),
        (SinDual(1.0, 1.0, 0.5), lambda x: np.sin(x + 0.5)),
        (GeluDual(), lambda x: x * ndtr(x)),
    ],
    ids=["relu", "abs", "erf", "sin", "gelu"],
)
def test_closed_form_dual_variance_is_second_moment(rule, fn):
    """At ρ = 1 the dual is E[φ(u)²], a 1-D integral checked by adaptive quadrature."""
    from scipy.integrate import quad

    for k in (0.3, 1.0, 2.5):
        sigma, _ = _reference.dual(rule, np.float64(k), np.float64(k), np.float64(k))
        expected = quad(lambda z, k=k: fn(np.sqrt(k) * z) ** 2 * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -40, 40,
                        epsabs=1e-14, epsrel=1e-13, limit=200)[0]
        assert normwise_error(sigma, expected) <= 1e-12


def test_rho_tolerance_is_shared_with_the_driver():
    from fastntk.infinite import rho_tolerance

    for d in (1, 7, 784):
        for dtype in (np.float32, np.float64):
            assert rho_tolerance(d, dtype) == _reference.rho_tolerance(d, dtype)


def test_reference_rejects_unknown_dual_rule():
    with pytest.raises(ValueError, match="unknown dual rule str"):
        _reference.dual("conv", 1.0, 1.0, 1.0)
