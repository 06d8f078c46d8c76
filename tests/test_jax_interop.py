"""fastntk where a JAX user's code lives: JAX arrays in and out, under jax.jit, jax.vmap and jax.grad.

kernel_fn, the empirical kernel functions and the predict functions take JAX arrays (concrete or
traced) and give the NumPy path's values; derivatives of kernel_fn (inputs, W_std, b_std) come from
the reference recursion in jax.numpy and are checked against central differences of the NumPy
path and against neural-tangents 0.6.5's autodiff (tests/compat/data/jax_interop.npz, written by
tests/compat/generate_jax_interop.py). Plain JAX functions f(params, x): linearize, taylor_expand,
the empirical kernels, the NTK-vector product and Monte Carlo from a JAX key, against the same file.
"""

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import fastntk
from fastntk import network, predict, stax
from fastntk.empirical import (
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk_fn,
    empirical_ntk_vp_fn,
    linearize,
    monte_carlo_kernel_fn,
    taylor_expand,
)

jax = pytest.importorskip("jax")
jnp = jax.numpy
NT = np.load(Path(__file__).parent / "compat" / "data" / "jax_interop.npz", allow_pickle=False)
RTOL_VALUES = 1e-12  # the callback returns the NumPy path's values: equal up to the reshuffling of a copy
RTOL_NT = 1e-10  # neural-tangents' float64 autodiff and kernels: the same maths, other operations
RTOL_FD = 1e-6  # central differences, step 1e-5 of O(1) inputs: O(h²) truncation, O(eps/h) rounding


@contextlib.contextmanager
def _x64(on):
    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(on):
            yield
    else:  # older jax
        from jax.experimental import disable_x64, enable_x64

        with enable_x64() if on else disable_x64():
            yield


@pytest.fixture(autouse=True)
def x64():
    with _x64(True):
        yield


def _inputs():
    return NT["x1"], NT["x2"]


NETS = {
    "relu": lambda: stax.serial(stax.Dense(8, 1.3, 0.2), stax.Relu(), stax.Dense(3, 1.1, 0.1)),
    "erf-gelu-standard": lambda: stax.serial(stax.Dense(8, 1.3, 0.2, parameterization="standard"), stax.Erf(), stax.Dense(5, 1.2),
                                             stax.Gelu(), stax.Dense(1, parameterization="standard")),
    "sin-abs": lambda: stax.serial(stax.Dense(8, 1.1, 0.3), stax.Sin(1.2, 0.7, 0.3), stax.Dense(8, 0.9),
                                   stax.Abs(), stax.Dense(1, b_std=0.0)),
    "tanh-quadrature": lambda: stax.serial(stax.Dense(8, 1.2, 0.1), stax.Tanh(), stax.Dense(1)),
}


# --------------------------------------------------------------------------- kernel_fn: values
@pytest.mark.parametrize("name", NETS)
def test_kernel_fn_jit_equals_numpy(name):
    """Concrete JAX in, jnp out; under jit the Kernel (a pytree) carries the same kernels, cov1, cov2."""
    x1, x2 = _inputs()
    kernel_fn = NETS[name]()[2]
    ref = kernel_fn(x1, x2)
    concrete = kernel_fn(jnp.asarray(x1), jnp.asarray(x2))
    assert isinstance(concrete.ntk, jax.Array)
    jitted = jax.jit(lambda a, b: kernel_fn(a, b))(x1, x2)
    for got in (concrete, jitted):
        assert got._fields == ("nngp", "ntk")
        for field in ("nngp", "ntk", "cov1", "cov2"):
            assert_close(getattr(got, field), getattr(ref, field), RTOL_VALUES, field)
    sym = jax.jit(lambda a: kernel_fn(a, None, "ntk"))(x1)
    assert_close(sym, kernel_fn(x1, None, "ntk"), RTOL_VALUES, "x2 None")
    diag = jax.jit(lambda a: kernel_fn(a, None, ("ntk", "nngp"), diagonal=True))(x1)
    ref_diag = kernel_fn(x1, None, ("ntk", "nngp"), diagonal=True)
    assert diag.ntk.shape == (5,)
    assert diag.cov2 is None
    assert_close(diag.ntk, ref_diag.ntk, RTOL_VALUES, "diagonal ntk")
    assert_close(diag.nngp, ref_diag.nngp, RTOL_VALUES, "diagonal nngp")


