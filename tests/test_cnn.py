"""Infinite-width kernels of networks with spatial layers: neural-tangents' values, the oracle, properties."""

import json
import pathlib

import numpy as np
import pytest

import fastntk
from fastntk import _reference, stax

DATA = pathlib.Path(__file__).parent / "data" / "cnn"
FILES = sorted(DATA.glob("*.npz"))


def _load(path):
    z = np.load(path)
    spec = json.loads(str(z["spec"]))
    return z, spec, eval(spec["stax"], {"stax": stax})


def _err(a, ref):
    """Normwise relative error max|a − ref| / max|ref|."""
    return np.abs(np.asarray(a) - ref).max() / np.abs(ref).max()


def _tolerance(name, array):
    """The reference README's tolerances: 1e-12 normwise; ReLU-family NTK arrays that hold coincident
    pairs 1e-7 (neural-tangents rounds the angle there to ~1e-8); the Erf NTK of inputs ×1e3 1e-9."""
    coincident = array.startswith("ntk_diag") or (array == "ntk" and ("x2none" in name or "dup" in name))
    if "relu" in name and coincident:
        return 1e-7
    if "scale1e3_erf" in name and array.startswith("ntk"):
        return 1e-9
    return 1e-12


def test_all_fixtures_are_here():
    assert len(FILES) == 39


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_matches_neural_tangents(path):
    z, spec, (_, _, kernel_fn) = _load(path)
    x1, x2 = z["x1"], (z["x2"] if "x2" in z else None)
    k = kernel_fn(x1, x2)
    got = {"nngp": k.nngp, "ntk": k.ntk, "nngp_diag1": k.cov1, "ntk_diag1": kernel_fn(x1, None, "ntk", diagonal=True)}
    if x2 is not None:
        got |= {"nngp_diag2": k.cov2, "ntk_diag2": kernel_fn(x2, None, "ntk", diagonal=True)}
    for array, value in got.items():
        assert value.shape == z[array].shape, array
        assert _err(value, z[array]) <= _tolerance(path.stem, array), (array, _err(value, z[array]))


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_oracle_matches_neural_tangents(path):
    z, spec, (_, _, kernel_fn) = _load(path)
    nngp, ntk = _reference.conv_kernels(z["x1"], z["x2"] if "x2" in z else None, kernel_fn.spec)
    assert _err(nngp, z["nngp"]) <= 1e-12
    assert _err(ntk, z["ntk"]) <= _tolerance(path.stem, "ntk")


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_coincident_pairs_match_the_oracle(path):
    """K(x, x) with its coincident pairs: the compiled driver against the oracle, tighter than neural-tangents."""
    z, spec, (_, _, kernel_fn) = _load(path)
    nngp, ntk = _reference.conv_kernels(z["x1"], None, kernel_fn.spec)
    k = kernel_fn(z["x1"], None)
    assert _err(k.nngp, nngp) <= 1e-13
    assert _err(k.ntk, ntk) <= 1e-10


def _images(n, shape=(6, 5, 2), seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape))


