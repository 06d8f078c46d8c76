"""The finite network where the user's framework lives: JAX and PyTorch in, the same out, differentiable.

``init_fn`` with a JAX key draws neural-tangents 0.6.5's parameters (checked against the
empirical fixtures, which store them); ``apply_fn`` on JAX arrays runs under jax.grad, jit
and vmap, and on torch tensors under autograd; both gradients equal ``network.vjp``'s.
"""

import contextlib

import numpy as np
import pytest
from conftest import fixture_paths, load_fixture

from fastntk import network, stax
from fastntk.activations import ACTIVATIONS
from fastntk.spec import Dense

PATHS = fixture_paths("empirical")
NAMES = sorted(ACTIVATIONS)
RTOL_F = 1e-10  # fixture outputs f1 (float64, neural-tangents with jax 0.4.23)
RTOL_GRAD = 1e-12  # one float64 computation against another, same operations in another order


@pytest.fixture
def jax64():
    """jax with float64 enabled for the test only (a context, as fastntk.empirical._jax uses)."""
    jax = pytest.importorskip("jax")
    if hasattr(jax, "enable_x64"):
        ctx = jax.enable_x64(True)
    else:  # older jax
        from jax.experimental import enable_x64

        ctx = enable_x64()
    with ctx:
        yield jax


@pytest.fixture(params=PATHS, ids=[p.stem for p in PATHS])
def case(request):
    return load_fixture(request.param)


def _fixture_net(spec):
    act = dict(spec["activation"])
    act = getattr(stax, act.pop("name"))(**act)
    dense = [stax.Dense(w, spec["W_std"], spec["b_std"], parameterization=spec["parameterization"])
             for w in (*spec["hidden_widths"], spec["out_dim"])]
    return stax.serial(*[layer for d in dense[:-1] for layer in (d, act)], dense[-1])


def _net(name):
    """Dense(6) → φ → Dense(4) → φ → Dense(3), 'ntk', with a bias."""
    return stax.fc_network(2, name, W_std=1.3, b_std=0.2, width=6, out_dim=3)


def _dense_params(net):
    return [p for leaf, p in net if isinstance(leaf, Dense)]


def _vjp_of_mse(layer, params, x, y):
    """∂/∂θ ½‖f(x) − y‖² by fastntk's own reverse mode, a list of (gW, gb) per Dense layer."""
    net = network.pairs(layer, params)
    ct = network.apply(net, x) - y
    return [g for (leaf, _), g in zip(net, network.vjp(net, x, ct)) if isinstance(leaf, Dense)]


def _assert_grads(actual, expected):
    assert len(actual) == len(expected)
    for k, ((gW, gb), (eW, eb)) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(np.asarray(gW), eW, rtol=RTOL_GRAD, atol=1e-14, err_msg=f"W{k}")
        np.testing.assert_allclose(np.asarray(gb), eb, rtol=RTOL_GRAD, atol=1e-14, err_msg=f"b{k}")


# --------------------------------------------------------------------------- JAX
def test_jax_key_draws_neural_tangents_params(jax64, case):
    """init_fn(PRNGKey(init_key), x1.shape) == the fixture's W0, b0, ... (see below), as JAX arrays."""
    arrays, spec = case
    init_fn, _, _ = _fixture_net(spec)
    out_shape, params = init_fn(jax64.random.PRNGKey(spec["init_key"]), arrays["x1"].shape)
    assert out_shape == (arrays["x1"].shape[0], spec["out_dim"])
    dense = [p for p in params if p != ()]
    assert len(dense) == len(spec["hidden_widths"]) + 1
    for k, (W, b) in enumerate(dense):
        assert isinstance(W, jax64.Array)
        _assert_same_draws(np.asarray(W), arrays[f"W{k}"], f"W{k}")
        if spec["b_std"] is None:
            assert b is None
        else:
            _assert_same_draws(np.asarray(b), arrays[f"b{k}"], f"b{k}")


