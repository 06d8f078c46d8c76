"""fastntk.stax: neural-tangents fixtures, closed forms, identities, the Monte Carlo width
limit, apply_fn/init_fn conventions and bad input."""

import warnings

import numpy as np
import pytest
from conftest import (
    DATA,
    RELU_FAMILY,
    RTOL,
    activation_catalogue,
    assert_close,
    assert_rounding,
    fc_net,
    fixture_paths,
    has_coincident_pairs,
    load_fixture,
    normwise_error,
)

from fastntk import stax

ACTIVATIONS = activation_catalogue()
INFINITE = fixture_paths("infinite")
EMPIRICAL = fixture_paths("empirical")

#: The one fixture whose ntk_diag* neural-tangents computes with cancellation (see
#: test_ntk_diagonal_where_neural_tangents_cancels).
NT_CANCELLATION_CASE = DATA / "infinite" / "inf_special_scale100_erf_L2_W1.0_b0.3_ntk.npz"
assert NT_CANCELLATION_CASE in INFINITE


def _net(spec):
    return eval(spec["stax"], {"stax": stax})


def _ntk_rtol(spec, x1, x2=None):
    """1e-7 for ReLU-family NTKs with coincident input pairs (neural-tangents' own θ
    rounding, tests/data/README.md "Accuracy"), 1e-12 otherwise."""
    relu = spec["activation"]["name"] in RELU_FAMILY
    return RTOL["float64_coincident_relu_ntk" if relu and has_coincident_pairs(x1, x2) else "float64"]


# --- neural-tangents fixtures ---------------------------------------------------------


@pytest.mark.parametrize("path", INFINITE, ids=lambda p: p.stem)
def test_infinite_fixture(path):
    z, spec = load_fixture(path)
    x2 = z.get("x2")
    k = _net(spec).kernel_fn(z["x1"], x2)
    assert_close(k.nngp, z["nngp"], RTOL["float64"], "nngp")
    assert_close(k.ntk, z["ntk"], _ntk_rtol(spec, z["x1"], x2), "ntk")
    assert_close(k.cov1, z["nngp_diag1"], RTOL["float64"], "cov1")
    if x2 is None:
        assert k.cov2 is None
    else:
        assert_close(k.cov2, z["nngp_diag2"], RTOL["float64"], "cov2")


#: (fixture, input name, diagonal name) for every ntk_diag* array, but the cancellation case.
DIAGONALS = [
    pytest.param(path, x, f"ntk_diag{i}", f"nngp_diag{i}", id=f"{path.stem}-{i}")
    for path in INFINITE
    if path != NT_CANCELLATION_CASE
    for i, x in ((1, "x1"), (2, "x2"))
    if f"ntk_diag{i}" in load_fixture(path)[0]
]


@pytest.mark.parametrize(("path", "x", "ntk_diag", "nngp_diag"), DIAGONALS)
def test_infinite_fixture_diagonal(path, x, ntk_diag, nngp_diag):
    """kernel_fn(x, None, 'ntk', diagonal=True) against diag(kernel_fn(x, None, 'ntk'))."""
    z, spec = load_fixture(path)
    kernel_fn = _net(spec).kernel_fn
    assert_close(kernel_fn(z[x], None, "ntk", diagonal=True), z[ntk_diag], _ntk_rtol(spec, z[x]), ntk_diag)
    assert_close(kernel_fn(z[x], None, "nngp", diagonal=True), z[nngp_diag], RTOL["float64"], nngp_diag)


def _mpmath_diagonal(x, spec):
    """Σ(x, x), Θ(x, x) of an Erf network (fixture spec) in 40-digit arithmetic."""
    import mpmath as mp

    with mp.workdps(40):
        W2, b2 = mp.mpf(spec["W_std"]) ** 2, (0 if spec["b_std"] is None else mp.mpf(spec["b_std"]) ** 2)
        act = spec["activation"]
        a, b, c = (mp.mpf(act[p]) for p in "abc")
        k, t = mp.fsum(mp.mpf(float(v)) ** 2 for v in x) / len(x), mp.mpf(0)
        assert spec["parameterization"] == "ntk"
        for layer in range(spec["L"] + 1):
            k = W2 * k + b2  # Dense, ntk parameterization
            t = k + W2 * t
            if layer < spec["L"]:  # Erf at ρ = 1: den = √((1 + 2b²K)² − 4b⁴K²) = √(1 + 4b²K)
                kb = b**2 * k
                den = mp.sqrt(1 + 4 * kb)
                t = t * a**2 * b**2 * (4 / mp.pi) / den
                k = a**2 * (2 / mp.pi) * mp.atan2(2 * kb, den) + c**2
        return float(k), float(t)


