"""fastntk.predict beyond MSE and (N, N) kernels: gradient_descent on any loss (an ODE), momentum,
kernels with the output axes kept (N, N, O, O), and the result dtype rule.

neural-tangents values: tests/compat/generate_predict.py → tests/compat/data/predict.npz.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg as sl

from fastntk import predict, stax

from conftest import assert_close

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # the NumPy-gradient paths are tested all the same
    jax = None
needs_jax = pytest.mark.skipif(jax is None, reason="jax is not installed")

FIXTURE = Path(__file__).parent / "compat" / "data" / "predict.npz"
Kernels = collections.namedtuple("Kernels", "nngp ntk")

#: gradient_descent (rtol 1e-10) against a closed form: the ODE solver's global error, normwise per block
#: (measured ≤ 1.3e-9: the absolute tolerance follows the largest block, small velocity blocks lose a digit).
ODE_TOL = 1e-8
#: gradient_descent against neural-tangents' odeint (rtol = atol = 1.4e-8, 5th order): its error (measured ≤ 4e-8).
NT_ODE_TOL = 1e-7
#: closed forms against neural-tangents (float64 linear algebra, different factorizations).
NT_TOL = 1e-10


@pytest.fixture(scope="module")
def nt():
    z = np.load(FIXTURE, allow_pickle=False)
    return {k: z[k] for k in z.files}


def cross_entropy(fx, y_hat):
    return -jnp.mean(jax.nn.log_softmax(fx) * y_hat)


def mse(fx, y_hat):
    return 0.5 * jnp.mean((fx - y_hat) ** 2)


def mse_grad(fx, y_hat):
    """NumPy gradient of mse."""
    return (fx - y_hat) / y_hat.size


def cross_entropy_grad(fx, y_hat):
    """NumPy gradient of cross_entropy."""
    p = np.exp(fx - fx.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return (p * y_hat.sum(axis=-1, keepdims=True) - y_hat) / y_hat.size


def make_kernels(x1, x2, w_nngp, w_ntk):
    """tests/compat/generate_predict.py's (nngp, ntk) of shape (N1, N2, O, O)."""
    def features(x, w):
        return np.tanh(np.einsum("nd,odp->nop", x, w))

    out = [np.einsum("iap,jbp->ijab", features(x1, w), features(x2, w)) / w.shape[-1] for w in (w_nngp, w_ntk)]
    return out[0], out[0] + out[1]


def nt_kernel_fn(nt):
    def kernel_fn(x1, x2, get, **kwargs):
        nngp, ntk = make_kernels(x1, x1 if x2 is None else x2, nt["w_nngp"], nt["w_ntk"])
        return Kernels(nngp, ntk) if not isinstance(get, str) else {"nngp": nngp, "ntk": ntk}[get]
    return kernel_fn


def nt_kernels(nt):
    (nngp_dd, ntk_dd), (nngp_td, ntk_td) = (make_kernels(a, nt["x"], nt["w_nngp"], nt["w_ntk"])
                                            for a in (nt["x"], nt["x_test"]))
    return Kernels(nngp_dd, ntk_dd), Kernels(nngp_td, ntk_td), Kernels(*make_kernels(nt["x_test"], nt["x_test"],
                                                                                      nt["w_nngp"], nt["w_ntk"]))


def problem(n=8, n_test=5, o=3, seed=0):
    """A PSD (N, N) kernel, its (N_test, N) block, targets (N, O), initial outputs."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n + n_test, 11))
    k_all = a @ a.T / 11 + 0.1
    return (k_all[:n, :n], k_all[n:, :n], rng.standard_normal((n, o)), 0.3 * rng.standard_normal((n, o)),
            0.3 * rng.standard_normal((n_test, o)))


def kron_i(k, o):
    """K ⊗ I_O in neural-tangents' layout (N1, N2, O, O)."""
    return np.einsum("ij,ab->ijab", k, np.eye(o))


# --- neural-tangents values ----------------------------------------------------------------------