def _nets():
    relu = stax.Relu()
    return {
        "avgpool_edges": stax.serial(stax.Conv(4, (3, 3), padding="SAME", W_std=1.5, b_std=0.1), relu,
                                     stax.AvgPool((3, 2), (2, 1), "SAME", normalize_edges=True),
                                     stax.Conv(3, (2, 2), W_std=1.3), stax.Erf(), stax.Flatten(), stax.Dense(1)),
        "circular_gap": stax.serial(stax.Conv(4, (3, 3), padding="CIRCULAR", W_std=1.4, b_std=0.2), relu,
                                    stax.Conv(4, (2, 3), padding="CIRCULAR", W_std=1.4, b_std=0.2,
                                              parameterization="standard"), stax.Gelu(), stax.GlobalAvgPool(),
                                    stax.Dense(1)),
        "prod_layernorm": stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.FanOut(2),
                                      stax.parallel(stax.serial(stax.LayerNorm((1, 3)), stax.Relu()),
                                                    stax.serial(stax.Erf(), stax.Conv(4, (1, 1)))),
                                      stax.FanInProd(), stax.Conv(2, (3, 3), padding="VALID"), stax.Sin(),
                                      stax.Flatten(), stax.Dense(1)),
        "sumpool_spatial_out": stax.serial(stax.Conv(3, (2, 2), strides=(1, 2), padding="SAME", b_std=0.3), relu,
                                           stax.SumPool((2, 2), padding="VALID"), stax.Dense(2, W_std=1.2)),
        "flatten_spatial_out": stax.serial(stax.Conv(3, (3, 3), padding="SAME", W_std=1.3, b_std=0.1), stax.Erf(),
                                           stax.Conv(2, (3, 3), strides=(2, 2), padding="SAME")),
        "one_d": stax.serial(stax.Conv(5, (3,), padding="SAME", b_std=0.1), relu, stax.AvgPool((2,), (2,)),
                             stax.Conv(5, (2,), padding="CIRCULAR"), stax.Abs(), stax.GlobalSumPool(),
                             stax.Dense(1)),
        "quadrature": stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.Tanh(), stax.Flatten(), stax.Dense(1)),
        # the deferred Conv steps of the diagonal layout: an activation apart from its Conv, a Dense and an
        # activation on spatial arrays, a strided VALID Conv, activations after the Flatten
        "deferred_steps": stax.serial(stax.Conv(4, (3, 3), padding="SAME", b_std=0.1), stax.Identity(), relu,
                                      stax.Dense(3, W_std=1.2, b_std=0.2), stax.Erf(),
                                      stax.Conv(3, (2, 2), strides=(2, 1), W_std=1.4, parameterization="standard"),
                                      stax.Gelu(), stax.Flatten(), stax.Dense(5), relu, stax.Dense(1)),
        "deferred_residual": stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.FanOut(2),
                                         stax.parallel(stax.serial(relu, stax.Conv(4, (3, 3), padding="SAME")),
                                                       stax.Identity()),
                                         stax.FanInSum(), relu, stax.Conv(2, (3, 3), padding="CIRCULAR"), relu,
                                         stax.Flatten(), stax.Dense(1)),
    }


def _inputs_for(name, n, seed):
    return _images(n, (9, 3), seed) if name == "one_d" else _images(n, seed=seed)


@pytest.mark.parametrize("name", list(_nets()))
def test_compiled_driver_matches_the_oracle(name):
    """Layers and combinations beyond the fixtures (AvgPool normalize_edges, FanInProd, LayerNorm over some
    spatial axes, networks ending with spatial axes, 1-D pools, quadrature activations) against the oracle."""
    kernel_fn = _nets()[name].kernel_fn
    x1, x2 = _inputs_for(name, 4, 1), _inputs_for(name, 3, 2)
    tol = 1e-5 if name == "quadrature" else 1e-12  # two Gauss–Hermite rules of degree 25 (each within 1e-5)
    for a, b in ((x1, x2), (x1, None)):
        nngp, ntk = _reference.conv_kernels(a, b, kernel_fn.spec)
        k = kernel_fn(a, b)
        assert k.nngp.shape == nngp.shape
        assert _err(k.nngp, nngp) <= tol
        assert _err(k.ntk, ntk) <= max(tol, 1e-8 if b is None else 0)


@pytest.mark.parametrize("name", ["avgpool_edges", "circular_gap", "one_d", "prod_layernorm", "deferred_steps",
                                  "deferred_residual"])
def test_symmetric_psd_tiled_diagonal(name):
    kernel_fn = _nets()[name].kernel_fn
    x = _inputs_for(name, 7, 3)
    k = kernel_fn(x, None)
    for a in (k.nngp, k.ntk):
        np.testing.assert_array_equal(a, a.T)
        assert np.linalg.eigvalsh(a).min() > -1e-12 * np.abs(a).max()
    for rows in (1, 2, 5):
        tiled = kernel_fn(x, None, block_rows=rows)
        np.testing.assert_allclose(tiled.ntk, k.ntk, rtol=1e-13, atol=1e-15)
        cross = kernel_fn(x, x[:5], block_rows=rows)
        np.testing.assert_allclose(cross.ntk, k.ntk[:, :5], rtol=1e-7, atol=1e-15)
    np.testing.assert_allclose(kernel_fn(x, None, "ntk", diagonal=True), np.diagonal(k.ntk), rtol=1e-13)
    np.testing.assert_allclose(k.cov1, np.diagonal(k.nngp), rtol=1e-13)


@pytest.mark.parametrize("readout", [stax.Flatten, stax.GlobalAvgPool])
def test_circular_padding_is_translation_invariant(readout):
    net = stax.serial(stax.Conv(4, (3, 3), padding="CIRCULAR", b_std=0.1), stax.Relu(),
                      stax.Conv(4, (3, 3), padding="CIRCULAR"), stax.Erf(), readout(), stax.Dense(1))
    x1, x2 = _images(3), _images(4, seed=1)
    shifted = [np.roll(x, (2, 1), axis=(1, 2)) for x in (x1, x2)]
    a, b = net.kernel_fn(x1, x2), net.kernel_fn(*shifted)
    np.testing.assert_allclose(b.ntk, a.ntk, rtol=1e-12)
    np.testing.assert_allclose(b.nngp, a.nngp, rtol=1e-12)