@pytest.mark.parametrize("i", [1, 2])
def test_ntk_diagonal_where_neural_tangents_cancels(i):
    """inf_special_scale100_erf: inputs scaled by 100, so Σ(x, x) ~ 1e4 and the erf
    denominator (1 + 2K)² − 4K² (= 1 + 4K) loses ~log10(4K²) ≈ 9 digits when neural-tangents
    forms it as a difference of products; its ntk_diag* are off by up to 2.8e-12. fastntk
    computes 1 + 2(K + K) + 4(K·K − K²) and is exact: it is held to 1e-14 against a
    40-digit mpmath evaluation of the same recursion, and to 5e-12 against the fixture."""
    z, spec = load_fixture(NT_CANCELLATION_CASE)
    x = z[f"x{i}"]
    exact = np.array([_mpmath_diagonal(row, spec) for row in x])
    k = _net(spec).kernel_fn(x, None, ("nngp", "ntk"), diagonal=True)
    assert_close(k.ntk, exact[:, 1], RTOL["mpmath"], "ntk vs mpmath")
    assert_close(k.nngp, exact[:, 0], RTOL["mpmath"], "nngp vs mpmath")
    assert_close(k.ntk, z[f"ntk_diag{i}"], RTOL["nt_erf_cancellation"], "ntk vs neural-tangents")
    assert_close(z[f"nngp_diag{i}"], exact[:, 0], RTOL["float64"], "fixture nngp vs mpmath")


def test_neural_tangents_cancellation_is_real():
    """Documents why the case above needs its own tolerance: the fixture itself is off."""
    z, spec = load_fixture(NT_CANCELLATION_CASE)
    exact = np.array([_mpmath_diagonal(row, spec)[1] for row in z["x1"]])
    assert normwise_error(z["ntk_diag1"], exact) > RTOL["float64"]


@pytest.mark.parametrize("path", INFINITE, ids=lambda p: p.stem)
def test_infinite_fixture_float32(path):
    z, spec = load_fixture(path)
    x1, x2 = z["x1"], z.get("x2")
    kernel_fn = _net(spec).kernel_fn
    k64 = kernel_fn(x1, x2)
    k32 = kernel_fn(x1.astype(np.float32), None if x2 is None else x2.astype(np.float32))
    d32 = kernel_fn(x1.astype(np.float32), None, diagonal=True)
    for name in ("nngp", "ntk", "cov1", "cov2"):
        a32, a64 = getattr(k32, name), getattr(k64, name)
        assert (a32 is None) == (a64 is None) == (name == "cov2" and x2 is None)
        if a32 is not None:
            assert a32.dtype == np.float32, name
            assert_close(a32, a64, RTOL["float32_vs_float64"], name)
    for name in ("nngp", "ntk"):
        assert getattr(d32, name).dtype == np.float32
        assert_close(getattr(d32, name), np.diag(kernel_fn(x1, None, name)), RTOL["float32_vs_float64"], name)


# --- closed form ----------------------------------------------------------------------


@pytest.mark.parametrize("self_kernel", [False, True], ids=["x1_x2", "x1_None"])
def test_one_hidden_layer_relu_is_the_arccos_kernel(self_kernel):
    """Dense(m, 1, None), Relu, Dense(1, 1, None), ntk parameterization (Cho & Saul 2009;
    Jacot et al. 2018): with θ the angle between x and x',
    Σ = ‖x‖‖x'‖/(2πd)·(sin θ + (π − θ) cos θ),  Θ = Σ + (x·x'/d)(π − θ)/(2π)."""
    rng = np.random.default_rng(3)
    d = 6
    x1, x2 = rng.standard_normal((9, d)), rng.standard_normal((7, d))
    x2[0], x2[1], x2[2] = -x1[0], 2.5 * x1[1], x1[2]  # θ = π, 0 (parallel), 0 (equal)
    x2 = x1 if self_kernel else x2
    n1, n2 = np.linalg.norm(x1, axis=1), np.linalg.norm(x2, axis=1)
    u1, u2 = x1 / n1[:, None], x2 / n2[:, None]
    # θ = 2·atan(‖u − v‖/‖u + v‖) for unit u, v (Kahan): accurate at θ → 0 and θ → π.
    theta = 2 * np.arctan2(
        np.linalg.norm(u1[:, None] - u2[None], axis=-1), np.linalg.norm(u1[:, None] + u2[None], axis=-1)
    )
    nngp = np.outer(n1, n2) / (2 * np.pi * d) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    ntk = nngp + (x1 @ x2.T / d) * (np.pi - theta) / (2 * np.pi)
    net = stax.serial(stax.Dense(512, W_std=1.0, b_std=None), stax.Relu(), stax.Dense(1, W_std=1.0, b_std=None))
    k = net.kernel_fn(x1, None if self_kernel else x2)
    assert_close(k.nngp, nngp, 1e-13, "nngp")
    assert_close(k.ntk, ntk, 1e-13, "ntk")