@needs_jax
@pytest.mark.parametrize("loss_name", ["ce", "mse"])
def test_gradient_descent_matches_neural_tangents(nt, loss_name):
    loss, y = (cross_entropy, nt["y_onehot"]) if loss_name == "ce" else (mse, nt["y"])
    k_dd, k_td, _ = nt_kernels(nt)
    k2, k2_td = (k[:, :, 0, 0] + k[:, :, 1, 1] for k in (k_dd.ntk, k_td.ntk))
    train, test = predict.gradient_descent(loss, k2, y, 0.7)(nt["t"], nt["f0"], nt["ft0"], k2_td)
    assert_close(train, nt[f"gd_{loss_name}_2d/train"], NT_ODE_TOL, "train, (N, N)")
    assert_close(test, nt[f"gd_{loss_name}_2d/test"], NT_ODE_TOL, "test, (N, N)")
    train, test = predict.gradient_descent(loss, k_dd.ntk, y, 0.7, trace_axes=())(nt["t"], nt["f0"], nt["ft0"],
                                                                                     k_td.ntk)
    assert_close(train, nt[f"gd_{loss_name}_4d/train"], NT_ODE_TOL, "train, (N, N, O, O)")
    assert_close(test, nt[f"gd_{loss_name}_4d/test"], NT_ODE_TOL, "test, (N, N, O, O)")
    fn = predict.gradient_descent(loss, k_dd.ntk, y, 0.7, momentum=0.9, trace_axes=())
    state = fn(nt["t"], predict.ODEState(nt["f0"], nt["ft0"], nt["q0"], nt["qt0"]), None, k_td.ntk)
    assert isinstance(state, predict.ODEState)
    for field in state._fields:
        assert_close(getattr(state, field), nt[f"gd_{loss_name}_momentum/{field}"], NT_ODE_TOL, field)


@pytest.mark.parametrize("reg", [0.0, 1e-2])
def test_gradient_descent_mse_with_output_axes_matches_neural_tangents(nt, reg):
    k_dd, k_td, _ = nt_kernels(nt)
    fn = predict.gradient_descent_mse(k_dd.ntk, nt["y"], 0.7, diag_reg=reg, trace_axes=())
    case = f"mse_4d_reg{reg:g}"
    for t, prefix in ((nt["t"], ""), (None, "inf_")):
        train, test = fn(t, nt["f0"], nt["ft0"], k_td.ntk)
        assert_close(train, nt[f"{case}/{prefix}train"], NT_TOL, f"{prefix}train")
        assert_close(test, nt[f"{case}/{prefix}test"], NT_TOL, f"{prefix}test")


def test_gradient_descent_mse_mixed_kept_and_traced_axes_matches_neural_tangents(nt):
    k_dd, k_td, _ = nt_kernels(nt)
    fn = predict.gradient_descent_mse(k_dd.ntk, nt["mse_3d/y"], diag_reg=1e-3, trace_axes=(-1,))
    train, test = fn(nt["t"], nt["mse_3d/f0"], nt["mse_3d/ft0"], k_td.ntk)
    assert train.shape == nt["mse_3d/train"].shape == (2, 2, 6, 3, 2)
    assert_close(train, nt["mse_3d/train"], NT_TOL, "train")
    assert_close(test, nt["mse_3d/test"], NT_TOL, "test")
    assert_close(fn(None, nt["mse_3d/f0"], nt["mse_3d/ft0"], k_td.ntk)[1], nt["mse_3d/inf_test"], NT_TOL, "t=None")


def test_gp_inference_with_output_axes_matches_neural_tangents(nt):
    k_dd, k_td, k_tt = nt_kernels(nt)
    fn = predict.gp_inference(k_dd, nt["y"], diag_reg=1e-3, trace_axes=())
    for g, v in zip(("nngp", "ntk", "ntkgp"), fn(("nngp", "ntk", "ntkgp"), k_td, k_tt)):
        assert v.covariance.shape == (4, 4, 3, 3)
        assert_close(v.mean, nt[f"gp_{g}/mean"], NT_TOL, f"{g} mean")
        assert_close(v.covariance, nt[f"gp_{g}/cov"], NT_TOL, f"{g} covariance")
    train = fn("nngp", None, k_tt)
    assert_close(train.mean, nt["gp_train/mean"], 0.0, "train mean")
    assert train.covariance.shape == nt["gp_train/cov"].shape == (6, 6, 3, 3)