def test_kernel_fn_vmap_over_batches_of_inputs():
    """vmap over (B, N, d) inputs == kernel_fn on each slice (the callback runs once per slice)."""
    x1, x2 = _inputs()
    kernel_fn = NETS["relu"]()[2]
    xb = jnp.stack([jnp.asarray(x1), 2 * jnp.asarray(x1), -jnp.asarray(x1)])
    k = jax.vmap(lambda a: kernel_fn(a, x2, "nngp"))(xb)
    assert k.shape == (3, 5, 4)
    for i in range(3):
        assert_close(k[i], kernel_fn(np.asarray(xb[i]), x2, "nngp"), RTOL_VALUES, f"slice {i}")
    g = jax.vmap(jax.grad(lambda a: kernel_fn(a, x2, "ntk").sum()))(xb)
    assert g.shape == xb.shape
    assert bool(jnp.isfinite(g).all())


def test_kernel_fn_float32_without_x64():
    x1, x2 = _inputs()
    kernel_fn = NETS["relu"]()[2]
    with _x64(False):
        k = jax.jit(lambda a, b: kernel_fn(a, b, "ntk"))(jnp.asarray(x1, jnp.float32), jnp.asarray(x2, jnp.float32))
        assert k.dtype == jnp.float32
    assert_close(k, kernel_fn(x1, x2, "ntk"), 1e-5, "float32")


def test_kernel_fn_jax_errors():
    x1, x2 = _inputs()
    kernel_fn = NETS["relu"]()[2]
    with pytest.raises(ValueError, match="out is for NumPy results"):
        kernel_fn(jnp.asarray(x1), None, "ntk", out=np.empty((5, 5)))
    with pytest.raises(ValueError, match="x2 must have the same number of features"):
        jax.jit(lambda a: kernel_fn(a, x2[:, :2]))(x1)
    with pytest.raises(ValueError, match="x1 must be 2-D"):
        jax.jit(lambda a: kernel_fn(a[0]))(x1)
    with pytest.raises(TypeError, match="W_std must be a real scalar"):
        stax.Dense(3, W_std=jnp.ones(2))


# --------------------------------------------------------------------------- kernel_fn: derivatives
def _central_difference(fn, x, h=1e-5):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (fn(x + e) - fn(x - e)) / (2 * h)
    return g


@pytest.mark.parametrize("name", NETS)
def test_grad_wrt_inputs_equals_central_differences(name):
    """jit(grad) (custom JVP by the reference recursion) == central differences of the compiled path.
    One loss weighs both kernels, so one compilation checks the derivatives of both."""
    x1, x2 = _inputs()
    kernel_fn = NETS[name]()[2]
    weights = np.random.default_rng(3).standard_normal((2, 5, 4))

    def loss(a, b):
        k = kernel_fn(a, b)
        return (k.nngp * weights[0]).sum() + (k.ntk * weights[1]).sum()

    g1, g2 = jax.jit(jax.grad(loss, (0, 1)))(x1, x2)
    assert_close(g1, _central_difference(lambda a: loss(a, x2), x1), RTOL_FD, "d/dx1")
    assert_close(g2, _central_difference(lambda b: loss(x1, b), x2), RTOL_FD, "d/dx2")


def test_grad_eager_symmetric_and_diagonal_is_finite_and_exact():
    """Eager jax.grad; x2 None (coincident points, θ = 0 on the diagonal) and a zero row: finite
    gradients, and the diagonal Σ(x, x), Θ(x, x), smooth in x, equals central differences."""
    x1, _ = _inputs()
    x = np.vstack([x1, np.zeros((1, 3))])
    kernel_fn = NETS["relu"]()[2]

    def diagonal(a):
        return kernel_fn(a, None, "ntk", diagonal=True).sum()

    assert_close(jax.grad(diagonal)(jnp.asarray(x)), _central_difference(diagonal, x), RTOL_FD, "diagonal")
    assert bool(jnp.isfinite(jax.grad(lambda a: kernel_fn(a, None, "ntk").sum())(jnp.asarray(x))).all())


def test_grad_wrt_inputs_equals_neural_tangents():
    x1, x2 = _inputs()
    kernel_fn = stax.serial(stax.Dense(4, 1.4, 0.1), stax.Gelu(), stax.Dense(4, 1.4, 0.1), stax.Relu(),
                            stax.Dense(1, 1.4, 0.1))[2]
    g = jax.jit(jax.jacobian(lambda a: jnp.stack([k.sum() for k in kernel_fn(a, x2)])))(x1)
    assert_close(g[0], NT["grad_x1_nngp"], RTOL_NT, "grad x1 nngp")
    assert_close(g[1], NT["grad_x1_ntk"], RTOL_NT, "grad x1 ntk")