@pytest.mark.parametrize("b_std", [None, 0.0, 0.7])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_single_dense_layer_is_the_linear_kernel(parameterization, b_std):
    """Dense alone: Σ = W_std²·x·x'/d + b_std²; Θ = Σ ('ntk'), Θ = x·x' + [bias] ('standard',
    the weights' gradient is x·x' and each bias contributes 1)."""
    rng = np.random.default_rng(4)
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    W_std, b2 = 1.7, 0.0 if b_std is None else b_std**2
    k = stax.Dense(3, W_std, b_std, parameterization=parameterization).kernel_fn(x1, x2)
    nngp = W_std**2 * (x1 @ x2.T) / 3 + b2
    ntk = {"ntk": nngp, "standard": x1 @ x2.T + (b_std is not None)}[parameterization]
    assert_close(k.nngp, nngp, RTOL["float64"], "nngp")
    assert_close(k.ntk, ntk, RTOL["float64"], "ntk")


# --- identities -----------------------------------------------------------------------


def _points(n=24, d=5, seed=5):
    """Random points with a duplicate, a zero row, an antipodal pair and a parallel pair."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    x[3], x[5], x[9], x[11] = x[7], 0.0, -x[10], 3.0 * x[12]
    return x


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_self_kernel_is_symmetric_and_psd(act):
    """kernel_fn(x, None) is exactly symmetric and PSD. A deg×deg quadrature is not itself
    a PSD kernel (its nodes depend on the pair), so its eigenvalues may dip below 0 by the
    quadrature error: those get 1e-8·trace instead of 1e-12·trace."""
    case = ACTIVATIONS[act]
    k = fc_net(case.layer, 3, "ntk", 0.2).kernel_fn(_points(), None)
    for name in ("nngp", "ntk"):
        a = getattr(k, name)
        np.testing.assert_array_equal(a, a.T, err_msg=name)
        bound = 1e-12 if case.exact_dual else 1e-8
        assert np.linalg.eigvalsh(a).min() >= -bound * np.trace(a), name


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_self_kernel_equals_kernel_with_itself(act):
    """kernel_fn(x, None) == kernel_fn(x, x) (upper triangles: a quadrature's lower
    triangle differs by its error, see test_kernel_with_itself_is_symmetric). Coincident
    ReLU pairs need no looser tolerance: both paths take θ = 0 there."""
    case = ACTIVATIONS[act]
    x = _points()
    kernel_fn = fc_net(case.layer, 3, "standard", 0.2).kernel_fn
    a, b = kernel_fn(x, None), kernel_fn(x, x)
    assert_close(np.triu(a.nngp), np.triu(b.nngp), case.rtol, "nngp")
    assert_close(np.triu(a.ntk), np.triu(b.ntk), case.rtol, "ntk")
    # x·x from the Gram (x2 None) or from a row-wise dot product: equal to rounding.
    np.testing.assert_allclose(a.cov1, b.cov2, rtol=1e-14)


@pytest.mark.parametrize("act", [act for act, case in ACTIVATIONS.items() if case.exact_dual])
def test_kernel_with_itself_is_symmetric(act):
    """With exact dual kernels K(xᵢ, xⱼ) = K(xⱼ, xᵢ) to rounding (the Gram entries of the
    two triangles may round differently in BLAS)."""
    x = _points()
    k = fc_net(ACTIVATIONS[act].layer, 3, "ntk", 0.2).kernel_fn(x, x)
    assert_close(k.nngp, k.nngp.T, 1e-14, "nngp")
    assert_close(k.ntk, k.ntk.T, 1e-14, "ntk")


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_diagonal_equals_diag_of_full(act):
    case = ACTIVATIONS[act]
    x = _points()
    kernel_fn = fc_net(case.layer, 4, "ntk", 0.2).kernel_fn
    full, diag = kernel_fn(x, None), kernel_fn(x, None, diagonal=True)
    assert diag.nngp.shape == diag.ntk.shape == diag.cov1.shape == (len(x),)
    assert diag.cov2 is None
    assert_close(diag.nngp, np.diag(full.nngp), case.rtol, "nngp")
    assert_close(diag.ntk, np.diag(full.ntk), case.rtol, "ntk")
    np.testing.assert_allclose(diag.cov1, full.cov1, rtol=1e-14)  # x·x from einsum vs the Gram


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_are_not_mutated(dtype):
    rng = np.random.default_rng(6)
    x1, x2 = rng.standard_normal((6, 4)).astype(dtype), rng.standard_normal((10, 8)).astype(dtype)[:, ::2]
    copies = x1.copy(), x2.copy()
    kernel_fn = fc_net(stax.Erf(), 2).kernel_fn
    kernel_fn(x1, x2)
    kernel_fn(x1, None, "ntk")
    kernel_fn(x1, None, diagonal=True)
    kernel_fn(x2, x1, "nngp", dtype=np.float64)
    np.testing.assert_array_equal(x1, copies[0])
    np.testing.assert_array_equal(x2, copies[1])


def test_get_none_returns_kernel_with_all_fields():
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    kernel_fn = fc_net(stax.Relu(), 2).kernel_fn
    k = kernel_fn(x1, x2)
    assert isinstance(k, stax.Kernel)
    assert (k.nngp.shape, k.ntk.shape, k.cov1.shape, k.cov2.shape) == ((4, 2), (4, 2), (4,), (2,))
    k0 = kernel_fn(x1)
    assert k0.cov2 is None
    assert k0.nngp.shape == k0.ntk.shape == (4, 4)
    nngp, ntk = k0  # a namedtuple-like tuple (nngp, ntk), as a tuple get returns
    assert nngp is k0.nngp and ntk is k0.ntk and k0._fields == ("nngp", "ntk")


def test_one_kernel_type_whatever_get_is():
    import pickle

    x = np.random.default_rng(7).standard_normal((4, 3))
    kernel_fn = fc_net(stax.Relu(), 2).kernel_fn
    for get in (None, ("ntk",), ("ntk", "nngp")):
        k = kernel_fn(x, None, get)
        assert type(k) is stax.Kernel and k.cov1.shape == (4,)
        again = pickle.loads(pickle.dumps(k))
        assert again._fields == k._fields and np.array_equal(again.cov1, k.cov1)
    with pytest.raises(AttributeError, match=r"this Kernel holds \('ntk',\)"):
        kernel_fn(x, None, ("ntk",)).nngp


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_get_string_returns_that_array(get):
    x = np.random.default_rng(8).standard_normal((4, 3))
    kernel_fn = fc_net(stax.Gelu(), 2).kernel_fn
    res = kernel_fn(x, None, get)
    assert type(res) is np.ndarray
    assert_rounding(res, getattr(kernel_fn(x, None), get), get)  # without the NTK: another C++ template instance


@pytest.mark.parametrize("get", [("ntk", "nngp"), ("nngp", "ntk"), ("ntk",), ["nngp", "ntk"]], ids=str)
def test_get_tuple_returns_namedtuple_in_that_order(get):
    x = np.random.default_rng(9).standard_normal((4, 3))
    kernel_fn = fc_net(stax.Sin(), 2).kernel_fn
    res = kernel_fn(x, None, get)
    assert isinstance(res, tuple)
    assert res._fields == tuple(get)
    full = kernel_fn(x, None)
    for name, value in zip(get, res):
        assert_rounding(value, getattr(full, name), name)


def test_identity_layers_are_no_ops():
    x = np.random.default_rng(10).standard_normal((5, 3))
    plain = stax.serial(stax.Dense(4, 1.3, 0.1), stax.Relu(), stax.Dense(1, 1.3, 0.1))
    padded = stax.serial(stax.Identity(), stax.Dense(4, 1.3, 0.1), stax.Identity(), stax.Relu(),
                         stax.Identity(), stax.Dense(1, 1.3, 0.1))
    for a, b in zip(plain.kernel_fn(x, None, ("nngp", "ntk")), padded.kernel_fn(x, None, ("nngp", "ntk"))):
        np.testing.assert_array_equal(a, b)


def test_by_name_activation_layer_matches_constructor():
    x = np.random.default_rng(11).standard_normal((5, 3))
    a = fc_net(stax.Activation("leaky_relu"), 2).kernel_fn(x)
    b = fc_net(stax.LeakyRelu(0.01), 2).kernel_fn(x)
    np.testing.assert_array_equal(a.ntk, b.ntk)


# --- Monte Carlo: the width-m network approaches the infinite-width NNGP -------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("parameterization", "act"),
    [("ntk", stax.Relu()), ("standard", stax.Erf())],
    ids=["ntk-relu", "standard-erf"],
)
def test_empirical_nngp_converges_at_rate_one_over_sqrt_width(parameterization, act):
    """Dense(m), act, Dense(O = m): each of the O outputs is an independent draw of the GP,
    so (1/O)·f(x1)f(x2)ᵀ estimates the NNGP with an error O(1/√m). Fit the log-log slope
    of the relative Frobenius error (RMS over 3 seeds) against m = 64 … 4096."""
    x = np.random.default_rng(12).standard_normal((8, 5))
    widths = 2 ** np.arange(6, 13)
    errors = []
    for m in widths:
        init_fn, apply_fn, kernel_fn = stax.serial(
            stax.Dense(m, 1.4, 0.1, parameterization=parameterization), act, stax.Dense(m, 1.4, 0.1, parameterization=parameterization)
        )
        nngp = kernel_fn(x, None, "nngp")
        err = []
        for seed in range(3):
            _, params = init_fn([seed, m], x.shape)
            f = apply_fn(params, x)
            err.append(np.linalg.norm(f @ f.T / m - nngp) / np.linalg.norm(nngp))
        errors.append(np.sqrt(np.mean(np.square(err))))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.65 <= slope <= -0.35, (slope, errors)
    assert errors[-1] < 0.1


# --- apply_fn and init_fn -------------------------------------------------------------


def _fixture_params(z, spec):
    """neural-tangents' params list: (W, b) per Dense (b None without bias), () per activation."""
    params = []
    for layer in range(spec["L"] + 1):
        params.append((z[f"W{layer}"], z.get(f"b{layer}")))
        if layer < spec["L"]:
            params.append(())
    return params


