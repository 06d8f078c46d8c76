"""Branching networks: FanOut, FanInSum/Prod/Concat, parallel, repeat, Flatten, Dropout.

Kernels of the fused pass against the NumPy reference (rounding) and against neural-tangents 0.6.5
(tests/compat/data/branching.npz, from tests/compat/generate_branching.py); the finite network
(init with a JAX key, apply, JVP/VJP) and the empirical NTK against neural-tangents too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import RTOL, assert_close

from fastntk import _reference, network, spec, stax
from fastntk.empirical import empirical_ntk_fn

_GEN = Path(__file__).parent / "compat" / "generate_branching.py"
_spec = importlib.util.spec_from_file_location("generate_branching", _GEN)
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)
NT = np.load(Path(__file__).parent / "compat" / "data" / "branching.npz")
NETS = gen.networks(stax)
X1, X2 = gen.X1, gen.X2


@pytest.fixture
def jax64():
    """jax with float64 enabled for the test only."""
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        yield jax


def _nt_rtol(name, tag, kind):
    """neural-tangents' own rounding at θ = 0 (ReLU NTK of coincident points) dominates there."""
    return RTOL["float64_coincident_relu_ntk"] if (tag, kind) == ("11", "ntk") else RTOL["float64"]


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("tag", ["11", "12"])
def test_kernels_match_neural_tangents_and_reference(name, tag):
    net = NETS[name]
    x2 = None if tag == "11" else X2
    k = net.kernel_fn(X1, x2)
    nngp, ntk = _reference.infinite_kernels(X1, x2, net.kernel_fn.spec)
    assert_close(k.nngp, nngp, RTOL["float64"], f"{name} nngp vs reference")
    assert_close(k.ntk, ntk, RTOL["float64"], f"{name} ntk vs reference")
    for kind, value in (("nngp", k.nngp), ("ntk", k.ntk)):
        assert_close(value, NT[f"{name}/{kind}{tag}"], _nt_rtol(name, tag, kind), f"{name} {kind} vs neural-tangents")
        assert_close(net.kernel_fn(X1, x2, kind), value, RTOL["float64"], f"{name} get={kind!r} alone")
    if x2 is None:
        np.testing.assert_array_equal(k.nngp, k.nngp.T)
        d = net.kernel_fn(X1, None, diagonal=True)
        assert_close(d.nngp, np.diag(nngp), RTOL["float64"], f"{name} diagonal nngp")
        assert_close(d.ntk, np.diag(ntk), RTOL["float64"], f"{name} diagonal ntk")
        assert_close(k.cov1, np.diag(nngp), RTOL["float64"], f"{name} cov1")


@pytest.mark.parametrize("name", ["residual", "concat", "dropout", "nested"])
def test_tiles_and_float32_agree(name):
    """Row blocks of 2 (several tiles; Dropout's coincident entries in each) and float32 give the same kernels."""
    net = NETS[name]
    x = np.random.default_rng(3).standard_normal((37, 4))
    k = net.kernel_fn(x)
    small = net.kernel_fn(x, block_rows=16)
    for a, b in zip(small, k):
        assert_close(a, b, RTOL["float64"], f"{name} block_rows=16")
    k32 = net.kernel_fn(x.astype(np.float32))
    assert k32.nngp.dtype == np.float32
    for a, b in zip(k32, k):
        assert_close(a, b, RTOL["float32_vs_float64"], f"{name} float32")


def test_dropout_scales_coincident_inputs_as_neural_tangents():
    """x2 equal to x1 counts as x1 (neural-tangents' x1_is_x2): Σ(x, x), Θ(x, x) scale by 1/rate."""
    net = NETS["dropout"]
    k, same = net.kernel_fn(X1), net.kernel_fn(X1, X1.copy())
    assert_close(same.nngp, k.nngp, RTOL["float64"], "x2 = copy of x1")
    other = net.kernel_fn(X1, X1 + 1e-9)
    assert not np.allclose(np.diag(other.nngp), np.diag(k.nngp), rtol=1e-6)
    test_mode = stax.serial(stax.Dense(4, 1.5, 0.1), stax.Dropout(0.6, "test"), stax.Dense(3, 1.2, 0.1))
    plain = stax.serial(stax.Dense(4, 1.5, 0.1), stax.Dense(3, 1.2, 0.1))
    for a, b in zip(test_mode.kernel_fn(X1, X2), plain.kernel_fn(X1, X2)):
        np.testing.assert_array_equal(a, b)