def _phase(W, b, c=0.0):
    """Σ nngp + c·Σ ntk, every Dense layer with W_std = W, b_std = b."""
    x1, x2 = _inputs()
    kernel_fn = stax.serial(stax.Dense(4, W_std=W, b_std=b), stax.Erf(), stax.Dense(4, W_std=W, b_std=b),
                            stax.Relu(), stax.Dense(1, W_std=W, b_std=b))[2]
    k = kernel_fn(x1, x2)
    return k.nngp.sum() + c * k.ntk.sum()


def test_grad_wrt_W_std_b_std():
    """neural-tangents' phase-diagram pattern: jax.grad over W_std and b_std of stax layers (tracers)."""
    c = 0.37
    g = np.array(jax.jit(jax.grad(_phase, (0, 1)))(1.3, 0.2, c))
    assert_close(g, NT["grad_W_b_nngp"] + c * NT["grad_W_b_ntk"], RTOL_NT, "vs neural-tangents")
    h = 1e-5
    fd = [(_phase(1.3 + h, 0.2, c) - _phase(1.3 - h, 0.2, c)) / (2 * h),
          (_phase(1.3, 0.2 + h, c) - _phase(1.3, 0.2 - h, c)) / (2 * h)]
    assert_close(g, fd, RTOL_FD, "vs central differences")
    assert_close(jax.jit(_phase)(1.3, 0.2, c), _phase(1.3, 0.2, c), RTOL_VALUES, "values, traced W_std")


def test_concrete_jax_hyperparameters_are_floats():
    layer = stax.Dense(3, W_std=jnp.asarray(1.5), b_std=jnp.asarray(0.25))
    assert (layer.kernel_fn.spec.W_std, layer.kernel_fn.spec.b_std) == (1.5, 0.25)
    with pytest.raises(ValueError, match="W_std must be finite and >= 0"):
        stax.Dense(3, W_std=jnp.asarray(-1.0))


# --------------------------------------------------------------------------- empirical kernels of stax networks
@pytest.mark.parametrize("axes", [((-1,), ()), ((), ()), ((), (-1,)), ((0, 1), ())])
def test_empirical_fns_of_networks_in_jit(axes):
    """ntk_fn, nngp_fn, kernel_fn of a stax network with JAX params (init_fn with a key), under jit."""
    x1, x2 = _inputs()
    init_fn, apply_fn, _ = NETS["relu"]()
    _, params = init_fn(jax.random.PRNGKey(1), x1.shape)
    np_params = jax.tree_util.tree_map(np.asarray, params)
    b = x1 if axes[0] == (0, 1) else x2
    for fn in (empirical_ntk_fn(apply_fn, *axes), empirical_nngp_fn(apply_fn, *axes)):
        ref = fn(x1, b, np_params)
        got = jax.jit(fn)(x1, b, params)
        assert isinstance(got, jax.Array)
        assert got.shape == ref.shape
        assert_close(got, ref, RTOL_VALUES, f"{axes}")
    kernel_fn = empirical_kernel_fn(apply_fn, *axes)
    k = jax.jit(lambda a, p: kernel_fn(a, None, None, p))(x1, params)
    assert_close(k.ntk, kernel_fn(x1, None, None, np_params).ntk, RTOL_VALUES, "kernel_fn")


# --------------------------------------------------------------------------- plain JAX functions
def _mlp(params, x):
    return jnp.tanh(x @ params["W"] + params["b"]) @ params["V"]


def _mlp_params(tag):
    return {k: jnp.asarray(NT[f"mlp_{tag}_{k}"]) for k in ("W", "b", "V")}


def test_linearize_and_taylor_expand_of_jax_functions():
    x1, _ = _inputs()
    p0, dp = _mlp_params("p0"), _mlp_params("dp")
    p1 = jax.tree_util.tree_map(lambda a, b: a + b, p0, dp)
    f_lin = linearize(_mlp, p0)
    assert_close(f_lin(p1, x1), NT["mlp_lin"], RTOL_NT, "linearize")
    assert_close(fastntk.taylor_expand(_mlp, p0, 1)(p1, x1), NT["mlp_lin"], RTOL_NT, "degree 1")
    for degree in (2, 3):
        assert_close(taylor_expand(_mlp, p0, degree)(p1, x1), NT[f"mlp_taylor{degree}"], RTOL_NT, f"degree {degree}")
    assert_close(taylor_expand(_mlp, p0, 0)(p1, x1), _mlp(p0, x1), 0, "degree 0 = f(θ₀)")
    # f_lin is affine in p: its gradient anywhere is the gradient of f at θ₀
    g_lin = jax.grad(lambda p: f_lin(p, x1).sum())(p1)
    g0 = jax.grad(lambda p: _mlp(p, x1).sum())(p0)
    for k in g0:
        assert_close(g_lin[k], g0[k], RTOL_VALUES, f"grad f_lin {k}")
    assert_close(jax.jit(f_lin)(p1, x1), f_lin(p1, x1), RTOL_VALUES, "jit(f_lin)")
    with pytest.raises(ValueError, match="degree must be a non-negative integer"):
        taylor_expand(_mlp, p0, -1)