@pytest.mark.parametrize("path", EMPIRICAL, ids=lambda p: p.stem)
def test_apply_fn_matches_neural_tangents(path):
    z, spec = load_fixture(path)
    assert {"stax", "L", "parameterization", "b_std"} <= spec.keys()
    _, apply_fn, _ = _net(spec)
    params = _fixture_params(z, spec)
    assert (params[0][1] is None) == (spec["b_std"] is None)
    assert_close(apply_fn(params, z["x1"]), z["f1"], RTOL["float64"], "f1")
    if "x2" in z:
        assert_close(apply_fn(params, z["x2"]), z["f2"], RTOL["float64"], "f2")


@pytest.mark.parametrize("b_std", [None, 0.3])
def test_init_fn_shapes_and_standard_scaling(b_std):
    """Same seed, same draws: 'standard' stores W·W_std/√fan_in and b·b_std, 'ntk' the raw
    N(0, 1) arrays that apply_fn scales, so the two networks compute the same function."""
    x = np.random.default_rng(13).standard_normal((6, 5))
    nets = {p: stax.serial(stax.Dense(7, 1.5, b_std, parameterization=p), stax.Erf(), stax.Dense(3, 1.5, b_std, parameterization=p))
            for p in ("ntk", "standard")}
    (shape_n, p_n), (shape_s, p_s) = (nets[p].init_fn(42, x.shape) for p in ("ntk", "standard"))
    assert shape_n == shape_s == (6, 3)
    assert [W.shape for W, _ in (p_n[0], p_n[2])] == [(5, 7), (7, 3)]
    assert p_n[1] == ()
    for (Wn, bn), (Ws, bs), fan_in in ((p_n[0], p_s[0], 5), (p_n[2], p_s[2], 7)):
        np.testing.assert_allclose(Ws, Wn * 1.5 / np.sqrt(fan_in), rtol=1e-15)
        if b_std is None:
            assert bn is None
            assert bs is None
        else:
            assert bn.shape == (1, Wn.shape[1])
            np.testing.assert_allclose(bs, bn * b_std, rtol=1e-15)
    assert_close(nets["standard"].apply_fn(p_s, x), nets["ntk"].apply_fn(p_n, x), 1e-14, "f")


