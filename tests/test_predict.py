"""fastntk.predict: neural-tangents fixtures, closed forms, edge cases, large-N paths, bad input."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import scipy.linalg as sl
from scipy.sparse.linalg import aslinearoperator

from fastntk import _types, _validation, predict, solvers, spectrum, stax

from conftest import RTOL, assert_close, fixture_paths, load_fixture

TOL = RTOL["predict"]
PATHS = fixture_paths("predict")
Kernels = collections.namedtuple("Kernels", "nngp ntk")


def _kernel_fn(spec):
    net = dict(spec["net"])
    act = dict(net["activation"])
    act = getattr(stax, act.pop("name"))(**act)
    layers = []
    for width in net["hidden_widths"]:
        layers += [stax.Dense(width, net["W_std"], net["b_std"], parameterization=net["parameterization"]), act]
    layers.append(stax.Dense(net["out_dim"], net["W_std"], net["b_std"], parameterization=net["parameterization"]))
    return stax.serial(*layers).kernel_fn


def _reg(spec):
    return {"diag_reg": spec["diag_reg"], "diag_reg_absolute_scale": spec["diag_reg_absolute_scale"]}


@pytest.fixture(params=PATHS, ids=[p.stem for p in PATHS])
def case(request):
    return load_fixture(request.param)


def _problem(n=12, n_test=5, d=3, out=2, seed=0, rank=None):
    """PSD joint kernel of train+test points (rank-deficient with ``rank``), targets and f0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_test, rank or 2 * (n + n_test) + d))
    k = x @ x.T / x.shape[1] + 0.5
    return k[:n, :n], k[n:, :n], rng.standard_normal((n, out)), 0.3 * rng.standard_normal((n, out))


def _expm_reference(k, ktd, y, f0, ft0, tau):
    """Dense scipy.linalg.expm evaluation of the gradient-flow closed form."""
    n = y.size
    e = sl.expm(-tau * k / n)
    return y + e @ (f0 - y), ft0 + ktd @ np.linalg.solve(k, (e - np.eye(len(k))) @ (f0 - y))


# --- neural-tangents 0.6.5 fixtures --------------------------------------------------------------


@pytest.mark.parametrize("g", ["nngp", "ntk"])
def test_gradient_descent_mse_fixture(case, g):
    a, spec = case
    predict_fn = predict.gradient_descent_mse(a[f"k_train_train_{g}"], a["y_train"], spec["learning_rate"], **_reg(spec))
    args = (a["fx_train_0"], a["fx_test_0"], a[f"k_test_train_{g}"])
    fx_train, fx_test = predict_fn(a["times"], *args)
    assert_close(fx_train, a[f"gd_{g}_fx_train_t"], TOL, "fx_train_t")
    assert_close(fx_test, a[f"gd_{g}_fx_test_t"], TOL, "fx_test_t")
    fx_train, fx_test = predict_fn(None, *args)
    assert_close(fx_train, a[f"gd_{g}_fx_train_inf"], TOL, "fx_train_inf")
    assert_close(fx_test, a[f"gd_{g}_fx_test_inf"], TOL, "fx_test_inf")


def test_gradient_descent_mse_ensemble_fixture(case):
    a, spec = case
    e = predict.gradient_descent_mse_ensemble(_kernel_fn(spec), a["x_train"], a["y_train"], spec["learning_rate"],
                                              **_reg(spec))
    calls = {"test_{}_t": (a["times"], a["x_test"]), "test_{}_inf": (None, a["x_test"]),
             "train_{}_t": (a["times"], None)}
    for name, (t, x_test) in calls.items():
        out = e(t=t, x_test=x_test, get=("nngp", "ntk"), compute_cov=True)
        assert out._fields == ("nngp", "ntk")
        for g in ("nngp", "ntk"):
            assert_close(getattr(out, g).mean, a[f"ens_{g}_" + name.format("mean")], TOL, name)
            assert_close(getattr(out, g).covariance, a[f"ens_{g}_" + name.format("cov")], TOL, name)
    mean = e(t=a["times"], x_test=a["x_test"], get="ntk")
    assert_close(mean, a["ens_ntk_test_mean_t"], TOL, "get='ntk' means")