def test_linearize_of_a_network_with_jax_params_is_differentiable():
    """init_fn(key) params: linearize(apply_fn, params) is neural-tangents' (jax.jvp), so jax.grad trains it."""
    x1, _ = _inputs()
    init_fn, apply_fn, _ = NETS["erf-gelu-standard"]()
    _, params = init_fn(jax.random.PRNGKey(2), x1.shape)
    f_lin = linearize(apply_fn, params)
    np_lin = linearize(apply_fn, jax.tree_util.tree_map(lambda a: np.asarray(a) + 0.0, params))
    shifted = jax.tree_util.tree_map(lambda a: a * 1.01, params)
    assert_close(f_lin(shifted, jnp.asarray(x1)), np_lin(jax.tree_util.tree_map(np.asarray, shifted), x1),
                 RTOL_VALUES, "JAX vs NumPy linearization")
    grads = jax.jit(jax.grad(lambda p: (f_lin(p, jnp.asarray(x1)) ** 2).sum()))(shifted)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize(("tag", "axes"), [("trace", {}), ("full", {"trace_axes": ()}),
                                       ("diag", {"trace_axes": (), "diagonal_axes": (-1,)})])
def test_empirical_kernels_of_jax_functions_equal_neural_tangents(tag, axes):
    x1, x2 = _inputs()
    p0 = _mlp_params("p0")
    kernel_fn = empirical_kernel_fn(_mlp, **axes)
    for got in (kernel_fn(x1, x2, None, p0), jax.jit(lambda a, b, p: kernel_fn(a, b, None, p))(x1, x2, p0)):
        assert_close(got.nngp, NT[f"mlp_nngp_{tag}"], RTOL_NT, f"nngp {tag}")
        assert_close(got.ntk, NT[f"mlp_ntk_{tag}"], RTOL_NT, f"ntk {tag}")
    np_params = jax.tree_util.tree_map(np.asarray, p0)
    assert isinstance(empirical_nngp_fn(_mlp, **axes)(x1, x2, np_params), np.ndarray)  # NumPy in, NumPy out
    assert_close(empirical_nngp_fn(_mlp, **axes)(x1, x2, np_params), NT[f"mlp_nngp_{tag}"], RTOL_NT, "NumPy nngp")
    # differentiable in the inputs: d/dx1 of Σ Θ̂ is finite and matches central differences
    ntk_fn = jax.jit(lambda a: empirical_ntk_fn(_mlp, **axes)(a, x2, p0).sum())
    assert_close(jax.jit(jax.grad(ntk_fn))(x1), _central_difference(lambda a: float(ntk_fn(a)), x1), RTOL_FD, "d/dx1")


def test_ntk_vp_fn():
    x1, x2 = _inputs()
    p0 = _mlp_params("p0")
    ct = NT["mlp_ct"]
    assert_close(fastntk.empirical_ntk_vp_fn(_mlp, x1, x2, p0)(ct), NT["mlp_ntk_vp"], RTOL_NT, "JAX function")
    assert_close(jax.jit(empirical_ntk_vp_fn(_mlp, x1, x2, p0))(ct), NT["mlp_ntk_vp"], RTOL_NT, "jit")
    init_fn, apply_fn, _ = NETS["relu"]()
    _, params = init_fn(np.random.default_rng(0), x1.shape)
    ct = np.random.default_rng(1).standard_normal((4, 3))
    full = empirical_ntk_fn(apply_fn, (), ())(x1, x2, params)
    got = empirical_ntk_vp_fn(apply_fn, x1, x2, params)(ct)
    assert isinstance(got, np.ndarray)
    assert_close(got, np.einsum("ijab,jb->ia", full, ct), RTOL_VALUES, "stax network, NumPy")
    with pytest.raises(ValueError, match="cotangents must have the shape"):
        empirical_ntk_vp_fn(apply_fn, x1, x2, params)(ct[:2])


