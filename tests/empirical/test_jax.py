"""fastntk.empirical._jax: plain JAX functions of a parameter pytree."""


import numpy as np
import pytest
from _nets import TOL
from conftest import RTOL, assert_close

from fastntk import stax
from fastntk.empirical import empirical_ntk_fn, pseudo_ntk


@pytest.fixture
def jax64():
    """jax with jax_enable_x64 on for the test, restored afterwards."""
    jax = pytest.importorskip("jax")
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", old)


def _jax_mlp(params, x):
    """Dense(7) → tanh → Dense(3), 'standard' parameterization z = h W + b, params [(W0, b0), (W1, b1)]."""
    jnp = pytest.importorskip("jax.numpy")
    (W0, b0), (W1, b1) = params
    return jnp.tanh(x @ W0 + b0) @ W1 + b1


def _jax_reference(f, params, x):
    """Full (N, N, O, O) NTK of the rows x by jax.jacobian of the whole batch, contracted leaf by leaf."""
    jax = pytest.importorskip("jax")
    jac = [np.asarray(j).reshape(x.shape[0], -1, int(np.prod(j.shape[2:], dtype=int)))
           for j in jax.tree_util.tree_leaves(jax.jit(jax.jacobian(f))(params, x))]
    return sum(np.einsum("iap,jbp->ijab", a, a) for a in jac)


@pytest.mark.parametrize("implementation", [1, 2, 3])
def test_jax_mlp_equals_stax_standard(jax64, implementation, rng):
    """A jax.numpy MLP == the same stax network ('standard'): trace, full, diagonal, pseudo; x2 None or given."""
    init_fn, apply_fn, _ = stax.serial(stax.Dense(7, 1.0, 1.0, parameterization="standard"), stax.Tanh(),
                                       stax.Dense(3, 1.0, 1.0, parameterization="standard"))
    x1, x2 = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    _, params = init_fn(rng, x1.shape)
    jparams = [params[0], params[2]]
    for t, d in (((-1,), ()), ((), ()), ((), (-1,))):
        for xb, rows in ((x2, None), (None, None), (None, 2)):
            ref = empirical_ntk_fn(apply_fn, t, d)(x1, xb, params)
            k = empirical_ntk_fn(_jax_mlp, t, d, implementation=implementation)(x1, xb, jparams, block_rows=rows)
            assert isinstance(k, np.ndarray)
            assert k.dtype == np.float64
            assert_close(k, ref, TOL, f"trace_axes={t} diagonal_axes={d} x2={xb is not None} block_rows={rows}")
    assert_close(pseudo_ntk(_jax_mlp, x1, x2, jparams, implementation=implementation),
                 pseudo_ntk(apply_fn, x1, x2, params), TOL, "pseudo")


def test_jax_generic_function_against_jacobian(jax64, rng):
    """A residual tanh-of-a-sum function with a nested dict pytree: == jax.jacobian einsum; 1 == 2."""
    import functools

    jnp = jax64.numpy

    def f(p, x):
        h = jnp.tanh(x @ p["inp"]["W"] + p["inp"]["b"])
        return (h + jnp.tanh(h @ p["hidden"] + x[:, :1])) @ p["out"][0]

    p = {"inp": {"W": rng.standard_normal((3, 6)), "b": rng.standard_normal(6)},
         "hidden": rng.standard_normal((6, 6)) / 2, "out": [rng.standard_normal((6, 2))]}
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    ref = _jax_reference(f, p, np.concatenate([x1, x2]))
    full, sym = ref[:5, 5:], ref[:5, :5]
    for implementation in (1, 2):
        ntk = functools.partial(empirical_ntk_fn, f, implementation=implementation)
        assert_close(ntk(())(x1, x2, p), full, TOL, f"full implementation={implementation}")
        assert_close(ntk(())(x1, None, p, block_rows=2), sym, TOL, f"x2=None implementation={implementation}")
        assert_close(ntk()(x1, x2, p), np.einsum("ijaa->ij", full) / 2, TOL, "trace")
        assert_close(ntk((), (-1,))(x1, x2, p), np.einsum("ijaa->ija", full), TOL, "diagonal")
        assert_close(ntk((0,))(x1, None, p), np.einsum("iiab->ab", sym) / 5, TOL, "trace over the batch axis")
        assert_close(pseudo_ntk(f, x1, x2, p, implementation=implementation), full.sum((2, 3)) / 2, TOL, "pseudo")