def test_gp_inference_fixture(case):
    a, spec = case
    k = {w: Kernels(a[f"k_{w}_nngp"], a[f"k_{w}_ntk"]) for w in ("train_train", "test_train", "test_test")}
    gp = predict.gp_inference(k["train_train"], a["y_train"], **_reg(spec))
    out = gp(("nngp", "ntk", "ntkgp"), k["test_train"], k["test_test"])
    for g in ("nngp", "ntk", "ntkgp"):
        assert_close(getattr(out, g).mean, a[f"gp_{g}_mean"], TOL, g)
        assert_close(getattr(out, g).covariance, a[f"gp_{g}_cov"], TOL, g)
    assert_close(gp("ntkgp", k["test_train"]), a["gp_ntkgp_mean"], TOL, "mean only")
    train = gp(None, None, True)
    assert np.array_equal(train.nngp.mean, a["y_train"]) and not train.ntk.covariance.any()


# --- closed forms, conventions, edge cases -------------------------------------------------------


@pytest.mark.parametrize("plain", ["k_train_train", "k_test_train"])
def test_gp_inference_ntk_covariance_needs_both_kernels(plain):
    # One array for both kernels gives an NTK covariance far from the true one; NT raises too.
    k, ktd, y, _ = _problem()
    kdd, ktd2 = Kernels(k, 0.5 * k + 0.1 * np.eye(len(k))), Kernels(ktd, 0.5 * ktd)
    ktt = Kernels(np.eye(ktd.shape[0]), np.eye(ktd.shape[0]))
    args = {"k_train_train": kdd, "k_test_train": ktd2}
    args[plain] = getattr(args[plain], "ntk")
    gp = predict.gp_inference(args["k_train_train"], y)
    with pytest.raises(ValueError, match=f"{plain} is one array.*nngp', 'ntk'"):
        gp("ntk", args["k_test_train"], ktt)
    with pytest.raises(ValueError, match=plain):
        gp(("nngp", "ntk"), args["k_test_train"], ktt)
    mean = gp("ntk", args["k_test_train"])  # means need the NTK only
    assert_close(mean, predict.gp_inference(kdd, y)("ntk", ktd2), RTOL["predict"], "ntk mean")


def test_gp_inference_plain_arrays_keep_nngp_and_ntkgp_covariances():
    k, ktd, y, _ = _problem()
    ktt = np.eye(ktd.shape[0]) + 0.5
    gp, gpk = predict.gp_inference(k, y), predict.gp_inference(Kernels(k, k), y)
    for g in ("nngp", "ntkgp"):
        out, ref = gp(g, ktd, ktt), gpk(g, Kernels(ktd, ktd), Kernels(ktt, ktt))
        assert_close(out.covariance, ref.covariance, RTOL["predict"], g)


def test_gradient_descent_mse_matches_expm_and_conventions():
    k, ktd, y, f0 = _problem()
    ft0 = np.full((ktd.shape[0], y.shape[1]), 0.1)
    predict_fn = predict.gradient_descent_mse(k, y, learning_rate=0.5)
    times = np.array([[0.0, 3.0], [40.0, 700.0]])
    fx_train, fx_test = predict_fn(times, f0, ft0, ktd)
    assert fx_train.shape == (2, 2, *y.shape) and fx_test.shape == (2, 2, *ft0.shape)
    for idx in np.ndindex(times.shape):
        ref_train, ref_test = _expm_reference(k, ktd, y, f0, ft0, 0.5 * times[idx])
        assert_close(fx_train[idx], ref_train, 1e-11, f"train t={times[idx]}")
        assert_close(fx_test[idx], ref_test, 1e-11, f"test t={times[idx]}")
    assert predict_fn(3.0, f0).shape == y.shape  # scalar t, train only
    assert_close(predict_fn(3.0, None, ft0, ktd), predict_fn(3.0, 0.0, ft0, ktd)[1], 1e-15)  # None: f0 = 0
    assert np.array_equal(predict_fn(0.0, f0), f0)  # t = 0 is exact
    assert np.array_equal(predict_fn(None, f0), y)
    assert predict.gradient_descent_mse(k.astype(np.float32), y.astype(np.float32))(1.0).dtype == np.float32


def test_long_time_equals_limit():
    k, ktd, y, f0 = _problem()
    predict_fn = predict.gradient_descent_mse(k, y)
    for t in (1e12, np.inf):
        fx_train, fx_test = predict_fn(t, f0, 0.0, ktd)
        inf_train, inf_test = predict_fn(None, f0, 0.0, ktd)
        assert_close(fx_train, inf_train, 1e-10, "train")
        assert_close(fx_test, inf_test, 1e-10, "test")


