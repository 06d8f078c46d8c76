"""fastntk.features: random features of the NNGP and NTK against kernel_fn of the same network."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close, assert_rounding, feature_points, gram_error

from fastntk import _reference, _tiles, activations, features, solvers, stax
from fastntk.features import random_features


@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_one_hidden_layer_is_unbiased(act, parameterization, get):
    """E[Φ Φᵀ] = K exactly for one hidden layer: the mean over 300 seeds is within 5 standard errors
    (from the draws themselves; about 1 in 10⁶ for a normal mean) of kernel_fn, entry by entry."""
    x = feature_points(6)
    kernel_fn = stax.fc_network(1, act, 1.5, 0.2, parameterization, width=50)[2]
    k = kernel_fn(x, None, get)
    draws = np.stack([(lambda p: p @ p.T)(random_features(kernel_fn, 6, get, 64, seed=s).transform(x))
                      for s in range(300)])
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - k) <= 5 * se + 1e-12 * np.abs(k).max())


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_error_of_one_draw_falls_like_inverse_sqrt_m(get):
    """‖Φ Φᵀ − K‖_F/‖K‖_F, mean over 3 seeds, against m = 256 … 4096 (depth 3, ReLU): a log–log slope
    of −1/2 (the Monte-Carlo rate), within ±0.15 (three seeds leave that much spread)."""
    x = feature_points(40, 8)
    kernel_fn = stax.fc_network(3, "relu", np.sqrt(2), 0.1)[2]
    k = kernel_fn(x, None, get)
    ms = np.array([256, 512, 1024, 2048, 4096])
    err = [np.mean([gram_error(random_features(kernel_fn, 8, get, m, seed=s).transform(x), k) for s in range(3)])
           for m in ms]
    slope = np.polyfit(np.log(ms), np.log(err), 1)[0]
    assert -0.65 <= slope <= -0.35, (slope, err)
    assert err[-1] < (0.08 if get == "nngp" else 0.15)


@pytest.mark.parametrize("p", [6, 8])
def test_projections_are_gaussian_columns_orthogonal_in_blocks(p, monkeypatch):
    """G (p, m) of an activation: columns orthogonal within each block of p, of chi lengths; the QR
    path for narrow inputs, and SORF (three rounds of signs and a Walsh–Hadamard transform on the
    input padded to 2^k) for wide ones, equal to its explicit matrix product."""
    rng = np.random.default_rng(0)
    qr = features._Projection(p, 20, rng, np.float64)
    g = qr(np.eye(p))
    for start in range(0, 20, p):
        block = g[:, start:start + p]
        gram = block.T @ block
        assert_close(gram, np.diag(np.diag(gram)), 1e-12, "orthogonal columns (QR)")
    monkeypatch.setattr(features, "ORTHOGONAL_QR_MAX", 4)
    sorf = features._Projection(p, 20, rng, np.float64)
    P = features.next_pow2(p)
    explicit = []
    for signs, lengths in zip(sorf.signs, sorf.lengths):
        m = np.eye(P)[:p]
        for s in signs:
            m = _reference.fwht(m * s)
        explicit.append(m * lengths)
    assert_close(sorf(np.eye(p)), np.hstack(explicit)[:, :20], 1e-13, "SORF = its explicit product")
    if p == P:  # unpadded: exactly orthogonal columns within a block
        block = sorf(np.eye(p))[:, :P]
        assert_close(block.T @ block, np.diag(sorf.lengths[0] ** 2 * P**3), 1e-12, "orthogonal columns (SORF)")


@pytest.mark.parametrize("m", [6, 7])
def test_fourier_sketch_is_unbiased_for_the_tensor_product(m):
    """E_S[S(a⊗b)·S(a'⊗b')] = (a·a')(b·b'): mean over 4000 draws within 5 standard errors, for even m
    (Re and Im of m/2 products) and odd m (one more real product), inputs of widths that pad."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 5)), rng.standard_normal((2, 3))
    exact = (a @ a.T) * (b @ b.T)
    draws = []
    for s in range(4000):
        sk = features._FourierSketch(5, 3, m, np.random.default_rng(s), np.float64)
        out = sk(a, b)
        assert out.shape == (2, m)
        draws.append(out @ out.T)
    draws = np.array(draws)
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) <= 5 * se), (mean, exact, se)


