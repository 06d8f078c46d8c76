"""The finite spatial layers (Conv, AvgPool/SumPool, GlobalAvgPool/GlobalSumPool, LayerNorm, Flatten of
(N, *S, C)): apply against explicit-loop NumPy oracles, parameters as neural-tangents 0.6.5 draws and
shapes them, JVP/VJP against JAX autodiff of apply_fn, and the width-m networks' empirical NNGP and NTK
against the infinite-width references of tests/data/cnn (neural-tangents 0.6.5)."""

import itertools
import json
import math
import re

import numpy as np
import pytest

from fastntk import network, stax
from fastntk.empirical import empirical_nngp_fn, empirical_ntk_fn, empirical_ntk_vp_fn, linearize

from conftest import DATA

RNG = np.random.default_rng(5)
X2D = RNG.standard_normal((2, 7, 6, 3))
X1D = RNG.standard_normal((3, 9, 2))


# --------------------------------------------------------------------------- explicit-loop oracles
def _sources(sizes, window, strides, padding, o, a):
    """The input position that output position o reads at tap a (tests/data/cnn/README.md, "Conv":
    o·s + a − lo, lo = ⌊t/2⌋ of the SAME padding t), or None where it falls into SAME padding."""
    src = []
    for n, f, s, oi, ai in zip(sizes, window, strides, o, a):
        lo = 0 if padding == "VALID" else max((-(-n // s) - 1) * s + f - n, 0) // 2
        j = oi * s + ai - lo
        if padding == "CIRCULAR":
            j %= n
        elif not 0 <= j < n:
            return None
        src.append(j)
    return tuple(src)


def _out_sizes(sizes, window, strides, padding):
    return tuple((n - f) // s + 1 if padding == "VALID" else -(-n // s) for n, f, s in zip(sizes, window, strides))


def loop_conv(x, W, strides, padding):
    """out[i, o, k] = Σ_{a, c} x[i, src(o, a), c]·W[a, c, k] (cross-correlation), one (o, a) at a time."""
    window, sizes = W.shape[:-2], x.shape[1:-1]
    out = np.zeros((x.shape[0], *_out_sizes(sizes, window, strides, padding), W.shape[-1]))
    for o in np.ndindex(*out.shape[1:-1]):
        for a in np.ndindex(*window):
            src = _sources(sizes, window, strides, padding, o, a)
            if src is not None:
                out[(slice(None), *o)] += x[(slice(None), *src)] @ W[a]
    return out


def loop_pool(x, window, strides, padding, kind, normalize_edges=False):
    """Sum over each window (zeros in SAME padding); 'avg' divides by |w| or, with normalize_edges,
    by the number of the window's positions inside the input."""
    sizes = x.shape[1:-1]
    out = np.zeros((x.shape[0], *_out_sizes(sizes, window, strides, padding), x.shape[-1]))
    for o in np.ndindex(*out.shape[1:-1]):
        count = 0
        for a in np.ndindex(*window):
            src = _sources(sizes, window, strides, padding, o, a)
            if src is not None:
                out[(slice(None), *o)] += x[(slice(None), *src)]
                count += 1
        if kind == "avg":
            out[(slice(None), *o)] /= count if normalize_edges else math.prod(window)
    return out


CONVS = [((3, 3), (1, 1)), ((2, 3), (2, 1)), ((4, 2), (2, 2)), ((3, 1), (3, 2)), ((7, 6), (1, 1))]


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
@pytest.mark.parametrize(("filter_shape", "strides"), CONVS)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_conv_is_the_loop_cross_correlation(padding, filter_shape, strides, parameterization):
    init_fn, apply_fn, _ = stax.Conv(4, filter_shape, strides, padding, W_std=1.3, b_std=0.2,
                                     parameterization=parameterization)
    shape, (W, b) = init_fn(0, X2D.shape)
    c = 1.3 / math.sqrt(3 * math.prod(filter_shape)) if parameterization == "ntk" else 1.0
    beta = 0.2 if parameterization == "ntk" else 1.0
    want = c * loop_conv(X2D, W, strides, padding) + beta * b
    got = apply_fn((W, b), X2D)
    assert got.shape == shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("padding", ["VALID", "SAME", "CIRCULAR"])
@pytest.mark.parametrize(("filter_shape", "strides"), [((3,), (1,)), ((4,), (2,)), ((5,), (3,))])
def test_conv1d_is_the_loop_cross_correlation(padding, filter_shape, strides):
    init_fn, apply_fn, _ = stax.Conv(3, filter_shape, strides, padding, W_std=1.1, b_std=None)
    _, (W, b) = init_fn(1, X1D.shape)
    assert b is None
    want = 1.1 / math.sqrt(2 * filter_shape[0]) * loop_conv(X1D, W, strides, padding)
    np.testing.assert_allclose(apply_fn((W, b), X1D), want, rtol=1e-13, atol=1e-13)


POOLS = [("avg", (2, 2), (2, 2), "VALID", False), ("avg", (3, 3), (1, 1), "SAME", False),
         ("avg", (3, 2), (2, 1), "SAME", True), ("avg", (2, 3), (1, 2), "CIRCULAR", False),
         ("avg", (2, 2), (1, 1), "CIRCULAR", True), ("sum", (2, 2), (1, 1), "SAME", False),
         ("sum", (3, 2), (2, 3), "VALID", False), ("sum", (4, 3), (2, 2), "CIRCULAR", False)]


@pytest.mark.parametrize(("kind", "window", "strides", "padding", "normalize_edges"), POOLS)
def test_pool_is_the_loop_window_sum(kind, window, strides, padding, normalize_edges):
    layer = (stax.AvgPool(window, strides, padding, normalize_edges) if kind == "avg" else
             stax.SumPool(window, strides, padding))
    shape, params = layer.init_fn(0, X2D.shape)
    want = loop_pool(X2D, window, strides, padding, kind, normalize_edges)
    got = layer.apply_fn(params, X2D)
    assert params == () and got.shape == shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_pool_strides_default_to_one_and_1d_pools():
    want = loop_pool(X1D, (3,), (1,), "SAME", "avg", True)
    np.testing.assert_allclose(stax.AvgPool((3,), padding="SAME", normalize_edges=True).apply_fn((), X1D), want,
                               rtol=1e-13)


def test_global_pools_flatten_and_layernorm():
    x = X2D
    np.testing.assert_allclose(stax.GlobalAvgPool().apply_fn((), x), x.mean(axis=(1, 2)), rtol=1e-14)
    np.testing.assert_allclose(stax.GlobalSumPool().apply_fn((), X1D), X1D.sum(axis=1), rtol=1e-14)
    assert stax.GlobalAvgPool().init_fn(0, x.shape)[0] == (2, 3)
    np.testing.assert_array_equal(stax.Flatten().apply_fn((), x), x.reshape(2, -1))  # row-major (H, W, C)
    for axis, eps in [(-1, 1e-12), ((1, 2, 3), 1e-12), ((-3, -1), 0.5)]:
        axes = tuple(a % 4 for a in ((axis,) if isinstance(axis, int) else axis))
        u = x - x.mean(axis=axes, keepdims=True)
        want = u / np.sqrt((u * u).mean(axis=axes, keepdims=True) + eps)
        np.testing.assert_allclose(stax.LayerNorm(axis, eps).apply_fn((), x), want, rtol=1e-13, atol=1e-14)


# --------------------------------------------------------------------------- parameters
def test_params_shapes_order_and_scaling():
    layer = stax.serial(stax.Conv(5, (3, 2), (1, 2), "SAME", W_std=1.5, b_std=0.1), stax.Relu(),
                        stax.AvgPool((2, 2)), stax.Conv(4, (2, 2), W_std=2.0, b_std=None), stax.LayerNorm(),
                        stax.GlobalAvgPool(), stax.Dense(3, b_std=0.3))
    shape, params = layer.init_fn(3, X2D.shape)
    assert shape == (2, 3)
    assert [tuple(np.shape(a) if a is not None else () for a in p) for p in params] == [
        ((3, 2, 3, 5), (1, 1, 1, 5)), (), (), ((2, 2, 5, 4), ()), (), (), ((4, 3), (1, 3))]
    assert params[3][1] is None
    std = stax.Conv(5, (3, 2), W_std=1.5, b_std=0.1, parameterization="standard")
    (W, b), (Ws, bs) = stax.Conv(5, (3, 2), b_std=0.1).init_fn(4, X2D.shape)[1], std.init_fn(4, X2D.shape)[1]
    np.testing.assert_allclose(Ws, W * 1.5 / math.sqrt(3 * 6), rtol=1e-15)  # same draws, W_std/√(C_in·|F|)
    np.testing.assert_allclose(bs, b * 0.1, rtol=1e-15)
    np.testing.assert_allclose(layer.apply_fn(params, X2D), layer.apply_fn(
        [(p[0], p[1].reshape(-1)) if k == 0 else p for k, p in enumerate(params)], X2D))  # b (out_chan,) too


def test_jax_key_draws_as_neural_tangents():
    """serial: key, layer_key = split(key) per child; Conv: k1, k2 = split(layer_key), W ~ k1, b ~ k2."""
    jax = pytest.importorskip("jax")
    from jax import random

    layer = stax.serial(stax.Relu(), stax.Conv(4, (3, 2), padding="CIRCULAR", b_std=0.1))
    _, params = layer.init_fn(random.PRNGKey(11), X2D.shape)
    with network._threefry_unpartitioned():
        key = random.PRNGKey(11)
        for _ in range(2):
            key, layer_key = random.split(key)
        k1, k2 = random.split(layer_key)
        W, b = random.normal(k1, (3, 2, 3, 4)), random.normal(k2, (1, 1, 1, 4))
    assert params[0] == () and isinstance(params[1][0], jax.Array)
    np.testing.assert_array_equal(params[1][0], W)
    np.testing.assert_array_equal(params[1][1], b)


# --------------------------------------------------------------------------- derivatives
def _every_layer():
    return stax.serial(
        stax.Conv(4, (3, 2), (2, 1), "SAME", W_std=1.3, b_std=0.2), stax.Gelu(),
        stax.FanOut(2), stax.parallel(stax.serial(stax.Conv(4, (2, 2), None, "CIRCULAR", W_std=1.2, b_std=0.1),
                                                  stax.Erf()), stax.Identity()), stax.FanInSum(),
        stax.Dense(5, W_std=1.1, b_std=0.1), stax.LayerNorm((1, 2, 3)),
        stax.AvgPool((2, 2), (1, 2), "SAME", normalize_edges=True), stax.SumPool((2, 1), None, "CIRCULAR"),
        stax.Conv(3, (2, 2), (1, 1), "VALID", W_std=1.4, b_std=0.3, parameterization="standard"), stax.LayerNorm(),
        stax.Relu(), stax.FanOut(2), stax.parallel(stax.Flatten(), stax.serial(stax.GlobalAvgPool(), stax.Dense(6))),
        stax.FanInConcat(), stax.Dense(2, W_std=1.2, b_std=0.1))


def _as_jax(params):
    import jax

    return jax.tree_util.tree_map(lambda a: jax.numpy.asarray(a, dtype=jax.numpy.float64), params)


@pytest.fixture(scope="module")
def jax64():
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        yield jax


def test_jvp_and_vjp_are_jax_autodiff_of_apply(jax64):
    jax = jax64
    layer = _every_layer()
    _, params = layer.init_fn(2, X2D.shape)
    net = network.pairs(layer.apply_fn.spec, params)
    rng = np.random.default_rng(7)
    v = jax.tree_util.tree_map(lambda a: rng.standard_normal(np.shape(a)), params)
    f, jv = network.jvp(net, [p for _, p in network.pairs(layer.apply_fn.spec, v)], X2D)
    f_jax, jv_jax = jax.jit(lambda p, t: jax.jvp(lambda q: layer.apply_fn(q, X2D), (p,), (t,)))(_as_jax(params),
                                                                                                _as_jax(v))
    np.testing.assert_allclose(f, f_jax, rtol=1e-12)
    np.testing.assert_allclose(jv, jv_jax, rtol=1e-11, atol=1e-12)
    ct = rng.standard_normal(f.shape)
    grads = network.vjp(net, X2D, ct)
    (grads_jax,) = jax.jit(lambda p, c: jax.vjp(lambda q: layer.apply_fn(q, X2D), p)[1](c))(_as_jax(params), ct)
    flat_jax = [p for _, p in network.pairs(layer.apply_fn.spec, grads_jax)]
    assert len(grads) == len(flat_jax)
    for g, gj in zip(grads, flat_jax):
        for a, aj in zip(g, gj):
            assert (a is None) == (aj is None)
            if a is not None:
                np.testing.assert_allclose(a, aj, rtol=1e-11, atol=1e-12)


def test_input_cotangents_are_transposes(jax64):
    """⟨ct, J_h·dh⟩ = ⟨J_hᵀ·ct, dh⟩ for every spatial rule, the cotangent with an extra leading axis."""
    rng = np.random.default_rng(8)
    leaves = [stax.Conv(3, (3, 2), (2, 3), p, W_std=1.2, b_std=0.1) for p in ("VALID", "SAME", "CIRCULAR")] + [
        stax.AvgPool((3, 2), (2, 1), "SAME", True), stax.SumPool((2, 3), (1, 2), "CIRCULAR"),
        stax.GlobalSumPool(), stax.GlobalAvgPool(), stax.LayerNorm((1, 3)), stax.Dense(2, b_std=0.2)]
    for layer in leaves:
        leaf = layer.apply_fn.spec
        _, p = layer.init_fn(0, X2D.shape)
        dh = rng.standard_normal(X2D.shape)
        dp = tuple(None if a is None else np.zeros_like(a) for a in p) if p else ()
        z, dz = network.RULES[type(leaf)].jvp(leaf, p, dp, X2D, dh)
        ct = rng.standard_normal((2, *z.shape))
        ct_in = (network.input_cotangent(leaf, p, X2D, ct) if p else network.RULES[type(leaf)].vjp(leaf, p, X2D, ct)[1])
        assert ct_in.shape == (2, *X2D.shape), leaf
        np.testing.assert_allclose((ct * dz).reshape(2, -1).sum(1), (ct_in * dh).reshape(2, -1).sum(1), rtol=1e-12,
                                   err_msg=str(leaf))


def test_jax_jit_and_torch_inputs(jax64):
    jax = jax64
    torch = pytest.importorskip("torch")
    layer = _every_layer()
    _, params = layer.init_fn(5, X2D.shape)
    want = layer.apply_fn(params, X2D)
    got = jax.jit(layer.apply_fn)(_as_jax(params), jax.numpy.asarray(X2D))
    assert isinstance(got, jax.Array)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    t_params = jax.tree_util.tree_map(lambda a: torch.tensor(np.asarray(a)), params)
    out = layer.apply_fn(t_params, torch.tensor(X2D))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)


# --------------------------------------------------------------------------- width → ∞
def _fixture(name):
    z = np.load(DATA / "cnn" / f"{name}.npz")
    return z, json.loads(str(z["spec"]))


def _at_width(spec, m, readout=1):
    """The fixture's network ('ntk' parameterization: the kernels do not depend on the widths) with m
    channels per Conv and a readout Dense of ``readout`` outputs."""
    assert all(leaf["parameterization"] == "ntk" for leaf in _layers(spec["net"]) if "parameterization" in leaf)
    expr = re.sub(r"stax\.Conv\(\d+,", f"stax.Conv({m},", spec["stax"])
    return eval(re.sub(r"stax\.Dense\(1,", f"stax.Dense({readout},", expr), {"stax": stax})


def _layers(node):
    return [leaf for child in node["layers"] for leaf in _layers(child)] if "layers" in node else [node]


def _empirical_nngps(layer, x1, x2, draws, seed):
    """f(x1) f(x2)ᵀ / O of ``draws`` independent networks (seeds seed, seed + 1, ...)."""
    out = []
    for d in range(draws):
        _, params = layer.init_fn(seed + d, x1.shape)
        f1, f2 = layer.apply_fn(params, x1), layer.apply_fn(params, x2)
        out.append(f1 @ f2.T / f1.shape[1])
    return np.array(out)


def _slope(widths, errors):
    return np.polyfit(np.log(widths), np.log(errors), 1)[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn_relu_L1_SAME_s1_flatten_Wsqrt2_b0.1_ntk",
                                  "cnn_relu_L2_SAME_s1_gap_Wsqrt2_b0.1_ntk"])
def test_empirical_nngp_approaches_the_reference(name):
    """The RMS error over draws of f(x1) f(x2)ᵀ / O at width m (m channels, m outputs) falls like m^(-1/2);
    the mean over the draws at the largest width is close to the reference."""
    z, spec = _fixture(name)
    widths, draws, ref = (4, 16, 64, 256), 8, z["nngp"]
    samples = [_empirical_nngps(_at_width(spec, m, readout=m), z["x1"], z["x2"], draws, 100 * m) for m in widths]
    rms = [np.sqrt(np.mean([np.sum((k - ref) ** 2) for k in ks]) / np.sum(ref**2)) for ks in samples]
    assert -0.8 < _slope(widths, rms) < -0.3, rms
    assert np.linalg.norm(samples[-1].mean(0) - ref) / np.linalg.norm(ref) < 0.12, rms


@pytest.mark.slow
def test_empirical_ntk_approaches_the_reference():
    z, spec = _fixture("cnn_relu_L2_SAME_s1_gap_Wsqrt2_b0.1_ntk")
    x1, x2 = z["x1"][:4], z["x2"][:3]
    ref = z["ntk"][:4, :3]
    errors = []
    for m in (8, 64, 256):
        layer = _at_width(spec, m)
        ntk_fn = empirical_ntk_fn(layer.apply_fn)
        err = 0.0
        for d in range(2):
            _, params = layer.init_fn(10 * m + d, x1.shape)
            err += np.linalg.norm(ntk_fn(x1, x2, params) - ref) / np.linalg.norm(ref) / 2
        errors.append(err)
    assert errors[-1] < 0.15 and errors[-1] < errors[1] < errors[0], errors


# --------------------------------------------------------------------------- the empirical NTK
def _small_cnn():
    return stax.serial(stax.Conv(3, (3, 2), (1, 1), "SAME", W_std=1.3, b_std=0.2), stax.Relu(),
                       stax.Dense(3, W_std=1.1, b_std=0.1), stax.Erf(), stax.AvgPool((2, 2), (2, 1), "CIRCULAR"),
                       stax.LayerNorm((1, 2, 3)), stax.Conv(2, (2, 2), padding="VALID", W_std=1.2, b_std=0.3,
                                                            parameterization="standard"),
                       stax.Gelu(), stax.Flatten(), stax.Dense(2, b_std=0.1))


def test_empirical_ntk_is_the_jacobian_gram(jax64):
    jax = jax64
    layer = _small_cnn()
    x1, x2 = X2D[:, :5, :4], RNG.standard_normal((3, 5, 4, 3))
    _, params = layer.init_fn(1, x1.shape)

    def jacobian(x):
        leaves, tree = jax.tree_util.tree_flatten(_as_jax(params))
        J = jax.jit(jax.jacrev(lambda ls: layer.apply_fn(jax.tree_util.tree_unflatten(tree, ls), x)))(leaves)
        return np.concatenate([np.asarray(j).reshape(x.shape[0], 2, -1) for j in J], axis=2)

    full = np.einsum("iap,jbp->ijab", jacobian(x1), jacobian(x2))
    for implementation, (trace_axes, diagonal_axes) in itertools.product((1, 3), [((-1,), ()), ((), ()), ((), (-1,))]):
        got = empirical_ntk_fn(layer.apply_fn, trace_axes, diagonal_axes, implementation=implementation)(x1, x2, params)
        want = (np.einsum("ijaa->ij", full) / 2 if trace_axes else full if not diagonal_axes else
                np.einsum("ijaa->ija", full))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    sym = empirical_ntk_fn(layer.apply_fn)(x1, None, params)
    np.testing.assert_allclose(sym, sym.T, rtol=0, atol=0)


def test_ntk_vector_products_and_the_nngp():
    layer = _small_cnn()
    x1, x2 = X2D[:, :5, :4], RNG.standard_normal((3, 5, 4, 3))
    _, params = layer.init_fn(2, x1.shape)
    full = empirical_ntk_fn(layer.apply_fn, trace_axes=())(x1, x2, params)
    ct = RNG.standard_normal((3, 2))
    np.testing.assert_allclose(empirical_ntk_vp_fn(layer.apply_fn, x1, x2, params)(ct),
                               np.einsum("ijab,jb->ia", full, ct), rtol=1e-12)
    f1, f2 = layer.apply_fn(params, x1), layer.apply_fn(params, x2)
    np.testing.assert_allclose(empirical_nngp_fn(layer.apply_fn)(x1, x2, params), f1 @ f2.T / 2, rtol=1e-13)
    with pytest.raises(NotImplementedError, match="linearize takes networks of"):
        linearize(layer.apply_fn, params)


def test_empirical_ntk_bad_inputs():
    layer = _small_cnn()
    _, params = layer.init_fn(1, (2, 5, 4, 3))
    ntk_fn = empirical_ntk_fn(layer.apply_fn)
    with pytest.raises(ValueError, match=r"x2 must have the shape of x1 but the batch, \(N2, 5, 4, 3\)"):
        ntk_fn(X2D[:, :5, :4], X2D[:, :5, :3], params)
    with pytest.raises(ValueError, match=r"needs inputs of shape \(N, H, W, C\)"):
        ntk_fn(X2D[:, 0], None, params)
    conv = stax.Conv(2, (2, 2))
    with pytest.raises(ValueError, match=r"outputs of shape \(N, O\).*end it with Flatten"):
        empirical_ntk_fn(conv.apply_fn)(X2D, None, conv.init_fn(0, X2D.shape)[1])


# --------------------------------------------------------------------------- bad input
def test_wrong_input_rank_names_the_expected_shape():
    init_fn, apply_fn, _ = stax.Conv(2, (3, 3), padding="SAME")
    _, params = init_fn(0, X2D.shape)
    with pytest.raises(ValueError, match=r"Conv with a 2-D window needs inputs of shape \(N, H, W, C\) .*got shape "
                                         r"\(2, 6, 3\)"):
        apply_fn(params, X2D[:, 0])
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        init_fn(0, (2, 9, 2))
    with pytest.raises(ValueError, match=r"AvgPool with a 1-D window needs inputs of shape \(N, H, C\)"):
        stax.AvgPool((2,)).apply_fn((), X2D)
    with pytest.raises(ValueError, match="GlobalAvgPool needs inputs with spatial axes"):
        stax.GlobalAvgPool().apply_fn((), X2D[:, 0, 0])
    with pytest.raises(ValueError, match=r"a VALID window of \(8, 3\) does not fit"):
        big = stax.Conv(2, (8, 3))
        big.apply_fn(big.init_fn(0, (2, 9, 6, 3))[1], X2D)


def test_wrong_params_are_named():
    init_fn, apply_fn, _ = stax.serial(stax.Relu(), stax.Conv(2, (3, 3), padding="SAME", b_std=0.1))
    _, params = init_fn(0, X2D.shape)
    W, b = params[1]
    with pytest.raises(ValueError, match=r"params\[1\]\[0\] \(W\) must have shape \(3, 3, 3, 2\) for inputs with 3 "
                                         r"channels; got \(3, 3, 4, 2\) \(inputs has 3 channels but the first Conv"):
        apply_fn([(), (np.zeros((3, 3, 4, 2)), b)], X2D)
    with pytest.raises(ValueError, match=r"params\[1\]\[0\] \(W\) must have shape \(3, 3, 3, 2\)"):
        apply_fn([(), (W[:2], b)], X2D)
    with pytest.raises(ValueError, match=r"params\[1\]\[1\] \(b\) must be of shape \(1, 1, 1, 2\) .* or \(2,\); got "
                                         r"\(2, 2\)"):
        apply_fn([(), (W, np.zeros((2, 2)))], X2D)
    with pytest.raises(ValueError, match=r"params\[1\] must be a \(W, b\) pair for a Conv layer"):
        apply_fn([(), W], X2D)