def test_rank_deficient_kernel_gives_the_analytic_limits():
    k, ktd, y, f0 = _problem(n=10, rank=3)
    predict_fn = predict.gradient_descent_mse(k, y)
    pinv = np.linalg.pinv(k, rcond=1e-10)
    lim_train, lim_test = f0 + k @ pinv @ (y - f0), ktd @ pinv @ (y - f0)
    with pytest.warns(RuntimeWarning, match="singular"):
        fx_train, fx_test = predict_fn(None, f0, 0.0, ktd)
    for t in (1e12, np.inf):
        tr, te = predict_fn(t, f0, 0.0, ktd)
        assert np.isfinite(tr).all() and np.isfinite(te).all()
        assert_close(tr, lim_train, 1e-9, f"train t={t}")
        assert_close(te, lim_test, 1e-9, f"test t={t}")
    assert_close(fx_train, lim_train, 1e-9, "train None")
    assert_close(fx_test, lim_test, 1e-9, "test None")
    assert np.array_equal(predict_fn(0.0, f0, 0.0, ktd)[0], f0)


def test_tiny_negative_eigenvalues_and_tiny_positive_ones():
    rng = np.random.default_rng(3)
    v, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    lam = np.array([-1e-15, 0.0, 1e-14, 1e-9, 0.5, 1.0, 2.0, 3.0])
    k = (v * lam) @ v.T
    y, f0 = rng.standard_normal((8, 1)), np.zeros((8, 1))
    ktd = k[:3]  # a test set inside the training span keeps the joint kernel PSD
    predict_fn = predict.gradient_descent_mse(k, y)
    tau = 50.0
    z = v.T @ (f0 - y)
    e = np.where(lam > 1e-14, np.expm1(-np.maximum(lam, 0) * tau / 8), 0.0)
    h = np.where(lam > 1e-14, e / np.where(lam > 1e-14, lam, 1), 0.0)  # 1e-9: stable ≈ −τ/n
    fx_train, fx_test = predict_fn(tau, f0, 0.0, ktd)
    assert_close(fx_train, f0 + v @ (e[:, None] * z), 1e-12, "train")
    assert_close(fx_test, ktd @ v @ (h[:, None] * z), 1e-12, "test")
    assert abs(h[3] + tau / 8) < 1e-9 * tau
    with pytest.warns(RuntimeWarning, match="singular"):
        assert np.isfinite(predict_fn(None, f0, 0.0, ktd)[1]).all()


def test_indefinite_kernel_warns_and_clamps():
    k = np.diag([1.0, -0.5])
    predict_fn = predict.gradient_descent_mse(k, np.ones((2, 1)))
    with pytest.warns(RuntimeWarning, match="indefinite"):
        out = predict_fn(1e3, np.zeros((2, 1)))
    assert_close(out, [[1.0], [0.0]], 1e-12)  # the negative direction never trains


def test_discrete_gradient_descent_matches_iteration():
    k, ktd, y, f0 = _problem()
    eta = 0.9 * predict.max_learning_rate(k, y.size)
    predict_fn = predict.gradient_descent_mse(k, y, eta, discrete=True)
    fx_train, fx_test = f0.copy(), np.zeros((ktd.shape[0], y.shape[1]))
    steps = [0, 1, 7, 40]
    got_train, got_test = predict_fn(steps, f0, 0.0, ktd)
    for i in range(41):
        if i in steps:
            assert_close(got_train[steps.index(i)], fx_train, 1e-11, f"train step {i}")
            assert_close(got_test[steps.index(i)], fx_test, 1e-11, f"test step {i}")
        grad = eta / y.size * (fx_train - y)
        fx_train, fx_test = fx_train - k @ grad, fx_test - ktd @ grad
    with pytest.raises(ValueError, match="whole numbers"):
        predict_fn(1.5, f0)
    diverging = predict.gradient_descent_mse(k, y, 1.01 * predict.max_learning_rate(k, y.size), discrete=True)
    with pytest.warns(RuntimeWarning, match="stable maximum"):
        diverging(10, f0)