def test_residual_block_is_the_sum_of_its_branches():
    stem = stax.Conv(4, (3, 3), padding="SAME", b_std=0.1)
    branch = stax.serial(stax.Relu(), stax.Conv(4, (3, 3), padding="SAME", W_std=1.3))
    shortcut = stax.Conv(4, (1, 1), W_std=0.7)
    both = stax.serial(stem, stax.FanOut(2), stax.parallel(branch, shortcut), stax.FanInSum(), stax.Flatten())
    x1, x2 = _images(3), _images(2, seed=1)
    k = both.kernel_fn(x1, x2)
    parts = [stax.serial(stem, b, stax.Flatten()).kernel_fn(x1, x2) for b in (branch, shortcut)]
    np.testing.assert_allclose(k.nngp, parts[0].nngp + parts[1].nngp, rtol=1e-13)
    np.testing.assert_allclose(k.ntk, parts[0].ntk + parts[1].ntk, rtol=1e-13)


@pytest.mark.parametrize("name", ["circular_gap", "deferred_steps"])
def test_float32_inputs_agree_with_float64(name):
    kernel_fn = _nets()[name].kernel_fn
    x = _images(5)
    k64, k32 = kernel_fn(x, None, "ntk"), kernel_fn(x.astype(np.float32), None, "ntk")
    assert k32.dtype == np.float32
    assert _err(k32, k64) < 1e-5


def test_fields_out_and_per_point():
    kernel_fn = _nets()["avgpool_edges"].kernel_fn
    x1, x2 = _images(4), _images(3, seed=1)
    k = kernel_fn(x1, x2)
    out = {"nngp": np.empty((4, 3)), "ntk": np.empty((4, 3))}
    kernel_fn(x1, x2, ("nngp", "ntk"), out=out)
    np.testing.assert_array_equal(out["ntk"], k.ntk)
    deferred = _nets()["deferred_steps"].kernel_fn  # the Flatten path, x1 against itself (upper triangles)
    out = np.full((4, 4), np.nan)
    deferred(x1, None, "ntk", out=out, block_rows=3)
    np.testing.assert_array_equal(out, deferred(x1, None, "ntk", block_rows=3))
    np.testing.assert_allclose(kernel_fn(x1, x2, "cov2"), kernel_fn(x2, None, "nngp", diagonal=True), rtol=1e-13)
    np.testing.assert_allclose(kernel_fn(x1, x2, diagonal_batch=False).cov1, kernel_fn(x1, None, "nngp"))
    assert k.shape1 == (4, 1) and not k.x1_is_x2 and kernel_fn(x1, None).x1_is_x2
    spatial = _nets()["flatten_spatial_out"].kernel_fn
    full, diag = spatial(x1, x2), spatial(x1, x2, diagonal_spatial=True)
    assert full.ntk.shape == (4, 3, 3, 3, 3, 3) and diag.ntk.shape == (4, 3, 3, 3)
    np.testing.assert_allclose(diag.ntk, np.einsum("ijaabb->ijab", full.ntk), rtol=1e-12)
    assert full.cov1.shape == (4, 3, 3, 3, 3) and diag.cov1.shape == (4, 3, 3)