def test_kernel_input_continues_the_network():
    """kernel_fn2(kernel_fn1(x1, x2)) = neural-tangents' and = the kernel of serial(net1, net2)."""
    first, second = gen.composed(stax)
    whole = stax.serial(first, second)
    for tag, x2 in (("11", None), ("12", X2)):
        k = second.kernel_fn(first.kernel_fn(X1, x2))
        for kind, value in (("nngp", k.nngp), ("ntk", k.ntk)):
            assert_close(value, NT[f"composed/{kind}{tag}"], _nt_rtol("composed", tag, kind), f"composed {kind}")
        for a, b in zip(k, whole.kernel_fn(X1, x2)):
            assert_close(a, b, RTOL["float64"], "composed vs serial")
    k1 = first.kernel_fn(X1, X2)
    start = {"nngp": k1.nngp, "ntk": k1.ntk, "cov1": k1.cov1, "cov2": k1.cov2, "width": 3}
    nngp, ntk = _reference.infinite_kernels(X1, X2, second.kernel_fn.spec, start=start)
    k = second.kernel_fn(k1, get=("ntk", "nngp"))
    assert k._fields == ("ntk", "nngp")
    assert_close(k.nngp, nngp, RTOL["float64"], "composed vs reference")
    assert_close(k.ntk, ntk, RTOL["float64"], "composed vs reference")


def test_kernel_input_refusals():
    first, second = gen.composed(stax)
    with pytest.raises(ValueError, match="holds no NTK"):
        second.kernel_fn(first.kernel_fn(X1, X2, ("nngp",)), get="ntk")
    with pytest.raises(ValueError, match="x2 must be None"):
        second.kernel_fn(first.kernel_fn(X1), X2)
    with pytest.raises(ValueError, match="cov2 None"):
        second.kernel_fn(first.kernel_fn(X1, X2), diagonal=True)
    d = second.kernel_fn(first.kernel_fn(X1), diagonal=True)
    whole = stax.serial(first, second).kernel_fn(X1, diagonal=True)
    assert_close(d.nngp, whole.nngp, RTOL["float64"], "diagonal of a Kernel input")
    assert_close(d.ntk, whole.ntk, RTOL["float64"], "diagonal of a Kernel input")
    with pytest.raises(ValueError, match="activation 'relu' follows"):  # the first ends in a Relu: not Gaussian
        second.kernel_fn(stax.serial(stax.Dense(3), stax.Relu()).kernel_fn(X1))


@pytest.mark.parametrize("name", sorted(gen.refused(stax)))
def test_refuses_what_neural_tangents_refuses(name):
    assert f"refused/{name}" in NT
    with pytest.raises(ValueError, match=r"Gaussian|one width"):
        gen.refused(stax)[name].kernel_fn(X1)


def test_other_refusals_name_the_problem():
    two = stax.serial(stax.Dense(3), stax.FanOut(2), stax.parallel(stax.Dense(3), stax.Dense(3)))
    with pytest.raises(ValueError, match="ends in several branches"):
        two.kernel_fn(X1)
    with pytest.raises(ValueError, match="batch axis"):
        stax.serial(two, stax.FanInConcat(axis=0)).kernel_fn(X1)
    with pytest.raises(ValueError, match="receives 1 branch"):  # checked on use: a serial may sit after a FanOut
        stax.serial(stax.Dense(3), stax.parallel(stax.Dense(3), stax.Dense(3))).init_fn(0, X1.shape)
    with pytest.raises(ValueError, match="one branch to one"):
        stax.parallel(stax.FanOut(2), stax.Identity())
    with pytest.raises(ValueError, match="takes one"):
        stax.serial(stax.FanOut(2), stax.Dense(3)).kernel_fn(X1)
    with pytest.raises(ValueError, match="keep the shape"):
        stax.repeat(stax.Dense(5), 2).init_fn(0, X1.shape)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rate"):
            stax.Dropout(bad)
    with pytest.raises(ValueError, match="mode"):
        stax.Dropout(0.5, "eval")
    with pytest.raises(ValueError, match="num"):
        stax.FanOut(0)
    with pytest.raises(TypeError, match="parallel argument 1"):
        stax.parallel(stax.Dense(1), 3)