def test_max_learning_rate():
    k, _, y, _ = _problem()
    top = np.linalg.eigvalsh(k)[-1]
    assert predict.max_learning_rate(k) == pytest.approx(2 * k.shape[0] / (top + 1e-12), rel=1e-13)
    assert predict.max_learning_rate(k, y.size, momentum=0.5) == pytest.approx(3 * y.size / (top + 1e-12), rel=1e-13)


def test_ensemble_train_set_and_scalar_time():
    k, _, y, _ = _problem()
    kernel_fn = stax.serial(stax.Dense(8, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1)).kernel_fn
    x = np.random.default_rng(1).standard_normal((12, 3))
    e = predict.gradient_descent_mse_ensemble(kernel_fn, x, y, diag_reg=1e-3)
    mean = e(t=5.0, get="ntk")
    assert mean.shape == y.shape
    assert_close(mean, predict.gradient_descent_mse(kernel_fn(x, None, "ntk"), y, diag_reg=1e-3)(5.0, 0.0), 1e-12)
    assert np.array_equal(e(t=None, get="nngp"), y)


# --- kernel ridge (λ selection and the spectrum: test_spectrum.py) ---------------------------


def test_kernel_ridge_solvers_agree():
    k, ktd, y, f0 = _problem(n=60, n_test=7)
    reg = 1e-2 * np.trace(k) / 60
    alpha = np.linalg.solve(k + reg * np.eye(60), y - f0)
    for solver in ("cholesky", "eigh", "cg"):
        res = predict.kernel_ridge(k, y, 1e-2, k_test_train=ktd, fx_train_0=f0, fx_test_0=0.2, solver=solver)
        assert_close(res.dual_coef, alpha, 1e-8, solver)
        assert_close(res.fx_train, f0 + k @ alpha, 1e-8, solver)
        assert_close(res.fx_test, 0.2 + ktd @ alpha, 1e-8, solver)
    op = predict.kernel_ridge(aslinearoperator(k), y[:, 0], reg, True, fx_train_0=f0[:, 0], solver="cg")
    assert op.dual_coef.shape == (60,)
    assert_close(op.dual_coef, alpha[:, 0], 1e-8, "LinearOperator")


def test_kernel_ridge_result_is_still_a_triple():
    k, ktd, y, _ = _problem()
    ridge = predict.kernel_ridge(k, y, 1e-3, k_test_train=ktd)
    alpha, fx_train, fx_test = ridge
    assert ridge.centers is None and ridge.solution is None and len(ridge) == 3
    again = pickle.loads(pickle.dumps(predict.kernel_ridge(k, y, 1e-3, solver="cg")))
    assert again.solution.converged and len(again) == 3
    assert_close(again.dual_coef, alpha, 1e-8, "cg after pickling")


def test_kernel_ridge_indefinite_falls_back():
    k = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3, −1
    with pytest.warns(RuntimeWarning) as record:
        res = predict.kernel_ridge(k, np.array([1.0, 1.0]))
    assert any("singular" in str(w.message) for w in record)
    assert_close(res.fx_train, [1.0, 1.0], 1e-12)  # y lies along the positive eigenvector


def test_spectrum_functions_are_reexported():
    for name in ("select_diag_reg", "kernel_spectrum", "convergence_times", "loss_bound", "kernel_alignment"):
        assert getattr(predict, name) is getattr(spectrum, name)
    for name in ("Gaussian", "KernelRidge", "Spectrum", "DiagRegSelection"):
        assert getattr(predict, name) is getattr(_types, name)
    assert predict.gradient_descent_mse_expm is solvers.gradient_descent_mse_expm


# --- caching: no kernel or factorization twice ------------------------------------------------------


