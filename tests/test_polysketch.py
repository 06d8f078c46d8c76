"""NTKSketch (method='sketch'): the cosine polynomial's fit, PolySketch's expectations, and Φ Φᵀ against kernel_fn."""

import numpy as np
import pytest
from conftest import assert_close, feature_points, gram_error

from fastntk import _polysketch, stax
from fastntk.features import random_features


def _relu_net(depth, parameterization="ntk"):
    return stax.fc_network(depth, "relu", np.sqrt(2), None, parameterization)[2]


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_kernel_is_the_norms_times_a_function_of_the_cosine(get, parameterization):
    """The form the sketch relies on, from kernel_fn itself: K(x, y) = ‖x‖‖y‖·K(x̂, ŷ) (leaky ReLU and
    abs, depth 2, no bias), and for the 'ntk' parameterization κ_d = κ₁/d (the input's x·y/d is the
    only place d enters: zero-padding unit vectors from d = 6 to 12 halves the kernel)."""
    p = parameterization
    kernel_fn = stax.serial(stax.Dense(7, 1.3, parameterization=p), stax.LeakyRelu(0.2),
                            stax.Dense(5, 0.8, parameterization=p), stax.Abs(), stax.Dense(1, 1.1, parameterization=p))[2]
    x, y = feature_points(7), np.random.default_rng(1).standard_normal((4, 6))
    x[0] *= 3.0
    norm_x, norm_y = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    unit_x, unit_y = x / np.where(norm_x > 0, norm_x, 1)[:, None], y / norm_y[:, None]
    assert_close(kernel_fn(x, y, get), np.outer(norm_x, norm_y) * kernel_fn(unit_x, unit_y, get), 1e-13, get)
    if parameterization == "ntk":
        padded = [np.hstack([u, np.zeros_like(u)]) for u in (unit_x, unit_y)]
        assert_close(kernel_fn(*padded, get), kernel_fn(unit_x, unit_y, get) / 2, 1e-13, get)


@pytest.mark.parametrize(("depth", "bound_nngp", "bound_ntk"), [(1, 5e-4, 0.02), (2, 1e-3, 0.04), (3, 2e-3, 0.06)])
def test_polynomial_fit_error_is_reported_and_bounded(depth, bound_nngp, bound_ntk):
    """Degree 8, ReLU, d = 64. The bounds hold the measured errors (NNGP 2.9e-4, 6.5e-4, 9.9e-4; NTK
    1.5e-2, 3.1e-2, 4.6e-2) with room: the NNGP's κ = J₁-like has a (1 − t)^{3/2} kink at t = 1,
    so a degree-q fit's error falls like q⁻³; the NTK's J₀ factor has a √(1 − t) kink, like q⁻¹, and
    every layer adds one. The reported error is the one on a fresh, finer grid (to 1%), the
    coefficients are non-negative, and the fit is cached (the same arrays for a second map)."""
    kernel_fn = _relu_net(depth)
    t = np.linspace(-1, 1, 4001)
    unit_y = np.stack([t, np.sqrt(1 - t * t)] + [np.zeros_like(t)] * 62, axis=1)
    for get, bound in (("nngp", bound_nngp), ("ntk", bound_ntk)):
        fm = random_features(kernel_fn, 64, get, 256, method="sketch", seed=0)
        assert fm.degree == 8
        assert fm.poly_error < bound, (get, fm.poly_error)
        kappa = kernel_fn(np.eye(1, 64), unit_y, get)[0]
        fresh = np.max(np.abs(np.polyval(fm.coefficients[::-1], t) - kappa)) / kappa.max()
        assert fresh == pytest.approx(fm.poly_error, rel=0.01)
        assert np.all(fm.coefficients >= 0)
        assert not fm.coefficients.flags.writeable
        assert random_features(kernel_fn, 64, get, 512, method="sketch", seed=1).coefficients is fm.coefficients


@pytest.mark.parametrize(("k", "m"), [(1, 4), (1, 8), (2, 16), (3, 16), (4, 16), (5, 16)],
                         ids=["srht", "exact", "2", "3_padded", "4", "5_padded"])