def test_monte_carlo_with_a_jax_key_equals_neural_tangents():
    """The key is split as neural-tangents splits it, and init_fn(key) draws its parameters."""
    x1, x2 = _inputs()
    init_fn, apply_fn, _ = stax.serial(stax.Dense(16, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(3, W_std=1.2))
    kernel_fn = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(5), [1, 3])
    for n, k in zip((1, 3), kernel_fn(x1, x2, ("nngp", "ntk"))):
        assert isinstance(k.ntk, jax.Array)
        assert_close(k.nngp, NT[f"mc_nngp_{n}"], RTOL_NT, f"nngp, {n} samples")
        assert_close(k.ntk, NT[f"mc_ntk_{n}"], RTOL_NT, f"ntk, {n} samples")


def test_monte_carlo_of_a_jax_function():
    """A JAX init_fn/apply_fn pair: the average of the per-sample empirical kernels, samples from NT's splits."""
    x1, _ = _inputs()

    def init_fn(key, shape):
        k1, k2, k3 = jax.random.split(key, 3)
        return (shape[0], 2), {"W": jax.random.normal(k1, (3, 6)), "b": jax.random.normal(k2, (6,)),
                               "V": jax.random.normal(k3, (6, 2))}

    key = jax.random.PRNGKey(0)
    got = monte_carlo_kernel_fn(init_fn, _mlp, key, 2)(x1, None, "ntk")
    ntk_fn = empirical_ntk_fn(_mlp)
    total = 0
    for _ in range(2):
        with network._threefry_unpartitioned():  # neural-tangents' splits are those of jax 0.4
            key, split = jax.random.split(key)
            init_key = jax.random.split(split, 2)[0]
        total = total + ntk_fn(x1, None, init_fn(init_key, x1.shape)[1])
    assert_close(got, total / 2, RTOL_VALUES, "average")


# --------------------------------------------------------------------------- predict
def test_predict_fns_in_jit():
    x1, x2 = _inputs()
    y = np.random.default_rng(4).standard_normal((5, 2))
    kernel_fn = NETS["relu"]()[2]
    k, kt, ktt = kernel_fn(x1, None), kernel_fn(x2, x1), kernel_fn(x2, None)
    as_jax = jax.tree_util.Partial(jax.tree_util.tree_map, jnp.asarray)

    mse = predict.gradient_descent_mse(k.ntk, y)
    ref = mse(np.array([0.5, 2.0]), 0.0, 0.0, kt.ntk)
    got = jax.jit(lambda t, ktd: mse(t, 0.0, 0.0, ktd))(jnp.array([0.5, 2.0]), jnp.asarray(kt.ntk))
    inside = jax.jit(lambda K, Y: predict.gradient_descent_mse(K, Y)(jnp.array([0.5, 2.0]), 0.0, 0.0, kt.ntk))(k.ntk, y)
    for g in (got, inside):
        assert g[0].shape == (2, 5, 2)
        assert g[1].shape == (2, 4, 2)
        for a, b in zip(g, ref):
            assert_close(a, b, RTOL_VALUES, "gradient_descent_mse")

    gp = predict.gp_inference(k, y)
    ref = gp(None, kt, ktt)
    got = jax.jit(lambda a, b: gp(None, a, b))(as_jax(kt), as_jax(ktt))
    inside = jax.jit(lambda K: predict.gp_inference(K, y)(None, kt, ktt))(as_jax(k))
    for g in (got, inside):
        assert g._fields == ("nngp", "ntk")
        assert_close(g.ntk.covariance, ref.ntk.covariance, RTOL_VALUES, "gp_inference covariance")
        assert_close(g.nngp.mean, ref.nngp.mean, RTOL_VALUES, "gp_inference mean")

    ens = predict.gradient_descent_mse_ensemble(kernel_fn, x1, y)
    ref = ens(3.0, x2, "ntk", compute_cov=True)
    got = jax.jit(lambda xt: ens(3.0, xt, "ntk", compute_cov=True))(jnp.asarray(x2))
    inside = jax.jit(lambda X, Y: predict.gradient_descent_mse_ensemble(kernel_fn, X, Y)(3.0, x2, "ntk", True))(x1, y)
    for g in (got, inside):
        assert_close(g.mean, ref.mean, RTOL_VALUES, "ensemble mean")
        assert_close(g.covariance, ref.covariance, RTOL_VALUES, "ensemble covariance")
    assert isinstance(predict.gradient_descent_mse(jnp.asarray(k.ntk), y)(1.0), jax.Array)


def test_fixture_provenance():
    spec = json.loads(str(NT["spec"]))
    assert spec["nt_version"] == "0.6.5"