def test_ensemble_reuses_kernels_and_factorizations(monkeypatch):
    kernel_fn = stax.serial(stax.Dense(8, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1)).kernel_fn
    calls = []

    def counting(x1, x2=None, get=None, **kw):
        calls.append((len(x1), x2 is None, get))
        return kernel_fn(x1, x2, get, **kw)

    rng = np.random.default_rng(4)
    x, x_test, y = rng.standard_normal((12, 3)), rng.standard_normal((4, 3)), rng.standard_normal((12, 2))
    e = predict.gradient_descent_mse_ensemble(counting, x, y, diag_reg=1e-3)
    cholesky, cho_factor = [], sl.cho_factor
    monkeypatch.setattr(sl, "cho_factor", lambda *a, **k: cholesky.append(1) or cho_factor(*a, **k))
    first = e(t=[1.0, 10.0], x_test=x_test, get="ntk")
    again = e(t=5.0, x_test=x_test.copy(), get="nngp")  # same points: no new test kernel
    limit = e(t=None, x_test=x_test, get="ntk")  # t = ∞ from the cached eigendecomposition
    assert calls == [(12, True, ("nngp", "ntk")), (4, False, ("ntk",)), (4, False, ("nngp",))]
    assert not cholesky
    fresh = predict.gradient_descent_mse_ensemble(kernel_fn, x, y, diag_reg=1e-3)
    assert_close(first, fresh(t=[1.0, 10.0], x_test=x_test, get="ntk"), 1e-12, "ntk")
    assert_close(again, fresh(t=5.0, x_test=x_test, get="nngp"), 1e-12, "nngp")
    assert_close(limit, fresh(t=None, x_test=x_test, get="ntk"), 1e-10, "limit")


def test_test_only_prediction_skips_the_train_set():
    k, ktd, y, f0 = _problem(n=40, n_test=6)
    predict_fn = predict.gradient_descent_mse(k, y, diag_reg=1e-3)
    both = predict_fn([2.0, 50.0], 0.0, 0.1, ktd)
    assert_close(predict_fn([2.0, 50.0], None, 0.1, ktd), both[1], 1e-13, "test only")


# --- bad input ------------------------------------------------------------------------------------


def test_bad_input():
    k, ktd, y, f0 = _problem()
    with pytest.raises(ValueError, match="k_train_train must be square"):
        predict.gradient_descent_mse(k[:, :5], y)
    with pytest.raises(ValueError, match="y_train must have 12 rows"):
        predict.gradient_descent_mse(k, y[:5])
    with pytest.raises(ValueError, match="k_train_train contains NaN"):
        predict.gradient_descent_mse(np.where(np.eye(12) > 0, np.nan, k), y)
    with pytest.raises(ValueError, match="learning_rate"):
        predict.gradient_descent_mse(k, y, learning_rate=-1.0)
    with pytest.raises(ValueError, match="diag_reg"):
        predict.gp_inference(k, y, diag_reg=-1e-3)
    with pytest.raises(TypeError, match="y_train"):
        predict.gradient_descent_mse(k, np.ones((12, 1), dtype=int))
    with pytest.raises(ValueError, match="trace_axes"):
        predict.gradient_descent_mse(k, y, trace_axes=())
    predict_fn = predict.gradient_descent_mse(k, y)
    with pytest.raises(ValueError, match="k_test_train"):
        predict_fn(1.0, f0, 0.0, ktd[:, :4])
    with pytest.raises(ValueError, match="k_test_train is needed"):
        predict_fn(1.0, f0, 0.0)
    with pytest.raises(ValueError, match="fx_train_0"):
        predict_fn(1.0, np.ones((3, 3)))
    with pytest.raises(ValueError, match="t must hold"):
        predict_fn(-1.0, f0)
    with pytest.raises(ValueError, match="unknown get"):
        predict.gp_inference(k, y)("ntgk", ktd)
    with pytest.raises(ValueError, match="unknown get"):
        predict.gradient_descent_mse_ensemble(lambda *a: None, np.ones((12, 3)), y)(1.0, get="ntkgp")
    with pytest.raises(ValueError, match="diag_regs"):
        predict.select_diag_reg(k, y, [0.0, 1.0])
    with pytest.raises(ValueError, match="solver"):
        predict.kernel_ridge(k, y, solver="lu")
    with pytest.raises(ValueError, match="diag_reg_absolute_scale"):
        predict.kernel_ridge(aslinearoperator(k), y, 1e-3, solver="cg")


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda k, ktd, y: predict.gradient_descent_mse(k, y)("a"), TypeError, "t must"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, y)([1.0, np.nan]), ValueError, "t must"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, y)(1j), TypeError, "t must"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, y)(1.0, "a"), TypeError, "fx_train_0"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, y)(1.0, 0.0, 0.0, np.ones(12)), ValueError, "k_test_train"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, y)(1.0, 0.0, "a", ktd), TypeError, "fx_test_0"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, y, learning_rate="a"), TypeError, "learning_rate"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, y, learning_rate=None), TypeError, "learning_rate"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, y, trace_axes="a"), TypeError, "trace_axes"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k[0], y), ValueError, "k_train_train"),
    (lambda k, ktd, y: predict.gradient_descent_mse(None, y), TypeError, "k_train_train"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, None), TypeError, "y_train"),
    (lambda k, ktd, y: predict.gradient_descent_mse(k, "y"), TypeError, "y_train"),
    (lambda k, ktd, y: predict.gp_inference(k[0], y), ValueError, "k_train_train"),
    (lambda k, ktd, y: predict.gp_inference(None, y), TypeError, "k_train_train"),
    (lambda k, ktd, y: predict.gp_inference(k, y)("nngp", ktd[0]), ValueError, "k_test_train"),
    (lambda k, ktd, y: predict.gp_inference(k, y)("nngp", ktd, np.ones(5)), ValueError, "k_test_test"),
    (lambda k, ktd, y: predict.max_learning_rate(k, 2.5), TypeError, "y_train_size"),
    (lambda k, ktd, y: predict.max_learning_rate(k, 0), ValueError, "y_train_size"),
    (lambda k, ktd, y: predict.max_learning_rate(k[0]), ValueError, "ntk_train_train"),
    (lambda k, ktd, y: predict.max_learning_rate(k, momentum=-1.0), ValueError, "momentum"),
    (lambda k, ktd, y: predict.kernel_ridge(k, y, solver="cg", maxiter=2.5), TypeError, "maxiter"),
    (lambda k, ktd, y: predict.kernel_ridge(k, y, solver="cg", maxiter=0), ValueError, "maxiter"),
    (lambda k, ktd, y: predict.kernel_ridge(k, y, solver="cg", tol="a"), TypeError, "tol"),
    (lambda k, ktd, y: predict.kernel_ridge(k, y, 1e-3, solver="cg", preconditioner="nystrom", rank=0), ValueError,
     "rank"),
    (lambda k, ktd, y: predict.kernel_ridge(k, y, 1e-3, solver="cg", preconditioner="nystrom", rank=5, seed="a"),
     TypeError, "seed"),
    (lambda k, ktd, y: predict.kernel_ridge(k, y, k_test_train=ktd[:, :4]), ValueError, "k_test_train"),
    (lambda k, ktd, y: predict.kernel_ridge(k, y, k_test_train=aslinearoperator(ktd[:, :4]), solver="cg"),
     ValueError, "k_test_train"),
    (lambda k, ktd, y: predict.kernel_ridge(k, y, fx_train_0=None), TypeError, "fx_train_0"),
    (lambda k, ktd, y: predict.kernel_ridge(k, y, k_test_train=ktd, fx_test_0=None), TypeError, "fx_test_0"),
])
def test_bad_input_names_the_argument(call, error, match):
    k, ktd, y, _ = _problem()
    with pytest.raises(error, match=match):
        call(k, ktd, y)