@pytest.mark.parametrize("t_name", ["t", "inf"])
@pytest.mark.parametrize("x_name", ["test", "train"])
def test_ensemble_with_output_axes_matches_neural_tangents(nt, t_name, x_name):
    fn = predict.gradient_descent_mse_ensemble(nt_kernel_fn(nt), nt["x"], nt["y"], 0.7, diag_reg=1e-3, trace_axes=())
    res = fn(nt["t"] if t_name == "t" else None, nt["x_test"] if x_name == "test" else None, ("nngp", "ntk"),
             compute_cov=True)
    for g, v in zip(("nngp", "ntk"), res):
        case = f"ens_{t_name}_{x_name}_{g}"
        assert v.covariance.shape == nt[f"{case}/cov"].shape
        assert_close(v.mean, nt[f"{case}/mean"], NT_TOL, f"{case} mean")
        assert_close(v.covariance, nt[f"{case}/cov"], 1e-9, f"{case} covariance")


def test_max_learning_rate_with_output_axes_matches_neural_tangents(nt):
    ntk = nt_kernels(nt)[0].ntk
    assert_close(predict.max_learning_rate(ntk), nt["lr/default"], NT_TOL, "default y_train_size")
    assert_close(predict.max_learning_rate(ntk, 18, momentum=0.5), nt["lr/sized"], NT_TOL, "y_train_size, momentum")


# --- gradient_descent: losses, momentum, times, states --------------------------------------------


@needs_jax
def test_mse_ode_agrees_with_the_closed_form():
    k, ktd, y, f0, ft0 = problem()
    t = np.array([0.0, 0.3, 2.0, 15.0])
    for lr in (1.0, 0.05):
        ode = predict.gradient_descent(mse, k, y, lr)(t, f0, ft0, ktd)
        closed = predict.gradient_descent_mse(k, y, lr)(t, f0, ft0, ktd)
        for a, b, what in zip(ode, closed, ("train", "test")):
            assert_close(a, b, ODE_TOL, f"{what}, learning_rate={lr}")


@needs_jax
def test_numpy_loss_gradients_agree_with_jax():
    k, ktd, _, f0, ft0 = problem()
    y = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1]]
    t = np.array([0.5, 4.0])
    by_jax = predict.gradient_descent(cross_entropy, k, y)(t, f0, ft0, ktd)
    by_grad = predict.gradient_descent(None, k, y, loss_grad=cross_entropy_grad)(t, f0, ft0, ktd)

    class CrossEntropy:
        grad = staticmethod(cross_entropy_grad)

        def __call__(self, fx, y_hat):
            raise AssertionError("gradient_descent needs only loss.grad")

    by_method = predict.gradient_descent(CrossEntropy(), k, y)(t, f0, ft0, ktd)
    for a, b, c in zip(by_jax, by_grad, by_method):
        assert_close(b, a, 1e-12, "loss_grad")
        assert_close(c, a, 1e-12, "loss.grad")


@needs_jax
def test_jax_loss_is_differentiated_in_float64_without_x64():
    k, _, y, f0, _ = problem()
    with jax.enable_x64(False):
        ode = predict.gradient_descent(mse, k, y)(1.0, f0)
    assert_close(ode, predict.gradient_descent_mse(k, y)(1.0, f0), ODE_TOL, "float64 gradient")


