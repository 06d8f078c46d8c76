"""fastntk.solvers.falkon and the Nyström eigenbasis dynamics: exact at M = N, Nyström-exact for M < N."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

from fastntk import predict, solvers, stax
from fastntk.solvers import _falkon

KERNEL_FN = stax.serial(stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(64, 1.5, 0.1), stax.Relu(),
                        stax.Dense(1, 1.5, 0.1))[2]


def _data(n, n_test=0, d=4, out=2, seed=0):
    """x (n + n_test, d) standard normal and smooth targets with noise (n + n_test, out)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_test, d))
    y = np.sin(x[:, :out]) + 0.1 * rng.standard_normal((n + n_test, out))
    return x, y


@pytest.fixture(scope="module")
def big():
    """N = 2000 train, 300 test points: operators, dense kernels and targets."""
    n = 2000
    x, y = _data(n, 300)
    op, op_test = solvers.KernelOperator(KERNEL_FN, x[:n]), solvers.KernelOperator(KERNEL_FN, x[n:], x[:n])
    return op, op_test, KERNEL_FN(x[:n], None, "ntk"), KERNEL_FN(x[n:], x[:n], "ntk"), y[:n]


def test_cg_on_a_kernel_operator_equals_cholesky(big):
    op, op_test, k, kt, y = big
    dense = predict.kernel_ridge(k, y, 1e-2, k_test_train=kt)
    cg = predict.kernel_ridge(op, y, 1e-2, k_test_train=op_test, solver="cg", preconditioner="nystrom", rank=200,
                              tol=1e-10)
    assert cg.solution.converged and cg.solution.residual.max() <= 1e-10
    for a, b, what in zip(cg, dense, ("dual_coef", "fx_train", "fx_test")):
        assert_close(a, b, 1e-6, f"cg on the KernelOperator: {what}")


def test_falkon_with_every_point_a_centre_is_exact_kernel_ridge(big):
    op, op_test, k, kt, y = big
    dense = predict.kernel_ridge(k, y, 1e-3, k_test_train=kt, fx_train_0=0.2)
    ridge = predict.kernel_ridge(op, y, 1e-3, k_test_train=op_test, fx_train_0=0.2, solver="falkon",
                                 n_centers=2000, memory_budget=0)  # recomputed float64 blocks
    assert np.array_equal(ridge.centers, np.arange(2000))
    assert ridge.solution.iterations <= 2  # the preconditioner is exact at M = N
    assert_close(ridge.dual_coef, dense.dual_coef, 1e-6, "β = (K + λI)⁻¹ (y − f₀)")
    assert_close(ridge.fx_train, dense.fx_train, 1e-6, "fx_train")
    assert_close(ridge.fx_test, dense.fx_test, 1e-6, "fx_test")


def test_nystrom_error_falls_as_centres_grow(big):
    op, _, k, kt, y = big
    exact = kt @ np.linalg.solve(k + 0.1 * np.trace(k) / 2000 * np.eye(2000), y)
    errors = []
    for m in (25, 100, 400, 1600):
        res = solvers.falkon(op, y, 0.1, n_centers=m, tol=1e-8)
        errors.append(np.abs(kt[:, res.centers] @ res.coefficients - exact).max() / np.abs(exact).max())
    assert all(a > 1.5 * b for a, b in zip(errors, errors[1:])), errors  # 0.36, 0.17, 0.12, 0.05 (seed 0)


def test_falkon_preconditioner_cuts_iterations(big):
    """The same M-dimensional system (K_NMᵀ K_NM + λ K_MM) β = K_NMᵀ y by plain CG: ≥ 8× the iterations."""
    op, _, k, _, y = big
    res = solvers.falkon(op, y, 1e-2, n_centers=200, tol=1e-8)
    c, reg = res.centers, res.diag_reg
    prods = solvers.NystromProducts(op, None, c)
    plain = solvers.cg(lambda v: (prods.normal(v) + reg * (k[np.ix_(c, c)] @ v)) / 2000, prods.rmatmat(y) / 2000,
                       1e-8, maxiter=2000)
    assert res.converged and plain.converged
    # the same minimiser (plain CG's residual on the ill-conditioned system bounds its fit only loosely)
    assert_close(prods.matmat(plain.solution), res.fitted, 1e-4, "both solve the normal equations")
    assert res.iterations * 8 < plain.iterations, (res.iterations, plain.iterations)  # 37 vs 442