def _ensemble(n=12, d=3):
    kernel_fn = stax.serial(stax.Dense(8, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1)).kernel_fn
    x = np.random.default_rng(1).standard_normal((n, d))
    return predict.gradient_descent_mse_ensemble(kernel_fn, x, np.ones((n, 1)), diag_reg=1e-3), kernel_fn, x


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"t": 1.0, "x_test": np.ones((3, 4))}, ValueError, "x_test must have the shape"),
    ({"t": 1.0, "x_test": np.ones(3)}, ValueError, "x_test"),
    ({"t": 1.0, "x_test": "abc"}, TypeError, "x_test"),
    ({"t": -1.0, "x_test": np.ones((3, 3))}, ValueError, "t must"),
    ({"t": "a"}, TypeError, "t must"),
    ({"t": 1.0, "get": "ntkgp"}, ValueError, "unknown get"),
])
def test_ensemble_bad_input_names_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        _ensemble()[0](**kwargs)


def test_ensemble_bad_train_input():
    _, kernel_fn, x = _ensemble()
    with pytest.raises(TypeError, match="x_train"):
        predict.gradient_descent_mse_ensemble(kernel_fn, None, np.ones((12, 1)))
    with pytest.raises(ValueError, match="x_train"):
        predict.gradient_descent_mse_ensemble(kernel_fn, x[:, 0], np.ones((12, 1)))
    with pytest.raises(ValueError, match="learning_rate"):
        predict.gradient_descent_mse_ensemble(kernel_fn, x, np.ones((12, 1)), learning_rate=0.0)