def test_polysketch_preserves_inner_products_of_tensor_powers_in_expectation(k, m):
    """E_S[S_k(x^{⊗k})·S_k(y^{⊗k})] = (x·y)^k: the mean over 2000 seeded trees is within 5 standard
    errors of it for (x, y), (x, x) and (y, z), of norms 1, 0.8, 1.2 in d = 8 (S_k is multilinear)
    and cosines 0.55 and 0.83, so that 5 standard errors stay within 4–37% of (x·y)^k even at k = 5.
    k = 1 with m = d is x itself: exact."""
    v = np.random.default_rng(0).standard_normal((3, 8))
    v[1] = v[0] + 0.5 * v[1]
    v[2] = v[1] + 0.7 * v[2]
    v *= (np.array([1.0, 0.8, 1.2]) / np.linalg.norm(v, axis=1))[:, None]
    pairs = [(0, 1), (0, 0), (1, 2)]
    draws = []
    for seed in range(2000):
        s = _polysketch._sketch(_polysketch._polysketch(k, m, 8, np.random.default_rng(seed), np.float64), v)
        draws.append([s[i] @ s[j] for i, j in pairs])
    draws = np.array(draws)
    exact = np.array([(v[i] @ v[j]) ** k for i, j in pairs])
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) <= 5 * se + 1e-12 * np.abs(exact).max()), (mean, exact, se)
    if m == 8:
        np.testing.assert_allclose(draws, np.broadcast_to(exact, draws.shape), rtol=1e-14)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("depth", [1, 3])
def test_sketch_kernel_against_kernel_fn(depth, get, parameterization):
    """Bias-free ReLU, 150 points in d = 16 (a zero and a duplicated one), mean over 3 seeds of
    ‖Φ Φᵀ − K‖_F/‖K‖_F: below 0.05 at n_features = 4096 (measured 0.005–0.030), and below 0.4× the
    error at 256 (measured 0.23–0.28×: the sketch's spread falls like m^(−1/2), a factor 4 over 16×
    the features, above the floor of the polynomial's bias)."""
    kernel_fn, x = _relu_net(depth, parameterization), feature_points(150, 16)
    k = kernel_fn(x, None, get)
    err = [np.mean([gram_error(random_features(kernel_fn, 16, get, m, method="sketch", seed=s).transform(x), k)
                    for s in range(3)]) for m in (256, 4096)]
    assert err[1] < 0.05, err
    assert err[1] < 0.4 * err[0], err


def test_edge_rows_and_batches():
    """Zero rows give zero features, duplicated rows the same ones, a row's features do not depend on
    its batch (N = 1, N = 0 too), and d = 1 (cosines ±1 only) is exact to the fit."""
    kernel_fn, x = _relu_net(2), feature_points(30)
    fm = random_features(kernel_fn, 6, "ntk", 300, method="sketch", seed=3)
    phi = fm.transform(x)
    assert phi.shape == (30, fm.n_out)
    assert fm.n_out <= 300
    np.testing.assert_array_equal(phi[5], 0.0)
    np.testing.assert_array_equal(phi[3], phi[1])
    np.testing.assert_array_equal(fm.transform(x[7:8]), phi[7:8])
    assert fm.transform(x[:0]).shape == (0, fm.n_out)
    x1 = np.array([[2.0], [-0.5], [0.0]])
    fm1 = random_features(kernel_fn, 1, "ntk", 64, method="sketch", seed=0)
    assert fm1.poly_error < 1e-12
    phi1 = fm1.transform(x1)
    assert_close(phi1 @ phi1.T, kernel_fn(x1, None, "ntk"), 1e-12, "d = 1")


def test_float32_agrees_with_float64():
    """The same draw computed in float32: Φ Φᵀ within float32 rounding of float64's."""
    kernel_fn, x = _relu_net(3), feature_points(20, 16)
    phi64 = random_features(kernel_fn, 16, "ntk", 512, method="sketch", seed=1).transform(x)
    fm32 = random_features(kernel_fn, 16, "ntk", 512, method="sketch", seed=1, dtype=np.float32)
    phi32 = fm32.transform(x.astype(np.float32))
    assert phi32.dtype == fm32.dtype == np.float32
    assert_close(phi32 @ phi32.T, phi64 @ phi64.T, 1e-5, "float32")