@pytest.mark.parametrize(
    "rng",
    [5, np.random.default_rng(5), np.random.SeedSequence(5), np.array([0, 5], np.uint32)],
    ids=["int", "Generator", "SeedSequence", "key"],
)
def test_init_fn_accepts_seeds_generators_and_keys(rng):
    net = stax.serial(stax.Dense(3), stax.Relu(), stax.Dense(2))
    _, params = net.init_fn(rng, (4, 2))
    assert params[0][0].shape == (2, 3)


def test_init_fn_is_deterministic():
    net = stax.serial(stax.Dense(3), stax.Relu(), stax.Dense(2))
    (_, a), (_, b) = net.init_fn(7, (4, 2)), net.init_fn(7, (4, 2))
    np.testing.assert_array_equal(a[0][0], b[0][0])


# --- bad input ------------------------------------------------------------------------

X = np.random.default_rng(14).standard_normal((4, 3))


def _kernel_fn():
    return fc_net(stax.Relu(), 2).kernel_fn


def _with(value, index=(1, 2)):
    x = X.copy()
    x[index] = value
    return x


@pytest.mark.parametrize(
    ("x1", "x2", "match"),
    [
        (X[0], None, r"x1 must be 2-D"),
        (X[None], X[:, :2], r"x2 must have the spatial shape and channels of x1"),
        (X, X[0], r"x2 must be 2-D"),
        (X, np.ones((2, 4)), r"x2 must have the same number of features as x1 \(d=3\); got x2.shape=\(2, 4\)"),
        (np.empty((0, 3)), None, r"x1 must be non-empty"),
        (_with(np.nan), None, r"x1 contains NaN \(first at index \(1, 2\)\)"),
        (X, _with(np.inf), r"x2 contains inf"),
        (_with(-np.inf), X, r"x1 contains inf"),
    ],
    ids=["x1_1d", "x1_3d_other_d", "x2_1d", "feature_mismatch", "empty", "nan", "inf", "minus_inf"],
)
def test_kernel_fn_rejects_bad_arrays(x1, x2, match):
    with pytest.raises(ValueError, match=match):
        _kernel_fn()(x1, x2)