@pytest.mark.parametrize("sampling", ["uniform", "leverage"])
def test_stored_float32_recomputed_and_seeded(sampling):
    x, y = _data(300)
    op = solvers.KernelOperator(KERNEL_FN, x)
    kw = {"n_centers": 60, "sampling": sampling, "seed": 3, "tol": 1e-9}
    stored = solvers.falkon(op, y, 1e-2, **kw)  # float32 K_NM in memory
    again = solvers.falkon(op, y, 1e-2, **kw)
    recomputed = solvers.falkon(op, y, 1e-2, memory_budget=0, **kw)
    assert np.array_equal(stored.centers, again.centers) and np.array_equal(stored.coefficients, again.coefficients)
    assert np.array_equal(stored.centers, recomputed.centers)
    assert_close(stored.fitted, recomputed.fitted, 1e-5, "float32 store vs float64 blocks")
    other = solvers.falkon(op, y, 1e-2, **{**kw, "seed": 4})
    assert not np.array_equal(other.centers, stored.centers)
    assert len(np.unique(stored.centers)) == 60 and np.all(np.diff(stored.centers) > 0)


def test_leverage_sampling_prefers_isolated_points():
    """A tight cluster of 270 points and 30 spread points: ridge leverage scores pick the spread ones."""
    rng = np.random.default_rng(0)
    x = np.vstack([0.01 * rng.standard_normal((270, 3)) + 1.0, 3 * rng.standard_normal((30, 3))])
    op = solvers.KernelOperator(KERNEL_FN, x)
    reg = 1e-3 * np.mean(op.diagonal())
    lev = _falkon.select_centers(op, None, 30, "leverage", reg, np.random.default_rng(0))
    uni = _falkon.select_centers(op, None, 30, "uniform", reg, np.random.default_rng(0))
    assert (lev >= 270).sum() > 3 * max((uni >= 270).sum(), 1), ((lev >= 270).sum(), (uni >= 270).sum())


def test_early_stopping_keeps_the_best_validated_iterate():
    x, y = _data(400, seed=1)
    op = solvers.KernelOperator(KERNEL_FN, x)
    res = solvers.falkon(op, y, 0.0, n_centers=100, validation=0.25, patience=3, tol=1e-14, maxiter=200)
    assert len(res.validation_rows) == 100 and len(res.validation_history) == res.iterations + 1
    assert res.residual_history.shape == (res.iterations + 1, 2)
    assert res.validation_history[res.best_iteration] == res.validation_history.min()
    assert res.iterations - res.best_iteration == 3  # stopped by patience, not by maxiter
    prods = solvers.NystromProducts(op, res.validation_rows, res.centers)
    mse = np.mean((prods.matmat(res.coefficients) - y[res.validation_rows]) ** 2)
    assert mse == pytest.approx(res.validation_history.min(), rel=1e-12)
    assert not np.isin(res.centers, res.validation_rows).any()


def test_non_convergence_warns_with_the_residual_and_returns_the_best_iterate():
    x, y = _data(300)
    op = solvers.KernelOperator(KERNEL_FN, x)
    with pytest.warns(RuntimeWarning, match=r"maxiter=2 .*relative residual [0-9.e-]+.*best iterate"):
        res = solvers.falkon(op, y, 1e-6, n_centers=100, maxiter=2, tol=1e-12)
    assert not res.converged and res.iterations == 2
    best = res.residual_history[res.best_iteration].max()
    assert best == res.residual_history.max(axis=1).min()


def test_too_many_centres_are_clipped():
    x, y = _data(50)
    op = solvers.KernelOperator(KERNEL_FN, x)
    with pytest.warns(RuntimeWarning, match="n_centers=80 exceeds the 50 distinct training points"):
        res = solvers.falkon(op, y, 1e-3, n_centers=80)
    assert np.array_equal(res.centers, np.arange(50))


def test_duplicate_points_are_one_centre():
    """Every point twice: the 40 distinct ones are the centres, and the fit is exact kernel ridge regression."""
    x, y = _data(40)
    x2, y2 = np.vstack([x, x]), np.vstack([y, y + 0.5])
    op = solvers.KernelOperator(KERNEL_FN, x2)
    with pytest.warns(RuntimeWarning, match="n_centers=80 exceeds the 40 distinct training points"):
        res = solvers.falkon(op, y2, 1e-3, n_centers=80, store_dtype=np.float64)
    assert len(res.centers) == 40 and len(np.unique(x2[res.centers], axis=0)) == 40 and res.jitter == 0
    k = KERNEL_FN(x2, None, "ntk")
    exact = k @ np.linalg.solve(k + 1e-3 * np.trace(k) / 80 * np.eye(80), y2)
    assert_close(res.fitted, exact, 1e-6, "duplicates: the same span of kernel columns")


def test_singular_centre_kernel_gets_a_jitter():
    """Points distinct as floats but equal to the kernel: K_MM is singular, and a jitter is reported."""
    x, y = _data(40)
    op = solvers.KernelOperator(lambda a, b, get: np.ones((len(a), len(b))), x)  # a rank-1 kernel
    with pytest.warns(RuntimeWarning, match="K_MM .*jitter"):
        res = solvers.falkon(op, y, 1e-3, n_centers=10, maxiter=20, tol=1e-6)
    assert res.jitter > 0 and np.isfinite(res.fitted).all()