@pytest.mark.parametrize(("make", "shape", "match"), [
    (lambda: stax.serial(stax.Conv(2, (3, 3)), stax.Flatten()), (3, 8, 3), r"layer 0 \(Conv\) has a 2-D window .* "
                                                                            r"\(N, S, S, C\)"),
    (lambda: stax.serial(stax.Conv(2, (5, 5)), stax.Flatten()), (3, 4, 4, 1), r"layer 0 \(Conv\): a VALID window of "
                                                                               r"\(5, 5\) does not fit"),
    (lambda: stax.serial(stax.Conv(2, (3, 3)), stax.Flatten(), stax.Conv(2, (1, 1))), (3, 4, 4, 1),
     r"layer 2 \(Conv\) .* cannot follow them"),
    (lambda: stax.serial(stax.GlobalAvgPool(), stax.AvgPool((2, 2))), (3, 4, 4, 1), r"layer 1 \(Pool\)"),
    (lambda: stax.serial(stax.Conv(2, (3, 3)), stax.FanOut(2), stax.parallel(stax.Conv(2, (3, 3)), stax.Identity()),
                         stax.FanInSum(), stax.Flatten()), (3, 5, 5, 1), r"layer 4 \(FanInSum\) needs branches of one "
                                                                          r"spatial shape"),
    (lambda: stax.serial(stax.Conv(2, (3, 3)), stax.Relu(), stax.Flatten()), (3, 5, 5, 1), None),
    (lambda: stax.serial(stax.Conv(2, (3, 3)), stax.Flatten(), stax.Relu()), (3, 5, 5, 1), r"layer 2 \(Act\), "
                                                                                            r"activation 'relu', follows "
                                                                                            r"layer 1 \(Flatten\)"),
    (lambda: stax.serial(stax.Conv(2, (1, 1)), stax.FanOut(2), stax.parallel(stax.Conv(2, (1, 1)), stax.Conv(3, (1, 1))),
                         stax.FanInConcat(), stax.Relu(), stax.Flatten()), (3, 4, 4, 1), r"follows layer 4 "
                                                                                         r"\(FanInConcat\)"),
    (lambda: stax.serial(stax.Relu(), stax.Conv(2, (1, 1)), stax.Flatten()), (3, 4, 4, 1), r"follows the inputs"),
    (lambda: stax.serial(stax.Conv(2, (1, 1)), stax.Relu(), stax.LayerNorm(), stax.Flatten()), (3, 4, 4, 1),
     r"layer 2 \(LayerNorm\) needs a Gaussian input"),
    (lambda: stax.serial(stax.Conv(2, (1, 1)), stax.LayerNorm(axis=(1, 2)), stax.Flatten()), (3, 4, 4, 1),
     r"the channel axis \(-1\) among them"),
])
def test_bad_networks_name_the_layer(make, shape, match):
    kernel_fn = make().kernel_fn
    x = _images(shape[0], shape[1:])
    if match is None:
        assert kernel_fn(x, None, "ntk").shape == (3, 3)
        return
    with pytest.raises(ValueError, match=match):
        kernel_fn(x, None)


def test_bad_arguments():
    with pytest.raises(ValueError, match="padding must be one of"):
        stax.Conv(2, (3, 3), padding="FULL")
    with pytest.raises(ValueError, match="strides must be a tuple of 2 ints"):
        stax.Conv(2, (3, 3), strides=(1,))
    with pytest.raises(ValueError, match="out_chan must be a positive integer"):
        stax.Conv(0, (3, 3))
    with pytest.raises(NotImplementedError, match="NHWC"):
        stax.GlobalAvgPool(channel_axis=1)
    kernel_fn = _nets()["circular_gap"].kernel_fn
    with pytest.raises(ValueError, match=r"x2 must have the spatial shape and channels of x1, \(N2, 6, 5, 2\)"):
        kernel_fn(_images(2), _images(2, (5, 6, 2)))
    with pytest.raises(ValueError, match="x1 contains NaN"):
        kernel_fn(np.full((2, 6, 5, 2), np.nan))
    with pytest.raises(ValueError, match="out is for"):
        _nets()["flatten_spatial_out"].kernel_fn(_images(2), None, "ntk", out=np.empty((2, 2)))


def test_calls_from_several_threads_share_the_buffer_pool_safely():
    """Blocks take their buffers from one pool kept between calls: concurrent calls (each on its own images,
    in both layouts) give exactly what each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    nets = [_nets()[name].kernel_fn for name in ("deferred_steps", "circular_gap")]
    jobs = [(nets[i % 2], _images(6 + i, seed=i)) for i in range(8)]
    alone = [kernel_fn(x, None, "ntk", block_rows=2) for kernel_fn, x in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda job: job[0](job[1], None, "ntk", block_rows=2), jobs * 3))
    for i, k in enumerate(together):
        np.testing.assert_array_equal(k, alone[i % len(jobs)])


@pytest.mark.parametrize("name", ["deferred_steps", "circular_gap"])
def test_one_thread_gives_the_same_bits(name):
    """The compiled passes split work by chunks of entries, never inside an entry's sums: one thread and
    every thread give the same numbers, in both layouts."""
    kernel_fn = _nets()[name].kernel_fn
    x1, x2 = _images(9, seed=4), _images(6, seed=5)
    n = fastntk.get_num_threads()
    try:
        default = kernel_fn(x1, x2), kernel_fn(x1, None)
        fastntk.set_num_threads(1)
        single = kernel_fn(x1, x2), kernel_fn(x1, None)
    finally:
        fastntk.set_num_threads(n)
    for a, b in zip(default, single):
        np.testing.assert_array_equal(a.nngp, b.nngp)
        np.testing.assert_array_equal(a.ntk, b.ntk)