@pytest.mark.parametrize(
    "dtype", [np.int64, np.int32, np.complex128, np.bool_, np.float16, np.longdouble, object],
    ids=lambda t: np.dtype(t).name,
)
@pytest.mark.parametrize("which", ["x1", "x2"])
def test_kernel_fn_rejects_non_float_dtypes(which, dtype):
    arrays = {"x1": X, "x2": X} | {which: X.astype(dtype)}
    with pytest.raises(TypeError, match=f"{which} must be (a )?float32 or float64"):
        _kernel_fn()(arrays["x1"], arrays["x2"])


def test_kernel_fn_rejects_none_x1():
    with pytest.raises(TypeError, match="x1 must be an array; got None"):
        _kernel_fn()(None)


@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex64])
def test_kernel_fn_rejects_bad_result_dtype(dtype):
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        _kernel_fn()(X, dtype=dtype)


@pytest.mark.parametrize("get", ["cov3", "Ntk2", ("nngp", "nngp"), ("ntk", "NTK"), (), ("ntk", 3), 3, {"ntk"}],
                         ids=repr)
def test_kernel_fn_rejects_bad_get(get):
    with pytest.raises(ValueError, match=r"get must be None, 'nngp', 'ntk', 'cov1', .* \(any case\) or a tuple of "
                                         "distinct ones"):
        _kernel_fn()(X, None, get)


def test_kernel_fn_rejects_diagonal_with_x2():
    with pytest.raises(ValueError, match=r"diagonal=True .* x2 must be None"):
        _kernel_fn()(X, X, diagonal=True)


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ((stax.Relu(), stax.Dense(1)), r"activation 'relu' follows 'input'"),
        ((stax.Dense(3), stax.Relu(), stax.Erf(), stax.Dense(1)), r"activation 'erf' follows 'relu'"),
        (
            (stax.Dense(3), stax.Gelu(), stax.Identity(), stax.Tanh(), stax.Dense(1)),
            r"activation 'tanh' follows 'gelu'",
        ),
    ],
    ids=["activation_first", "two_activations", "two_activations_around_identity"],
)
def test_unsupported_layer_order_raises_when_kernel_fn_is_called(layers, match):
    kernel_fn = stax.serial(*layers).kernel_fn  # building the network is fine
    with pytest.raises(ValueError, match="unsupported layer order: " + match):
        kernel_fn(X)


@pytest.mark.parametrize("W_std", [-1.0, np.nan, np.inf])
def test_dense_rejects_negative_w_std(W_std):
    with pytest.raises(ValueError, match="W_std must be finite and >= 0"):
        stax.Dense(3, W_std=W_std)


@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "sin", "tanh"])
@pytest.mark.parametrize("b_std", [0.3, None])
def test_zero_w_std_gives_the_reference_kernels(act, b_std):
    """W_std = 0 (where neural-tangents' phase diagrams start): finite, and equal to the reference."""
    from fastntk import _reference

    x = np.random.default_rng(3).standard_normal((6, 4))
    net = fc_net(ACTIVATIONS[act].layer, 2, "ntk", b_std, W_std=0.0)
    k = net.kernel_fn(x, None)
    nngp, ntk = _reference.infinite_kernels(x, None, net.kernel_fn.spec)
    assert np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all()
    assert_close(k.nngp, nngp, ACTIVATIONS[act].rtol, "nngp")
    assert_close(k.ntk, ntk, ACTIVATIONS[act].rtol, "ntk")