@pytest.mark.parametrize("lr", [1.0, 0.3])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_momentum_mse_agrees_with_its_linear_solution(lr, momentum):
    """For MSE the momentum flow is linear in (f − y, q): z(τ) = expm(τ A) z_0, τ = √η·t."""
    k, ktd, y, f0, ft0 = problem(n=5, n_test=3, o=2)
    t = np.array([0.7, 3.0])
    state = predict.gradient_descent(None, k, y, lr, momentum, loss_grad=mse_grad)(t, predict.ODEState(f0, ft0), None,
                                                                                    ktd)
    n, c = y.size, (momentum - 1) / np.sqrt(lr)
    kk = np.vstack([k, ktd])
    r = len(kk)
    a = np.zeros((2 * r, 2 * r))
    a[:r, r:] = np.eye(r)
    a[r:, :k.shape[0]] = -kk / n
    a[r:, r:] = c * np.eye(r)
    z0 = np.vstack([f0 - y, ft0, np.zeros((r, 2))])
    for i, ti in enumerate(t):
        z = sl.expm(np.sqrt(lr) * ti * a) @ z0
        assert_close(state.fx_train[i], z[:5] + y, ODE_TOL, "fx_train")
        assert_close(state.fx_test[i], z[5:8], ODE_TOL, "fx_test")
        assert_close(state.qx_train[i], z[8:13], ODE_TOL, "qx_train")
        assert_close(state.qx_test[i], z[13:], ODE_TOL, "qx_test")


def test_times_of_any_shape_and_order():
    k, ktd, y, f0, ft0 = problem()
    fn = predict.gradient_descent(None, k, np.abs(y), loss_grad=cross_entropy_grad)
    t = np.array([[3.0, 0.0], [1.0, 3.0]])
    train, test = fn(t, f0, ft0, ktd)
    assert train.shape == (2, 2, 8, 3)
    assert test.shape == (2, 2, 5, 3)
    np.testing.assert_array_equal(train[0, 1], f0)
    np.testing.assert_array_equal(test[0, 1], ft0)
    np.testing.assert_array_equal(train[0, 0], train[1, 1])
    single = fn(1.0, f0, ft0, ktd)
    assert single[0].shape == (8, 3)
    assert_close(single[0], train[1, 0], 1e-13, "scalar t")
    assert_close(fn(1.0, None, ft0, ktd), fn(1.0, 0.0, ft0, ktd)[1], 1e-13, "test only: f_train_0 = 0")
    assert_close(fn(0.0, f0), f0, 0.0, "t = 0")


@pytest.mark.parametrize("momentum", [None, 0.5])
def test_ode_state_round_trip(momentum):
    k, ktd, _, f0, ft0 = problem()
    y = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1]]
    fn = predict.gradient_descent(None, k, y, 0.5, momentum, loss_grad=cross_entropy_grad)
    mid = fn(1.5, predict.ODEState(f0, ft0), None, ktd)
    assert isinstance(mid, predict.ODEState)
    assert (mid.qx_train is None) == (momentum is None)
    end = fn(2.0, mid, None, ktd)
    direct = fn(3.5, predict.ODEState(f0, ft0), None, ktd)
    for field in ("fx_train", "fx_test", "qx_train", "qx_test"):
        if getattr(direct, field) is not None:
            assert_close(getattr(end, field), getattr(direct, field), ODE_TOL, field)
    assert_close(fn(3.5, f0, ft0, ktd)[1], direct.fx_test, 1e-13, "arrays in, arrays out")
    assert mid.replace(fx_test=None).fx_test is None
    assert set(mid.asdict()) == set(predict.ODEState._fields)
    assert mid.astuple() == tuple(mid)


# --- kernels with the output axes kept: (N, N, O, O) == (N, N) ⊗ I --------------------------------


def test_output_axes_kept_equal_the_traced_kernel():
    k, ktd, y, f0, ft0 = problem()
    k4, ktd4 = kron_i(k, 3), kron_i(ktd, 3)
    t = np.array([0.5, 20.0])
    for t_ in (t, None):
        a = predict.gradient_descent_mse(k, y, 0.5, 1e-3)(t_, f0, ft0, ktd)
        b = predict.gradient_descent_mse(k4, y, 0.5, 1e-3, trace_axes=())(t_, f0, ft0, ktd4)
        for u, v in zip(a, b):
            assert_close(v, u, 1e-12, f"gradient_descent_mse t={t_}")
    a = predict.gradient_descent(None, k, np.abs(y), loss_grad=cross_entropy_grad)(t, f0, ft0, ktd)
    b = predict.gradient_descent(None, k4, np.abs(y), trace_axes=(), loss_grad=cross_entropy_grad)(t, f0, ft0, ktd4)
    for u, v in zip(a, b):
        assert_close(v, u, ODE_TOL, "gradient_descent")
    assert_close(predict.max_learning_rate(k4), predict.max_learning_rate(k, y.size), 1e-12, "max_learning_rate")