def test_fourier_sketch_equals_the_full_spectrum_product():
    """The half-spectrum (rfft) computation equals sampling the full DFT of the signed, padded rows."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 7)), rng.standard_normal((4, 5))
    sk = features._FourierSketch(7, 5, 9, rng, np.float64)
    full = [np.fft.fft(np.pad(v * sg[: v.shape[1]], ((0, 0), (0, side - v.shape[1]))), axis=1)
            for v, sg, side in zip((a, b), sk.signs, sk.sides)]
    # back to full indices: a conjugated half-spectrum entry is the full spectrum's at side − index
    idx = [np.where(sign < 0, side - h, h) for h, sign, side in zip(sk.half, sk.imag_sign, sk.sides)]
    z = full[0][:, idx[0]] * full[1][:, idx[1]] * np.sqrt(2 / 9)
    z0 = full[0][:, :1] * full[1][:, :1] * np.sqrt(2 / 9)  # odd m: the zero frequencies' product
    want = np.hstack([z.real, z.imag, z0.real / np.sqrt(2)])
    assert_close(sk(a, b), want, 1e-13, "rfft = full DFT")


#: Activations with a pointwise φ, by name (the registry's constructors with their defaults).
POINTWISE = [name for name in activations.ACTIVATIONS if name not in ("exp_normalized", "identity")]


@pytest.mark.filterwarnings("ignore:Numba could not compile:RuntimeWarning")  # sigmoid's kernel_fn: NumPy quadrature
@pytest.mark.parametrize("name", POINTWISE)
def test_every_activation_through_random_features(name):
    """Each activation of the registry (closed form or quadrature), depth 2, W_std = 0.6, m = 4096:
    Φ Φᵀ within 15% of kernel_fn's NTK and NNGP, normwise (measured: at most 11%, Gabor's NTK;
    one draw's error is ~m^(−1/2) times a constant that grows with φ's tails and curvature: exp at
    W_std = 1.2 has kernels of 1e28 here, beyond any Monte-Carlo estimate of this size)."""
    x = feature_points(10, 5) * 0.7
    kernel_fn = stax.fc_network(2, name, 0.6, 0.1)[2]
    for get in ("nngp", "ntk"):
        k = kernel_fn(x, None, get)
        assert gram_error(random_features(kernel_fn, 5, get, 4096, seed=0).transform(x), k) < 0.15, get


def test_features_of_a_given_point_do_not_depend_on_the_batch():
    x = feature_points(30)
    fm = random_features(stax.fc_network(2)[2], 6, "ntk", 256, seed=3)
    assert_rounding(fm.transform(x[7:9]), fm.transform(x)[7:9], "a batch of 2")  # BLAS blocks rows by batch
    phi = fm.transform(x)
    np.testing.assert_array_equal(phi[3], phi[1])  # duplicated points, identical features
    assert fm.transform(x[:0]).shape == (0, fm.n_out)


def test_seed_reproduces_the_map():
    kernel_fn, x = stax.fc_network(2)[2], feature_points()
    a = random_features(kernel_fn, 6, "ntk", 128, seed=7).transform(x)
    np.testing.assert_array_equal(a, random_features(kernel_fn, 6, "ntk", 128, seed=7).transform(x))
    np.testing.assert_array_equal(
        a, random_features(kernel_fn, 6, "ntk", 128, seed=np.random.default_rng(7)).transform(x))
    assert not np.array_equal(a, random_features(kernel_fn, 6, "ntk", 128, seed=8).transform(x))


def test_float32_agrees_with_float64():
    """The same draw (parameters drawn in float64, then cast), computed in float32: Φ Φᵀ within
    float32 rounding of float64's (erf: no kink where a rounding could flip φ')."""
    kernel_fn, x = stax.fc_network(3, "erf", 1.3, 0.1)[2], feature_points()
    phi64 = random_features(kernel_fn, 6, "ntk", 512, seed=1).transform(x)
    phi32 = random_features(kernel_fn, 6, "ntk", 512, seed=1, dtype=np.float32).transform(x.astype(np.float32))
    assert phi32.dtype == np.float32
    assert_close(phi32 @ phi32.T, phi64 @ phi64.T, 1e-5, "float32")


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_output_width_is_at_most_n_features(get):
    for depth in (1, 3):
        for n in (16, 100, 1025):
            fm = random_features(stax.fc_network(depth)[2], 6, get, n, seed=0)
            assert fm.n_out <= n and fm.transform(feature_points()).shape == (12, fm.n_out)
            assert fm.n_out >= n - 2  # the budget is used


def test_a_network_without_activations_has_exact_linear_features():
    kernel_fn, x = stax.serial(stax.Dense(8, 1.3, 0.2), stax.Dense(1, 0.7, 0.3))[2], feature_points()
    for get in ("nngp", "ntk"):
        fm = random_features(kernel_fn, 6, get, 64, seed=0)
        phi = fm.transform(x)
        assert_rounding(phi @ phi.T, kernel_fn(x, None, get), get)


def test_feature_ridge_is_kernel_ridge_with_the_feature_kernel():
    rng = np.random.default_rng(0)
    phi, y = rng.standard_normal((30, 12)), rng.standard_normal((30, 2))
    w = solvers.feature_ridge(phi, y, 1e-2)
    k = phi @ phi.T
    alpha = np.linalg.solve(k + 1e-2 * np.trace(k) / 30 * np.eye(30), y)
    np.testing.assert_allclose(phi @ w, k @ alpha, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(solvers.feature_ridge(phi, y, 0.0), np.linalg.lstsq(phi, y, rcond=None)[0])
    with pytest.raises(ValueError, match="y must have 30 rows"):
        solvers.feature_ridge(phi, y[:5])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda kf: random_features(kf, 6, "ntk", 64, method="sketchy"), ValueError, "method must be one of"),
        (lambda kf: random_features(kf, 6, "both", 64), ValueError, "get must be 'nngp' or 'ntk'"),
        (lambda kf: random_features(kf, 0, "ntk", 64), ValueError, "d must be an integer >= 1"),
        (lambda kf: random_features(kf, 6, "ntk", 1), ValueError, "n_features must be an integer >= 2"),
        (lambda kf: random_features(kf, 6, "ntk", 64, seed="x"), TypeError, "seed must be an int"),
        (lambda kf: random_features(kf, 6, "ntk", 64).transform(np.ones((3, 5))), ValueError,
         r"x must have 6 features \(the map's d\); got shape \(3, 5\)"),
        (lambda kf: random_features(kf, 6, "ntk", 64).transform(np.full((3, 6), np.nan)), ValueError, "x"),
        (lambda kf: random_features(stax.serial(stax.Dense(4), stax.Dropout(0.5))[2], 6, "ntk", 64), ValueError,
         "this network has a Dropout layer"),
        (lambda kf: random_features(stax.serial(stax.Dense(4), stax.ExpNormalized())[2], 6, "ntk", 64),
         ValueError, "'exp_normalized' is a kernel without a pointwise function"),
        (lambda kf: random_features(stax.serial(stax.Relu())[2], 6, "ntk", 64), ValueError, "NTK is 0"),
        (lambda kf: random_features(stax.serial(stax.Dense(4, 1.0, 0.1))[2], 6, "ntk", 4), ValueError,
         "n_features=4 is too small"),
    ],
    ids=["method", "get", "d", "n_features", "seed", "x_width", "x_nan", "dropout", "no_phi", "zero_ntk", "too_small"],
)
def test_bad_input_is_refused(call, error, match):
    with pytest.raises(error, match=match):
        call(stax.fc_network(2)[2])


@pytest.mark.parametrize("method", ["random_features", "sketch"])
def test_out_receives_the_same_features_block_by_block(method, tmp_path, monkeypatch):
    """transform(x, out=) writes transform(x) into an array or a file-backed memmap, also when the rows
    go through many blocks (1-row blocks here: BLAS may round a one-row product differently, so to
    float32 rounding there)."""
    kernel_fn, x = stax.fc_network(2, "relu", 2**0.5, None)[2], feature_points(40)
    fm = random_features(kernel_fn, 6, "ntk", 256, method=method, seed=0, dtype=np.float32)
    xs = x.astype(np.float32)
    phi = fm.transform(xs)
    out = np.empty_like(phi)
    assert fm.transform(xs, out=out) is out
    np.testing.assert_array_equal(out, phi)
    monkeypatch.setattr(_tiles, "BLOCK_BYTES", 1)  # read by fill_rows at each call
    path = tmp_path / "phi.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=phi.shape)
    fm.transform(xs, out=mm)
    del mm
    assert_close(np.load(path), phi, 1e-6, "1-row blocks")  # on disk: flushed as the blocks completed


def _read_only(a):
    a.setflags(write=False)
    return a


@pytest.mark.parametrize(
    ("make_out", "match"),
    [
        (lambda n: np.empty((12, n + 1)), r"out must be an ndarray of shape \(12, \d+\) and dtype float64; got "
                                          r"ndarray of shape \(12, \d+\)"),
        (lambda n: "zeros", "out must be an ndarray of shape"),
        (lambda n: np.empty((12, n), np.float32), r"dtype float64; got ndarray of shape \(12, \d+\) and dtype float32"),
        (lambda n: np.empty((n, 12)).T, "out must be writeable with contiguous rows"),
        (lambda n: _read_only(np.empty((12, n))), "out must be writeable with contiguous rows"),
    ],
    ids=["shape", "type", "dtype", "columns", "read_only"],
)
def test_bad_out_is_refused(make_out, match):
    fm = random_features(stax.fc_network(2)[2], 6, "ntk", 64, seed=0)
    with pytest.raises(ValueError, match=match):
        fm.transform(feature_points(), out=make_out(fm.n_out))


def test_out_overlapping_x_is_refused():
    fm = random_features(stax.fc_network(2)[2], 6, "ntk", 64, seed=0)
    buffer = np.zeros(12 * fm.n_out)
    x = buffer[:72].reshape(12, 6)  # a contiguous x (used as it is) inside out
    x[...] = feature_points()
    with pytest.raises(ValueError, match="out shares memory with x"):
        fm.transform(x, out=buffer.reshape(12, fm.n_out))


def test_the_scale_benchmark_runs_small(tmp_path, capsys):
    """benchmarks/features_at_scale.py (the N = 10⁶ run of the README) at a small size: it writes through
    a memmap, reads back, reports, and removes its file."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "features_at_scale.py"
    spec = importlib.util.spec_from_file_location("features_at_scale", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--N", "3000", "--m", "64", "--check", "200", "--method", "random_features", "sketch",
                 "--dir", str(tmp_path)])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[1] for r in rows] == ["random_features", "sketch"]
    assert all(0 < float(r[-1]) < 1 for r in rows)  # the relative error on the checked points
    assert not list(tmp_path.iterdir())