def test_products_factory_is_used():
    """products= takes any factory (e.g. Dask tasks): same answer as the default."""
    x, y = _data(200)
    op = solvers.KernelOperator(KERNEL_FN, x)
    calls = []

    def factory(op, rows, centers):
        calls.append(rows)
        return solvers.NystromProducts(op, rows, centers, memory_budget=0, store_dtype=np.float64)

    res = solvers.falkon(op, y, 1e-2, n_centers=50, validation=20, products=factory)
    ref = solvers.falkon(op, y, 1e-2, n_centers=50, validation=20, store_dtype=np.float64)
    assert len(calls) == 2 and len(calls[0]) == 180 and len(calls[1]) == 20
    assert_close(res.coefficients, ref.coefficients, 1e-12, "custom products")


def _dense_nystrom(k, kt, c):
    """K̃ = K_NM K_MM⁻¹ K_MN and K̃_test = K_tM K_MM⁻¹ K_MN."""
    solve = np.linalg.solve(k[np.ix_(c, c)], k[c])
    kn = k[:, c] @ solve
    return (kn + kn.T) / 2, kt[:, c] @ solve


@pytest.mark.parametrize("reg", [0.0, 1e-2])
def test_nystrom_dynamics_equal_dense_nystrom_dynamics(reg):
    x, _ = _data(300, 40, d=5)
    y = np.random.default_rng(1).standard_normal((300, 2))
    f0 = 0.3 * np.random.default_rng(2).standard_normal((300, 2))
    op, op_test = solvers.KernelOperator(KERNEL_FN, x[:300]), solvers.KernelOperator(KERNEL_FN, x[300:], x[:300])
    k, kt = KERNEL_FN(x[:300], None, "ntk"), KERNEL_FN(x[300:], x[:300], "ntk")
    fn = predict.gradient_descent_mse_nystrom(op, y, 60, 0.7, reg, True, store_dtype=np.float64)
    kn, ktn = _dense_nystrom(k, kt, fn.centers)
    dense = predict.gradient_descent_mse(kn, y, 0.7, reg, True)
    times = np.array([[0.0, 1.0, 30.0], [1e3, 1e5, 1e7]])
    for a, b in zip(fn(times, f0, 0.1, op_test), dense(times, f0, 0.1, ktn)):
        assert a.shape == b.shape == (2, 3, *a.shape[2:])
        assert_close(a, b, 1e-8, f"Nyström eigenbasis vs dense Nyström kernel, diag_reg={reg}")
    if reg == 0:  # the rank-60 dense K̃ falls back to its pseudo-inverse
        with pytest.warns(RuntimeWarning, match="numerically singular"):
            b = dense(None, f0, 0.1, ktn)
    else:
        b = dense(None, f0, 0.1, ktn)
    for a, b_ in zip(fn(None, f0, 0.1, op_test), b):
        assert_close(a, b_, 1e-8, "t = ∞")
    assert_close(fn(5.0, None, 0.1, op_test), dense(5.0, None, 0.1, ktn), 1e-8, "test only")


def test_nystrom_dynamics_with_every_point_a_centre_are_exact():
    x, y = _data(250, 30, d=5)
    op, op_test = solvers.KernelOperator(KERNEL_FN, x[:250]), solvers.KernelOperator(KERNEL_FN, x[250:], x[:250])
    k, kt = KERNEL_FN(x[:250], None, "ntk"), KERNEL_FN(x[250:], x[:250], "ntk")
    fn = predict.gradient_descent_mse_nystrom(op, y[:250], 250, 1.0, 1e-3, store_dtype=np.float64)
    exact = predict.gradient_descent_mse(k, y[:250], 1.0, 1e-3)
    times = np.logspace(0, 6, 7)
    for a, b in zip(fn(times, 0.0, 0.0, op_test), exact(times, 0.0, 0.0, kt)):
        assert_close(a, b, 1e-8, "M = N: the exact dynamics")