def test_output_axes_kept_equal_the_traced_kernel_gp_and_ensemble():
    k, ktd, y, _, _ = problem()
    ktt = ktd @ ktd.T + np.eye(5)
    kk = Kernels(k, 2 * k + np.eye(8))
    kd, kt = Kernels(ktd, 2 * ktd), Kernels(ktt, 2 * ktt + np.eye(5))
    four = [Kernels(*(kron_i(a, 3) for a in pair)) for pair in (kk, kd, kt)]
    a = predict.gp_inference(kk, y, 1e-3)(("nngp", "ntk", "ntkgp"), kd, kt)
    b = predict.gp_inference(four[0], y, 1e-3, trace_axes=())(("nngp", "ntk", "ntkgp"), four[1], four[2])
    for u, v in zip(a, b):
        assert_close(v.mean, u.mean, 1e-12, "gp mean")
        assert_close(v.covariance, kron_i(u.covariance, 3), 1e-12, "gp covariance")

    x = np.arange(13.0)[:, None]  # the points index the precomputed kernels

    def kernel_fn(expand):
        full = {g: np.block([[a, b.T], [b, c]]) for g, a, b, c in zip(("nngp", "ntk"), kk, kd, kt)}

        def fn(x1, x2, get, **kwargs):
            i, j = x1[:, 0].astype(int), (x1 if x2 is None else x2)[:, 0].astype(int)
            return Kernels(*(expand(full[g][np.ix_(i, j)]) for g in ("nngp", "ntk")))
        return fn

    t = np.array([1.0, 8.0])
    for t_ in (t, None):
        for xt in (x[8:], None):
            a = predict.gradient_descent_mse_ensemble(kernel_fn(lambda m: m), x[:8], y, diag_reg=1e-3)(
                t_, xt, compute_cov=True)
            b = predict.gradient_descent_mse_ensemble(kernel_fn(lambda m: kron_i(m, 3)), x[:8], y, diag_reg=1e-3,
                                                      trace_axes=())(t_, xt, compute_cov=True)
            for u, v in zip(a, b):
                assert_close(v.mean, u.mean, 1e-12, f"ensemble mean t={t_}")
                cov = kron_i(u.covariance, 3) if u.covariance.ndim == 2 else np.stack(
                    [kron_i(c, 3) for c in u.covariance])
                assert_close(v.covariance, cov, 1e-12, f"ensemble covariance t={t_}")


# --- the dtype rule ---------------------------------------------------------------------------------