# --- symmetry and memory at the boundary ---------------------------------------------------------


_SQUARE_CALLS = {
    "gradient_descent_mse": lambda k, y: predict.gradient_descent_mse(k, y)(1.0),
    "gradient_descent_mse(None)": lambda k, y: predict.gradient_descent_mse(k, y)(None, 0.0, 0.0, k[:3]),
    "gp_inference": lambda k, y: predict.gp_inference(k, y)("nngp", k[:3]),
    "kernel_ridge": lambda k, y: predict.kernel_ridge(k, y, 1e-3),
    "kernel_ridge(eigh)": lambda k, y: predict.kernel_ridge(k, y, 1e-3, solver="eigh"),
    "max_learning_rate": lambda k, y: predict.max_learning_rate(k),
}


@pytest.mark.parametrize("call", list(_SQUARE_CALLS.values()), ids=list(_SQUARE_CALLS))
def test_asymmetric_kernel_is_refused(call):
    k, _, y, _ = _problem()
    k = k.copy()
    k[2, 7] *= 1.01  # Cholesky and eigh would read different triangles: results 3–7% apart
    with pytest.raises(ValueError, match=r"k_train_train(\.nngp)? must be symmetric|ntk_train_train must be"):
        call(k, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_asymmetry_is_found_in_every_block(dtype):
    for n, (i, j) in ((3, (2, 0)), (600, (5, 1)), (600, (590, 3))):  # inside a diagonal block, and across blocks
        k = np.eye(n, dtype=dtype)
        k[i, j] = 1e-3
        with pytest.raises(ValueError, match="k_train_train must be symmetric"):
            predict.kernel_ridge(k, np.ones(n, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_symmetric_to_rounding_are_accepted(dtype):
    x = np.random.default_rng(5).standard_normal((300, 50)).astype(dtype)
    kernel_fn = stax.serial(stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1)).kernel_fn
    y = np.ones((300, 1), dtype)
    for k in (kernel_fn(x, x.copy(), "ntk"), kernel_fn(x, None, "ntk")):
        predict.gradient_descent_mse(k, y, diag_reg=1e-3)(1.0)
    k = kernel_fn(x, None, "ntk")
    noise = np.triu(np.random.default_rng(6).uniform(-1, 1, k.shape), 1) * 10 * np.finfo(dtype).eps
    rounded = (k * (1 + noise)).astype(dtype)  # 10 eps of one-sided rounding
    predict.kernel_ridge(rounded, y, 1e-3)
    predict.max_learning_rate(rounded)


@pytest.mark.parametrize("call", list(_SQUARE_CALLS.values()), ids=list(_SQUARE_CALLS))
def test_memory_is_checked_before_n_by_n(call, monkeypatch):
    k, _, y, _ = _problem()
    monkeypatch.setattr(_validation, "available_memory", lambda: 1000)  # a 12×12 float64 copy is 1152 bytes
    with pytest.raises(MemoryError, match=r"needs 0\.00 GiB.*alternatives: .*solver='cg'|alternatives: a few power"):
        call(k, y)


def test_matrix_free_paths_allocate_no_n_by_n(monkeypatch):
    k, ktd, y, f0 = _problem()
    monkeypatch.setattr(_validation, "available_memory", lambda: 1000)
    ridge = predict.kernel_ridge(k, y, 1e-3, solver="cg")
    monkeypatch.undo()
    assert_close(ridge.dual_coef, predict.kernel_ridge(k, y, 1e-3).dual_coef, 1e-8, "cg under a tiny budget")


def test_train_set_covariances_check_memory(monkeypatch):
    k, _, y, _ = _problem()
    e, _, _ = _ensemble()
    e(t=1.0, get="nngp")  # the factor exists: only the covariance is left to allocate
    monkeypatch.setattr(_validation, "available_memory", lambda: 5000)
    with pytest.raises(MemoryError, match="train-set covariance"):
        e(t=[1.0, 2.0], get="nngp", compute_cov=True)
    gp = predict.gp_inference(k, y)
    gp("nngp", k[:3])
    monkeypatch.setattr(_validation, "available_memory", lambda: 1000)  # 12×12 float64 = 1152 bytes
    with pytest.raises(MemoryError, match="train-set covariance"):
        gp("nngp", None, k)