def _assert_same_draws(actual, expected, what):
    """The same random bits: equal but for a few entries of the larger arrays (≤ 5 of 16384 in these
    fixtures) that are 1–2 ulp off. jax 0.10's N(0, 1) transform (√2·erfinv of the uniform) rounds
    those differently from jax 0.4.23's; other bits would change every entry by O(1)."""
    np.testing.assert_array_max_ulp(actual, expected, maxulp=2)
    assert np.count_nonzero(actual != expected) <= max(1, expected.size // 1000), what


def test_jax_key_follows_neural_tangents_tree_walk(jax64):
    """Nested serial and Identity: each Serial splits (key, layer_key) once per child, parameter-free
    children included, and a Dense splits its key into (k1, k2), as neural-tangents 0.6.5 does."""
    random = jax64.random
    init_fn, _, _ = stax.serial(stax.Dense(3, b_std=0.1), stax.Identity(),
                                stax.serial(stax.Relu(), stax.Dense(2, 1.5, 0.2, parameterization="standard")))
    _, params = init_fn(random.PRNGKey(7), (4, 5))
    with jax64.threefry_partitionable(False):
        key, k0 = random.split(random.PRNGKey(7))
        key, _ = random.split(key)  # Identity
        _, k2 = random.split(key)
        _, k21 = random.split(random.split(k2)[0])  # the inner serial: Relu, then Dense
        w0, b0 = random.split(k0)
        w2, b2 = random.split(k21)
        expected = [(random.normal(w0, (5, 3)), random.normal(b0, (1, 3))), (),
                    [(), (random.normal(w2, (3, 2)) * (1.5 / np.sqrt(3)), random.normal(b2, (1, 2)) * 0.2)]]
    flat, tree = jax64.tree_util.tree_flatten(params)
    flat_expected, tree_expected = jax64.tree_util.tree_flatten(expected)
    assert tree == tree_expected
    for a, e in zip(flat, flat_expected):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_jax_apply_matches_fixture_outputs(jax64, case):
    """apply_fn on JAX params and inputs returns a JAX array equal to neural-tangents' f1."""
    arrays, spec = case
    init_fn, apply_fn, _ = _fixture_net(spec)
    _, params = init_fn(jax64.random.PRNGKey(spec["init_key"]), arrays["x1"].shape)
    f1 = apply_fn(params, jax64.numpy.asarray(arrays["x1"]))
    assert isinstance(f1, jax64.Array)
    assert f1.dtype == np.float64
    np.testing.assert_allclose(np.asarray(f1), arrays["f1"], rtol=RTOL_F, atol=RTOL_F)


def test_jax_key_leaves_numpy_draws_alone():
    """An int seed and a NumPy key array still give NumPy params, the same as before."""
    init_fn, _, _ = _net("relu")
    _, a = init_fn(3, (2, 5))
    _, b = init_fn(np.random.default_rng(3), (2, 5))
    assert isinstance(a[0][0], np.ndarray)
    np.testing.assert_array_equal(a[0][0], b[0][0])


@pytest.mark.parametrize("name", NAMES)
def test_jax_grad_equals_network_vjp(jax64, name, rng):
    """jax.grad of an MSE loss of apply_fn w.r.t. params == network.vjp with ct = f − y."""
    jnp = jax64.numpy
    init_fn, apply_fn, _ = _net(name)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    _, params = init_fn(rng, x.shape)

    def loss(p):
        return 0.5 * jnp.sum((apply_fn(p, jnp.asarray(x)) - y) ** 2)

    grads = jax64.grad(loss)(jax64.tree_util.tree_map(jnp.asarray, params))
    _assert_grads(_dense_params(network.pairs(apply_fn.spec, grads)), _vjp_of_mse(apply_fn.spec, params, x, y))


@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "tanh"])
def test_jax_jit_equals_eager(jax64, name, rng):
    init_fn, apply_fn, _ = _net(name)
    _, params = init_fn(jax64.random.PRNGKey(1), (5, 4))
    x = jax64.numpy.asarray(rng.standard_normal((5, 4)))
    np.testing.assert_allclose(np.asarray(jax64.jit(apply_fn)(params, x)), np.asarray(apply_fn(params, x)),
                               rtol=RTOL_GRAD, atol=1e-14)


def test_jax_vmap_over_a_batch_of_inputs(jax64, rng):
    """vmap over a leading axis of (B, N, d) inputs == apply_fn on each (N, d) slice."""
    init_fn, apply_fn, _ = _net("erf")
    _, params = init_fn(jax64.random.PRNGKey(2), (5, 4))
    xb = jax64.numpy.asarray(rng.standard_normal((3, 5, 4)))
    out = jax64.vmap(apply_fn, in_axes=(None, 0))(params, xb)
    assert out.shape == (3, 5, 3)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(out[i]), np.asarray(apply_fn(params, xb[i])),
                                   rtol=RTOL_GRAD, atol=1e-14)


def test_jax_float32_stays_float32():
    """Without x64, the key draws float32 params and apply_fn returns float32."""
    jax = pytest.importorskip("jax")
    ctx = jax.enable_x64(False) if hasattr(jax, "enable_x64") else contextlib.nullcontext()
    with ctx:
        init_fn, apply_fn, _ = _net("gelu")
        _, params = init_fn(jax.random.PRNGKey(0), (5, 4))
        out = apply_fn(params, jax.numpy.ones((5, 4), jax.numpy.float32))
        assert params[0][0].dtype == np.float32
        assert out.dtype == np.float32


# --------------------------------------------------------------------------- PyTorch
@pytest.mark.parametrize("name", NAMES)
def test_torch_autograd_equals_network_vjp(name, rng):
    """loss.backward() on torch tensors fills W.grad, b.grad with network.vjp's gradient."""
    torch = pytest.importorskip("torch")
    init_fn, apply_fn, _ = _net(name)
    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    _, params = init_fn(rng, x.shape)
    tparams = [p if p == () else tuple(torch.tensor(a, requires_grad=True) for a in p) for p in params]
    f = apply_fn(tparams, torch.from_numpy(x))
    assert isinstance(f, torch.Tensor)
    assert f.dtype == torch.float64
    np.testing.assert_allclose(f.detach().numpy(), apply_fn(params, x), rtol=RTOL_GRAD, atol=1e-14)
    loss = 0.5 * ((f - torch.from_numpy(y)) ** 2).sum()
    loss.backward()
    grads = [(W.grad.numpy(), b.grad.numpy()) for W, b in (p for p in tparams if p != ())]
    _assert_grads(grads, _vjp_of_mse(apply_fn.spec, params, x, y))


def test_torch_bad_inputs_named():
    """A complex torch tensor is refused with fastntk's message (torch dtypes have no .kind)."""
    torch = pytest.importorskip("torch")
    init_fn, apply_fn, _ = _net("relu")
    _, params = init_fn(0, (2, 4))
    with pytest.raises(ValueError, match="inputs must be a real array"):
        apply_fn(params, torch.zeros((2, 4), dtype=torch.complex128))