def test_result_dtype_rule_and_override():
    k, ktd, y, f0, ft0 = problem()
    k32, y32 = k.astype(np.float32), y.astype(np.float32)
    kk32 = Kernels(k32, k32)
    calls = {
        "gradient_descent_mse": lambda kk, yy, **kw: predict.gradient_descent_mse(kk, yy, **kw)(1.0, f0, ft0, ktd),
        "gradient_descent": lambda kk, yy, **kw: predict.gradient_descent(None, kk, yy, loss_grad=mse_grad,
                                                                                 **kw)(1.0, f0, ft0, ktd),
        "gp_inference": lambda kk, yy, **kw: predict.gp_inference(Kernels(kk, kk), yy, **kw)("nngp", Kernels(ktd, ktd)),
        "kernel_ridge": lambda kk, yy, **kw: predict.kernel_ridge(kk, yy, k_test_train=ktd, **kw),
    }
    cases = ((k32, y32, {}, np.float32), (k32, y, {}, np.float64), (k, y, {}, np.float64),
             (k32, y32, {"dtype": np.float64}, np.float64), (k, y, {"dtype": "float32"}, np.float32))
    for name, call in calls.items():
        for kk, yy, kw, want in cases:
            out = call(kk, yy, **kw)
            for part in out if isinstance(out, tuple) else (out,):
                assert part is None or part.dtype == want, (name, kw, part.dtype)
    ens = predict.gradient_descent_mse_ensemble(lambda x1, x2, get: kk32, np.ones((8, 1), np.float32), y32)
    assert ens(1.0, None, "nngp", compute_cov=True).covariance.dtype == np.float32
    ens = predict.gradient_descent_mse_ensemble(lambda x1, x2, get, dtype: kk32, np.ones((8, 1)), y32, dtype=np.float64)
    assert ens(None, None, "nngp").dtype == np.float64  # dtype: a kernel_fn keyword that also fixes the result
    assert ens(1.0, None, "nngp", dtype=np.float32).dtype == np.float32
    kernel_fn = stax.serial(stax.Dense(4, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1)).kernel_fn
    x32 = np.random.default_rng(3).standard_normal((8, 3)).astype(np.float32)
    for kw, want in (({}, np.float32), ({"dtype": np.float64}, np.float64)):
        ens = predict.gradient_descent_mse_ensemble(kernel_fn, x32, y32, diag_reg=1e-2, **kw)
        assert ens(1.0, x32[:2], "ntk", compute_cov=True).covariance.dtype == want
    with pytest.raises(TypeError, match="dtype must be"):
        predict.gradient_descent_mse(k, y, dtype=np.int32)


# --- bad input ----------------------------------------------------------------------------------------


def test_bad_input_names_the_argument():
    k, ktd, y, f0, ft0 = problem()
    fn = predict.gradient_descent(None, k, y, loss_grad=mse_grad)
    with pytest.raises(ValueError, match="finite times"):
        fn(None, f0)
    with pytest.raises(ValueError, match="finite times"):
        fn([1.0, np.inf], f0)
    with pytest.raises(ValueError, match="fx_test_0 must be None"):
        fn(1.0, predict.ODEState(f0), ft0, ktd)
    with pytest.raises(ValueError, match="momentum is None"):
        fn(1.0, predict.ODEState(f0, qx_train=f0))
    with pytest.raises(ValueError, match="k_test_train is needed"):
        fn(1.0, f0, ft0)
    with pytest.raises(ValueError, match="qx_train"):
        predict.gradient_descent(None, k, y, momentum=0.5, loss_grad=mse_grad)(1.0, predict.ODEState(f0, qx_train=np.ones(5)))
    if jax is not None:
        with pytest.raises(TypeError, match="loss_grad="):
            predict.gradient_descent(lambda fx, yh: float(np.sum(np.asarray(fx) ** 2)), k, y)
    with pytest.raises(ValueError, match="y_train's shape"):
        predict.gradient_descent(None, k, y, loss_grad=lambda fx, yh: fx[:, 0])
    with pytest.raises(TypeError, match="loss must be callable"):
        predict.gradient_descent("mse", k, y)
    with pytest.raises(ValueError, match="momentum"):
        predict.gradient_descent(None, k, y, momentum=-0.5, loss_grad=mse_grad)
    with pytest.raises(ValueError, match="trace_axes"):
        predict.gradient_descent_mse(kron_i(k, 3), y)
    with pytest.raises(ValueError, match=r"\(N1, N2, 3, 3\)"):
        predict.gp_inference(k, y, trace_axes=())
    with pytest.raises(ValueError, match="first axis"):
        predict.gradient_descent_mse(k, y, trace_axes=(0, 1))
    with pytest.raises(ValueError, match="k_test_train must be of shape"):
        predict.gradient_descent_mse(kron_i(k, 3), y, trace_axes=())(1.0, f0, ft0, kron_i(ktd, 2))
    with pytest.raises(ValueError, match="pair each output axis"):
        predict.max_learning_rate(np.ones((4, 4, 2, 3)))
    with pytest.raises(ValueError, match="ntk_train_train"):
        predict.max_learning_rate(np.ones((4, 4, 2)))