def test_seed_reproduces_the_map():
    kernel_fn, x = _relu_net(2), feature_points()
    a = random_features(kernel_fn, 6, "ntk", 128, method="sketch", seed=7).transform(x)
    np.testing.assert_array_equal(a, random_features(kernel_fn, 6, "ntk", 128, method="sketch", seed=7).transform(x))
    np.testing.assert_array_equal(
        a, random_features(kernel_fn, 6, "ntk", 128, method="sketch", seed=np.random.default_rng(7)).transform(x))
    assert not np.array_equal(a, random_features(kernel_fn, 6, "ntk", 128, method="sketch", seed=8).transform(x))


@pytest.mark.parametrize("n_features", [10, 100, 1025])
def test_output_width_is_at_most_n_features(n_features):
    fm = random_features(_relu_net(3), 6, "ntk", n_features, method="sketch", seed=0)
    assert n_features - 9 <= fm.n_out <= n_features  # each degree's floor leaves less than one feature


def test_nngp_of_standard_parameterization_with_zero_bias_is_homogeneous():
    """A bias parameter at b_std = 0 adds nothing to Σ (only Θ's 1 in the 'standard' NTK): accepted for the NNGP."""
    kernel_fn, x = stax.fc_network(2, "relu", np.sqrt(2), 0.0, "standard")[2], feature_points(40, 6)
    fm = random_features(kernel_fn, 6, "nngp", 4096, method="sketch", seed=0)
    assert gram_error(fm.transform(x), kernel_fn(x, None, "nngp")) < 0.08


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: random_features(stax.fc_network(2, "relu", 1.0, 0.1)[2], 6, "ntk", 64, method="sketch"),
         ValueError, r"bias breaks \(b_std=0.1\); use method='random_features'"),
        (lambda: random_features(stax.fc_network(2, "relu", 1.0, 0.0, "standard")[2], 6, "ntk", 64, method="sketch"),
         ValueError, r"adds 1 to the 'standard' NTK even at b_std=0\); use method='random_features'"),
        (lambda: random_features(stax.fc_network(2, "erf", 1.0, None)[2], 6, "nngp", 64, method="sketch"),
         ValueError, r"activation 'erf'; use method='random_features'"),
        (lambda: random_features(stax.serial(stax.Dense(4, 1.0, None), stax.Dropout(0.5))[2], 6, "ntk", 64,
                                 method="sketch"), ValueError, "this network has a Dropout layer"),
        (lambda: random_features(stax.serial(stax.Relu())[2], 6, "ntk", 64, method="sketch"), ValueError, "NTK is 0"),
        (lambda: random_features(_relu_net(2), 6, "ntk", 64, method="sketch", degree=0), ValueError,
         r"degree must be an integer in \[1, 64\]; got 0"),
        (lambda: random_features(_relu_net(2), 6, "ntk", 64, method="sketch", degree=65), ValueError,
         r"degree must be an integer in \[1, 64\]; got 65"),
        (lambda: random_features(_relu_net(2), 6, "ntk", 64, method="sketch", degree=2.0), TypeError,
         "degree must be an integer"),
        (lambda: random_features(_relu_net(2), 6, "ntk", 64, degree=4), ValueError,
         "degree is the polynomial degree of method='sketch'; method='random_features' takes none"),
        (lambda: random_features(_relu_net(3), 6, "ntk", 4, method="sketch"), ValueError,
         "n_features=4 is too small for this sketch"),
        (lambda: random_features(_relu_net(2), 6, "ntk", 64, method="sketch").transform(np.ones((3, 5))),
         ValueError, r"x must have 6 features \(the map's d\); got shape \(3, 5\)"),
    ],
    ids=["bias", "standard_zero_bias", "erf", "dropout", "zero_ntk", "degree_0", "degree_65", "degree_float",
         "degree_without_sketch", "too_small", "x_width"],
)
def test_bad_input_is_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()