def test_jax_float32_follows_inputs(rng):
    """float32 inputs → float32 result; float64 inputs → float64 even with jax_enable_x64 off.
    JAX inputs give JAX arrays (computed in JAX), NumPy inputs NumPy arrays."""
    jax = pytest.importorskip("jax")
    x = rng.standard_normal((6, 4))
    _, params = stax.serial(stax.Dense(7, 1.0, 1.0, parameterization="standard"), stax.Tanh(),
                            stax.Dense(3, 1.0, 1.0, parameterization="standard"))[0](rng, x.shape)
    jparams = [params[0], params[2]]
    ntk_fn = empirical_ntk_fn(_jax_mlp)
    k32 = ntk_fn(jax.numpy.asarray(x, np.float32), None, jparams)
    k64 = ntk_fn(x, None, jparams)
    assert isinstance(k32, jax.Array) and isinstance(k64, np.ndarray)
    assert (k32.dtype, k64.dtype) == (np.float32, np.float64)
    assert_close(k32, k64, RTOL["float32_vs_float64"], "float32")


def test_jax_bad_inputs(monkeypatch, rng):
    import sys

    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    p = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    x = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match=r"f\(params, x\) must return an array of shape \(N, O\)"):
        empirical_ntk_fn(lambda p, x: (x @ p["W"])[..., None])(x, None, p)
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        empirical_ntk_fn(lambda p, x: jnp.sum(x @ p["W"]))(x, None, p)
    f = empirical_ntk_fn(lambda p, x: jnp.tanh(x @ p["W"]) + p["b"])
    with pytest.raises(TypeError, match=r"params\['b'\]"):
        f(x, None, {**p, "b": np.arange(2)})
    with pytest.raises(ValueError, match="params must be a pytree"):
        f(x, None, {})
    with pytest.raises(ValueError, match="x2"):
        f(x, np.ones((2, 4)), p)
    with pytest.raises(ValueError, match="block_rows"):
        f(x, None, p, block_rows=0)
    with pytest.raises(TypeError, match="jax cannot trace"):
        empirical_ntk_fn(lambda p, x: np.asarray(x) @ p["W"])(x, None, p)
    monkeypatch.delitem(sys.modules, "jax")  # without jax imported, an unknown callable is refused
    with pytest.raises(TypeError, match="apply_fn"):
        empirical_ntk_fn(lambda p, x: x)


def test_jax_bad_params_and_inputs_name_the_argument(rng):
    """NaN/inf leaves are named; a pytree or x1 that f cannot take is reported against params and x1."""
    jnp = pytest.importorskip("jax.numpy")
    p = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    x = rng.standard_normal((4, 3))

    def f(p, x):
        return jnp.tanh(x @ p["W"]) + p["b"]

    with pytest.raises(ValueError, match=r"params\['W'\] contains NaN"):
        empirical_ntk_fn(f)(x, None, {**p, "W": np.full((3, 2), np.nan)})
    with pytest.raises(ValueError, match=r"params\['b'\] contains inf"):
        pseudo_ntk(f, x, None, {**p, "b": np.full(2, np.inf)})
    with pytest.raises(ValueError, match=r"raised TypeError for params and x1 of shape \(4, 5\)"):
        empirical_ntk_fn(f)(rng.standard_normal((4, 5)), None, p)
    with pytest.raises(ValueError, match="raised TypeError for params and x1"):
        empirical_ntk_fn(f)(x, None, [p["W"]])
    with pytest.raises(TypeError, match=r"params\['W'\] must be a floating-point array"):
        empirical_ntk_fn(f)(x, None, {"W": "ab", "b": p["b"]})
    with pytest.raises(ValueError, match="N1 == N2"):
        empirical_ntk_fn(f, (0,))(x, x[:2], p)