@pytest.mark.parametrize("name", sorted(NETS))
def test_init_with_a_jax_key_and_apply_match_neural_tangents(name, jax64):
    import jax

    net = NETS[name]
    _, params = net.init_fn(jax.random.PRNGKey(1), X1.shape)
    leaves = jax.tree_util.tree_leaves(params)
    assert len(leaves) == sum(k.startswith(f"{name}/param") for k in NT)
    for i, leaf in enumerate(leaves):
        np.testing.assert_array_equal(np.asarray(leaf), NT[f"{name}/param{i}"])
    out = net.apply_fn(params, X1, rng=jax.random.PRNGKey(2))
    assert_close(np.asarray(out), NT[f"{name}/apply"], RTOL["float64"], f"{name} apply")
    numpy_params = jax.tree_util.tree_map(np.asarray, params)
    assert_close(net.apply_fn(numpy_params, X1, rng=jax.random.PRNGKey(2)), NT[f"{name}/apply"], RTOL["float64"])


def test_empirical_ntk_matches_neural_tangents(jax64):
    import jax

    name = "emp_residual"
    net = NETS[name]
    _, params = net.init_fn(jax.random.PRNGKey(1), X1.shape)
    params = jax.tree_util.tree_map(np.asarray, params)
    expected = NT[f"{name}/empirical"]
    for implementation in (1, 3):
        full = empirical_ntk_fn(net.apply_fn, trace_axes=(), implementation=implementation)(X1, X2, params)
        assert_close(full, expected, RTOL["empirical"], f"implementation {implementation}")
    trace = empirical_ntk_fn(net.apply_fn)(X1, None, params)
    sym = empirical_ntk_fn(net.apply_fn, trace_axes=())(X1, None, params)
    assert_close(trace, np.einsum("ijaa->ij", sym) / 2, RTOL["empirical"], "trace")
    with pytest.raises(ValueError, match="Dropout in mode 'train'"):
        empirical_ntk_fn(NETS["dropout"].apply_fn)


def _random_like(flat, rng):
    return [p if len(p) != 2 else (rng.standard_normal(np.shape(p[0])), None if p[1] is None else
                                   rng.standard_normal(np.shape(p[1]))) for p in flat]


@pytest.mark.parametrize("name", ["residual_standard", "prod3", "concat", "nested", "repeat", "flatten", "dropout"])
def test_jvp_vjp_of_branching_networks(name):
    """JVP = the directional derivative; ⟨ct, J·v⟩ = ⟨Jᵀ·ct, v⟩; the same Dropout mask throughout."""
    import jax

    layer = NETS[name]
    _, params = layer.init_fn(0, X1.shape)
    net = network.pairs(layer.kernel_fn.spec, params)
    keys = network.leaf_keys(layer.kernel_fn.spec, jax.random.PRNGKey(4))
    rng = np.random.default_rng(1)
    v = _random_like([p for _, p in net], rng)
    f, jv = network.jvp(net, v, X1, keys)
    np.testing.assert_allclose(f, network.apply(net, X1, keys), rtol=1e-14)
    h = 1e-6
    moved = [network.Bound([(leaf, p if len(p) != 2 else (p[0] + s * h * dp[0], None if p[1] is None else
                                                          p[1] + s * h * dp[1])) for (leaf, p), dp in zip(net, v)],
                           net.places) for s in (1, -1)]
    fd = (network.apply(moved[0], X1, keys) - network.apply(moved[1], X1, keys)) / (2 * h)
    np.testing.assert_allclose(jv, fd, rtol=1e-6, atol=1e-8)
    ct = rng.standard_normal(f.shape)
    grads = network.vjp(net, X1, ct, keys)
    rhs = sum(np.sum(g[0] * d[0]) + (0.0 if g[1] is None else np.sum(g[1] * d[1]))
              for g, d in zip(grads, v) if len(g) == 2)
    np.testing.assert_allclose(np.sum(ct * jv), rhs, rtol=1e-12)


def test_jax_grad_through_a_branching_apply_fn(jax64):
    import jax
    import jax.numpy as jnp

    layer = NETS["emp_residual"]
    _, params = layer.init_fn(jax.random.PRNGKey(0), X1.shape)
    y = np.ones((X1.shape[0], 2))
    grads = jax.grad(lambda p: 0.5 * jnp.sum((layer.apply_fn(p, X1) - y) ** 2))(params)
    numpy_params = jax.tree_util.tree_map(np.asarray, params)
    net = network.pairs(layer.kernel_fn.spec, numpy_params)
    ours = network.vjp(net, X1, network.apply(net, X1) - y)
    flat = [a for pair in ours if len(pair) == 2 for a in pair if a is not None]
    for g, o in zip(jax.tree_util.tree_leaves(grads), flat, strict=True):
        np.testing.assert_allclose(np.asarray(g), o, rtol=1e-10, atol=1e-12)