def test_nystrom_limit_is_falkon():
    x, y = _data(300, 40, d=5)
    op, op_test = solvers.KernelOperator(KERNEL_FN, x[:300]), solvers.KernelOperator(KERNEL_FN, x[300:], x[:300])
    fn = predict.gradient_descent_mse_nystrom(op, y[:300], 80, diag_reg=1e-2, seed=5, store_dtype=np.float64)
    ridge = predict.kernel_ridge(op, y[:300], 1e-2, k_test_train=op_test, solver="falkon", n_centers=80, seed=5,
                                 tol=1e-13, maxiter=300, memory_budget=0)
    assert np.array_equal(ridge.centers, fn.centers)
    assert_close(fn(None, None, 0.0, op_test), ridge.fx_test, 1e-8, "t = ∞ test outputs = Nyström KRR")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"n_centers": 0}, ValueError, "n_centers must be an integer >= 1"),
     ({"n_centers": -3}, ValueError, "n_centers"),
     ({"n_centers": 10.5}, TypeError, "n_centers must be an integer"),
     ({"n_centers": True}, TypeError, "n_centers"),
     ({"sampling": "kmeans"}, ValueError, "unknown sampling 'kmeans'"),
     ({"sampling": "leverage", "diag_reg": 0.0}, ValueError, "leverage' needs diag_reg > 0"),
     ({"diag_reg": -1.0}, ValueError, "diag_reg"),
     ({"tol": 0.0}, ValueError, "tol"),
     ({"maxiter": 0}, ValueError, "maxiter"),
     ({"validation": 1.5}, ValueError, "validation must be a fraction"),
     ({"validation": 30}, ValueError, "validation must be an integer in"),
     ({"memory_budget": -1}, ValueError, "memory_budget"),
     ({"seed": "a"}, TypeError, "seed"),
     ({"y": np.ones((29, 2))}, ValueError, "y_train must have 30 rows"),
     ({"y": np.full((30, 2), np.nan)}, ValueError, "y_train contains NaN"),
     ({"op": np.eye(30)}, TypeError, "k_train_train must be a symmetric KernelOperator")],
)
def test_falkon_bad_input_names_the_argument(kwargs, error, match):
    x, y = _data(30)
    args = {"op": solvers.KernelOperator(KERNEL_FN, x), "y": y, "diag_reg": 1e-3, "n_centers": 10, **kwargs}
    with pytest.raises(error, match=match):
        solvers.falkon(args.pop("op"), args.pop("y"), args.pop("diag_reg"), **args)


def test_kernel_ridge_falkon_bad_input():
    x, y = _data(30, 5)
    op = solvers.KernelOperator(KERNEL_FN, x[:30])
    k = KERNEL_FN(x[:30], None, "ntk")
    with pytest.raises(TypeError, match=r"symmetric KernelOperator .* with solver='falkon'"):
        predict.kernel_ridge(k, y[:30], 1e-3, solver="falkon")
    with pytest.raises(TypeError, match="k_test_train must be a KernelOperator"):
        predict.kernel_ridge(op, y[:30], 1e-3, solver="falkon", k_test_train=KERNEL_FN(x[30:], x[:30], "ntk"))
    with pytest.raises(ValueError, match="unknown solver 'falcon'"):
        predict.kernel_ridge(op, y[:30], solver="falcon")
    with pytest.raises(ValueError, match="n_centers"):
        predict.kernel_ridge(op, y[:30], solver="falkon", n_centers=0)
    with pytest.raises(TypeError, match="k_test_train must be a KernelOperator"):
        predict.gradient_descent_mse_nystrom(op, y[:30], 10)(1.0, 0.0, 0.0, np.ones((5, 30)))
    with pytest.raises(TypeError, match="k_train_train must be a symmetric KernelOperator"):
        predict.gradient_descent_mse_nystrom(k, y[:30], 10)


def test_products_match_dense_blocks():
    x, _ = _data(100)
    op = solvers.KernelOperator(KERNEL_FN, x, block_size=7)
    k = KERNEL_FN(x, None, "ntk")
    rows, centers = np.arange(3, 90, 2), np.array([0, 5, 17, 40])
    knm = k[np.ix_(rows, centers)]
    v, w = np.ones((4, 3)), np.arange(len(rows) * 2.0).reshape(-1, 2)
    for budget, stored in ((0, 0), (22 * 4 * 8, 21), (None, len(rows))):  # 22 rows fit: 3 blocks of 7
        prods = _falkon.NystromProducts(op, rows, centers, memory_budget=budget, store_dtype=np.float64)
        assert prods.nbytes == stored * 4 * 8
        assert_close(prods.matmat(v), knm @ v, 1e-13, "matmat")
        assert_close(prods.rmatmat(w), knm.T @ w, 1e-13, "rmatmat")
        assert_close(prods.normal(v), knm.T @ knm @ v, 1e-13, "normal")
        assert_close(prods.gram(), knm.T @ knm, 1e-13, "gram")


def test_progress_bars(capsys):
    x, y = _data(200)
    op = solvers.KernelOperator(KERNEL_FN, x)
    solvers.falkon(op, y, 1e-2, n_centers=40, validation=20, progress=True)
    err = capsys.readouterr().err
    assert "K_NM rows stored" in err and "conjugate gradients" in err and "residual=" in err