@pytest.mark.parametrize("b_std", [-0.1, np.nan, -np.inf])
def test_dense_rejects_negative_b_std(b_std):
    with pytest.raises(ValueError, match="b_std must be finite and >= 0"):
        stax.Dense(3, b_std=b_std)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"W_std": "1"}, "W_std"), ({"b_std": True}, "b_std")], ids=["W_std", "b_std"]
)
def test_dense_rejects_non_numbers(kwargs, match):
    with pytest.raises(TypeError, match=f"{match} must be a real number"):
        stax.Dense(3, **kwargs)


@pytest.mark.parametrize("out_dim", [0, -2, 1.5, True, "3"])
def test_dense_rejects_bad_out_dim(out_dim):
    with pytest.raises(ValueError, match="out_dim must be a positive integer"):
        stax.Dense(out_dim)


def test_dense_rejects_unknown_parameterization():
    with pytest.raises(ValueError, match="parameterization must be 'ntk' or 'standard'; got 'std'"):
        stax.Dense(3, parameterization="std")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: stax.LeakyRelu(np.nan), "alpha"),
        (lambda: stax.ABRelu(np.inf, 1.0), "a"),
        (lambda: stax.ABRelu(0.0, "1"), "b"),
        (lambda: stax.Erf(b=np.nan), "b"),
        (lambda: stax.Sin(c=np.inf), "c"),
        (lambda: stax.Cos(a=None), "a"),
    ],
    ids=["leaky_alpha", "abrelu_a", "abrelu_b", "erf_b", "sin_c", "cos_a"],
)
def test_activation_parameters_must_be_finite(make, match):
    with pytest.raises(ValueError, match=f"^{match} must be a finite real number"):
        make()


def test_activation_by_name_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"unknown activation 'rleu'; supported: 'relu', 'leaky_relu'"):
        stax.Activation("rleu")


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: stax.ElementwiseNumerical(np.sin, deg=1), ValueError, "deg must be an integer in"),
        (lambda: stax.ElementwiseNumerical("sin", deg=10), TypeError, "fn must be callable"),
        (lambda: stax.ElementwiseNumerical(np.sin, 10, df=1.0), TypeError, "df must be callable or None"),
        (lambda: stax.Elementwise(np.sin, 3), TypeError, "nngp_fn must be callable or None"),
        (lambda: stax.Elementwise(np.sin, lambda *a: 0, d_nngp_fn=2), TypeError, "d_nngp_fn must be callable"),
    ],
    ids=["deg", "fn", "df", "nngp_fn", "d_nngp_fn"],
)
def test_user_activations_reject_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("bad", [np.ones(3), (np.ones(3), None), "Dense"], ids=["array", "pair", "str"])
def test_serial_rejects_non_layers(bad):
    with pytest.raises(TypeError, match=r"serial argument 1 must be a fastntk\.stax layer"):
        stax.serial(stax.Dense(2), bad)


def test_apply_fn_rejects_wrong_params_and_features():
    init_fn, apply_fn, _ = fc_net(stax.Relu(), 2)
    _, params = init_fn(0, X.shape)
    with pytest.raises(ValueError, match=r"params must be a list with one entry per layer \(5\); got 4"):
        apply_fn(params[:-1], X)
    with pytest.raises(ValueError, match="inputs has 4 features but the first Dense layer expects 3"):
        apply_fn(params, np.ones((2, 4)))
    params[2] = (params[2][0][:, :2], params[2][1])
    with pytest.raises(ValueError, match=r"params\[2\]\[0\] \(W\) must have shape \(7, 3\); got \(7, 2\)"):
        apply_fn(params, X)
    with pytest.raises(ValueError, match=r"params\[1\] must be \(\) for a Act layer"):
        apply_fn([params[0], params[0], *params[2:]], X)


def test_apply_fn_accepts_rng_and_refuses_other_keywords():
    init_fn, apply_fn, _ = fc_net(stax.Relu(), 1)
    _, params = init_fn(0, X.shape)
    np.testing.assert_array_equal(apply_fn(params, X, rng=3), apply_fn(params, X))
    with pytest.raises(TypeError, match=r"apply_fn got unexpected keyword arguments \['mask'\]; accepted: rng"):
        apply_fn(params, X, mask=None)


def test_identity_keeps_an_empty_params_entry():
    """neural-tangents' params list has one entry per layer, () for Identity and activations."""
    init_fn, apply_fn, _ = stax.serial(stax.Dense(4), stax.Identity(), stax.Relu(), stax.Dense(2))
    _, params = init_fn(0, (3, 5))
    assert [len(p) for p in params] == [2, 0, 0, 2]
    assert apply_fn(params, np.ones((3, 5))).shape == (3, 2)