def test_repeat_is_serial_with_stacked_params():
    block = stax.serial(stax.Dense(4, 1.2, 0.1), stax.Relu())
    rep, unrolled = stax.repeat(block, 3), stax.serial(block, block, block)
    shape, params = rep.init_fn(0, X1.shape)
    assert shape == X1.shape
    assert (np.shape(params[0][0]), np.shape(params[0][1])) == ((3, 4, 4), (3, 1, 4))
    per_copy = [[(params[0][0][k], params[0][1][k]), ()] for k in range(3)]
    np.testing.assert_allclose(rep.apply_fn(params, X1), unrolled.apply_fn(per_copy, X1), rtol=1e-14)
    for a, b in zip(rep.kernel_fn(X1, X2), unrolled.kernel_fn(X1, X2)):
        np.testing.assert_array_equal(a, b)
    assert network.unflatten(rep.kernel_fn.spec, [p for _, p in network.pairs(rep.kernel_fn.spec, params)])[0][0].shape \
        == (3, 4, 4)
    with pytest.raises(ValueError, match=r"shape \(3, \.\.\.\)"):
        rep.apply_fn([(params[0][0][0], params[0][1][0]), ()], X1)
    _, empty = stax.repeat(block, 0).init_fn(0, X1.shape)
    assert np.shape(empty[0][0]) == (0, 4, 4)
    np.testing.assert_array_equal(stax.repeat(block, 0).apply_fn(empty, X1), X1)


def test_structural_layers_of_the_finite_network():
    x = np.random.default_rng(0).standard_normal((3, 2, 5))
    flat = stax.Flatten()
    assert flat.init_fn(0, x.shape) == ((3, 10), ())
    np.testing.assert_array_equal(flat.apply_fn((), x), x.reshape(3, 10))
    np.testing.assert_array_equal(flat.apply_fn((), X1), X1)
    drop = stax.Dropout(0.5)
    with pytest.raises(ValueError, match="random key"):
        drop.apply_fn((), X1)
    out = drop.apply_fn((), X1, rng=3)
    assert set(np.unique(np.round(out / X1, 12))) <= {0.0, 2.0}
    np.testing.assert_array_equal(stax.Dropout(0.5, "test").apply_fn((), X1), X1)
    two = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(3), stax.Identity()))
    shape, params = two.init_fn(0, X1.shape)
    assert shape == [(5, 3), (5, 4)]
    assert isinstance(params[1], tuple)
    outs = two.apply_fn(params, X1)
    assert isinstance(outs, list)
    assert outs[1] is X1
    cat = stax.serial(two, stax.FanInConcat())
    np.testing.assert_array_equal(cat.apply_fn([params, ()], X1), np.concatenate(outs, axis=-1))
    assert spec.output_shape(cat.kernel_fn.spec, X1.shape) == (5, 7)
    assert spec.readout_dim(stax.serial(cat, stax.Dense(2)).kernel_fn.spec) == 2
    assert spec.readout_dim(cat.kernel_fn.spec) is None
    with pytest.raises(ValueError, match=r"params\[1\] must be a tuple"):
        two.apply_fn([(), ()], X1)


@pytest.mark.parametrize("name", ["concat", "dropout"])
def test_torch_inputs_through_branches(name):
    """Tensors in, tensors out (the Dropout mask drawn from the JAX key as for NumPy); autograd = vjp."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    layer = NETS[name]
    _, params = layer.init_fn(0, X1.shape)
    key = jax.random.PRNGKey(3)
    tparams = jax.tree_util.tree_map(lambda a: torch.tensor(a, requires_grad=True), params)
    out = layer.apply_fn(tparams, torch.as_tensor(X1), rng=key)
    np.testing.assert_allclose(out.detach().numpy(), layer.apply_fn(params, X1, rng=key), rtol=1e-14)
    out.sum().backward()
    net = network.pairs(layer.kernel_fn.spec, params)
    grads = network.vjp(net, X1, np.ones(out.shape), network.leaf_keys(layer.kernel_fn.spec, key))
    flat = [a for pair in grads if len(pair) == 2 for a in pair if a is not None]
    for tp, g in zip(jax.tree_util.tree_leaves(tparams), flat, strict=True):
        np.testing.assert_allclose(tp.grad.numpy(), g, rtol=1e-12, atol=1e-14)