def test_nested_serial_nests_params():
    """serial(serial(a, b), c): params [[pa, pb], pc], as neural-tangents; same numbers as flat."""
    inner = stax.serial(stax.Dense(4, 1.5, 0.1), stax.Relu())
    nested = stax.serial(inner, stax.Dense(2, 1.5, 0.1))
    flat = stax.serial(stax.Dense(4, 1.5, 0.1), stax.Relu(), stax.Dense(2, 1.5, 0.1))
    (_, p_nested), (_, p_flat) = nested.init_fn(0, X.shape), flat.init_fn(0, X.shape)
    assert len(p_nested) == 2 and len(p_nested[0]) == 2
    np.testing.assert_array_equal(p_nested[0][0][0], p_flat[0][0])
    np.testing.assert_array_equal(nested.apply_fn(p_nested, X), flat.apply_fn(p_flat, X))
    np.testing.assert_array_equal(nested.kernel_fn(X, None, "ntk"), flat.kernel_fn(X, None, "ntk"))


@pytest.mark.parametrize("shape", [3, (), (4, 0), (4, -1), (-2, 3), ("4", 3), None], ids=str)
def test_init_fn_rejects_bad_input_shape(shape):
    with pytest.raises(ValueError, match=r"input_shape must be a tuple of ints such as \(N, d\) or \(-1, d\)"):
        stax.Dense(2).init_fn(0, shape)


def test_init_fn_takes_any_batch_size_as_minus_one():
    """neural-tangents' examples call init_fn(key, (-1, d)): the batch size is not needed for params."""
    net = stax.serial(stax.Dense(3), stax.Relu(), stax.Dense(2))
    out_shape, params = net.init_fn(0, (-1, 4))
    assert out_shape == (-1, 2)
    _, same = net.init_fn(0, (7, 4))
    np.testing.assert_array_equal(params[0][0], same[0][0])


def test_fc_network_names_width():
    with pytest.raises(ValueError, match="width must be a positive integer; got 0"):
        stax.fc_network(2, width=0)


@pytest.mark.parametrize("rng", ["seed", 1.5, np.array([0.5, 1.0])], ids=["str", "float", "float_key"])
def test_init_fn_rejects_bad_rng(rng):
    init_fn = stax.Dense(2).init_fn
    with pytest.raises(TypeError, match="rng must be an int seed, a numpy Generator or a key array"):
        init_fn(rng, (3, 2))


@pytest.mark.parametrize("depth", [-1, 1.5, True])
def test_fc_network_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match="depth must be a non-negative integer"):
        stax.fc_network(depth)


def test_fc_network_rejects_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'rleu'; supported: "):
        stax.fc_network(2, "rleu")


def test_fc_network_is_the_serial_network():
    x = np.random.default_rng(15).standard_normal((5, 3))
    a = stax.fc_network(2, "erf", 1.3, 0.2, "standard", width=7).kernel_fn(x, None, "ntk")
    b = stax.serial(stax.Dense(7, 1.3, 0.2, parameterization="standard"), stax.Erf(), stax.Dense(7, 1.3, 0.2, parameterization="standard"), stax.Erf(),
                    stax.Dense(1, 1.3, 0.2, parameterization="standard")).kernel_fn(x, None, "ntk")
    np.testing.assert_array_equal(a, b)


def test_top_level_names_as_neural_tangents():
    import fastntk

    assert fastntk.Kernel is stax.Kernel
    assert fastntk.NtkImplementation.STRUCTURED_DERIVATIVES == 3


def test_gelu_approximate_warns_once_that_neural_tangents_differs():
    stax._WARNED.discard("Gelu")
    with pytest.warns(UserWarning, match=r"Gelu\(approximate=True\) kernel is that of the tanh-form network"):
        stax.Gelu(approximate=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stax.Gelu(approximate=True)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def test_gelu_approximate_kernel_is_the_tanh_forms():
    """Gelu(approximate=True)'s kernel is that of the tanh form its network computes, not the
    exact GELU's (neural-tangents gives the exact one here)."""
    x = np.random.default_rng(11).standard_normal((6, 4))
    approx = fc_net(stax.Gelu(approximate=True), 2).kernel_fn(x, None)
    tanh_form = fc_net(stax.ElementwiseNumerical(_gelu_tanh, 25), 2).kernel_fn(x, None)
    exact = fc_net(stax.Gelu(), 2).kernel_fn(x, None)
    assert_close(approx.nngp, tanh_form.nngp, RTOL["quadrature_same_rule"], "nngp")
    # φ' in closed form against a central difference of φ: ~1e-10 apart.
    assert_close(approx.ntk, tanh_form.ntk, RTOL["central_difference"], "ntk")
    assert normwise_error(approx.nngp, exact.nngp) > 1e-5  # 2.5e-4 here
