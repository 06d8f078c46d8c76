"""fastntk.solvers: the matrix-free paths give the dense answers; Nyström PCG; the factored eigenbasis."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl
from scipy.sparse.linalg import aslinearoperator

from fastntk import predict, solvers, stax

from conftest import assert_close


def _problem(n=150, n_test=20, out=2, seed=0, d=10):
    """PSD joint kernel of train + test points with a decaying spectrum, targets and f0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_test, d))
    k = stax.serial(stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1))[2](x, None, "ntk")
    return k[:n, :n], k[n:, :n], rng.standard_normal((n, out)), 0.3 * rng.standard_normal((n, out)), x


def test_expm_multiply_equals_dense():
    k, ktd, y, f0, _ = _problem()
    times = np.array([30.0, 0.0, 5.0])
    dense = predict.gradient_descent_mse(k, y, 0.7, diag_reg=1e-3, diag_reg_absolute_scale=True)(times, f0, 0.1, ktd)
    krylov = solvers.gradient_descent_mse_expm(k, y, times, f0, 0.1, ktd, 0.7, 1e-3, True)
    for a, b in zip(krylov, dense):
        assert_close(a, b, 1e-9, "expm_multiply vs eigh")
    op = solvers.gradient_descent_mse_expm(aslinearoperator(k), y, 5.0, f0, learning_rate=0.7, diag_reg=1e-3,
                                           diag_reg_absolute_scale=True)
    assert_close(op, dense[0][2], 1e-9, "LinearOperator")
    test_only = predict.gradient_descent_mse_expm(k, y, times, None, 0.1, ktd, 0.7, 1e-3, True)  # the alias
    dense_test = predict.gradient_descent_mse(k, y, 0.7, 1e-3, True)(times, None, 0.1, ktd)  # f_train_0 = 0
    assert_close(test_only, dense_test, 1e-9, "test only")


def test_kernel_operator_is_the_kernel_in_blocks():
    _, _, y, _, x = _problem(n=40, n_test=0)
    kernel_fn = stax.serial(stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1))[2]
    op = solvers.kernel_operator(kernel_fn, x, "ntk", block_size=7)
    k = kernel_fn(x, None, "ntk")
    assert_close(op @ y, k @ y, 1e-13, "matmat")
    assert_close(op @ y[:, 0], k @ y[:, 0], 1e-13, "matvec")
    ridge = predict.kernel_ridge(op, y, 1e-2, True, solver="cg")
    assert_close(ridge.dual_coef, np.linalg.solve(k + 1e-2 * np.eye(40), y), 1e-8, "kernel_ridge on the operator")


@pytest.mark.parametrize("preconditioner", [None, "nystrom"])
def test_cg_kernel_ridge_equals_cholesky(preconditioner):
    k, ktd, y, f0, _ = _problem(n=200)
    dense = predict.kernel_ridge(k, y, 1e-3, k_test_train=ktd, fx_train_0=f0)
    cg = predict.kernel_ridge(k, y, 1e-3, k_test_train=ktd, fx_train_0=f0, solver="cg",
                              preconditioner=preconditioner, rank=30)
    for a, b in zip(cg, dense):
        assert_close(a, b, 1e-8, f"cg ({preconditioner})")


def test_nystrom_preconditioner_cuts_iterations():
    k, _, y, _, _ = _problem(n=300, d=3)  # low-dimensional inputs: a fast-decaying spectrum
    mu = 1e-5 * np.trace(k) / 300

    def matmat(v):
        return k @ v + mu * v

    plain = solvers.cg(matmat, y, 1e-8, maxiter=3000)
    pcg = solvers.cg(matmat, y, 1e-8, preconditioner=solvers.nystrom_preconditioner(k, mu, 100, seed=1))
    exact = np.linalg.solve(k + mu * np.eye(300), y)
    assert_close(pcg.solution, exact, 1e-6, "PCG")
    assert (pcg.residual <= 1e-8).all() and (plain.residual <= 1e-8).all()
    assert pcg.iterations * 4 < plain.iterations, (pcg.iterations, plain.iterations)  # 59 vs 335
    # the preconditioner is symmetric positive definite and deterministic for a seed
    p = solvers.nystrom_preconditioner(k, mu, 100, seed=1)(np.eye(300))
    assert_close(p, p.T, 1e-12, "symmetric")
    assert np.linalg.eigvalsh((p + p.T) / 2)[0] > 0
    assert np.array_equal(p, solvers.nystrom_preconditioner(k, mu, 100, seed=1)(np.eye(300)))


def test_cg_warns_at_maxiter():
    k, _, y, _, _ = _problem(n=100)
    with pytest.warns(RuntimeWarning, match=r"maxiter=3 iterations above tol=1e-12: relative residual [0-9.e-]+ "
                                            r"\(largest column\); returning the best iterate, iteration [0-3]"):
        res = solvers.cg(lambda v: k @ v, y, 1e-12, maxiter=3)
    assert res.iterations == 3 and (res.residual > 1e-12).all() and not res.converged
    assert res.history.shape == (4, 2) and np.array_equal(res.residual, res.history[res.best_iteration])
    assert res.history[res.best_iteration].max() == res.history.max(axis=1).min()
    x, _, _ = res  # still the (solution, iterations, residual) triple
    assert x is res.solution


def test_cg_returns_the_best_iterate_of_a_monitor_and_stops_early():
    k, _, y, _, _ = _problem(n=100)
    target = np.linalg.solve(k + np.eye(100), y) * 0.5  # the iterates pass near it, then leave
    res = solvers.cg(lambda v: k @ v + v, y, 1e-14, maxiter=80, monitor=lambda x: float(np.abs(x - target).max()),
                     patience=4)
    assert res.monitor.shape == (res.iterations + 1,) and res.monitor[res.best_iteration] == res.monitor.min()
    assert res.iterations - res.best_iteration == 4 and not res.converged
    assert np.abs(res.solution - target).max() == res.monitor.min()


def test_cg_on_a_kernel_operator_with_relative_diag_reg():
    _, _, y, _, x = _problem(n=60, n_test=0)
    kernel_fn = stax.serial(stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1))[2]
    op, k = solvers.kernel_operator(kernel_fn, x, "ntk", block_size=9), kernel_fn(x, None, "ntk")
    ridge = predict.kernel_ridge(op, y, 1e-2, solver="cg")  # trace(K)/N from the operator's diagonal
    assert_close(ridge.dual_coef, predict.kernel_ridge(k, y, 1e-2).dual_coef, 1e-8, "relative diag_reg")
    assert ridge.solution.converged and ridge.centers is None
    with pytest.raises(ValueError, match="has no diagonal"):
        predict.kernel_ridge(aslinearoperator(k), y, 1e-2, solver="cg")


@pytest.mark.parametrize("n", [1, 2, 3, 300, 600])
def test_factored_eigenbasis_is_an_eigendecomposition(n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n + 2))
    k = a @ a.T
    lam, basis = solvers.eigh_factored(np.array(k, order="F"))
    assert_close(lam, np.linalg.eigvalsh(k), 1e-13, "eigenvalues")
    x = rng.standard_normal((n, 3))
    vx = basis.apply(x)
    assert_close(k @ vx, basis.apply(lam[:, None] * x), 1e-12, "K V = V Λ")
    assert_close(basis.apply_t(vx), x, 1e-12, "V^T V = I")
    assert_close(basis.apply_t(k @ x), lam[:, None] * basis.apply_t(x), 1e-12, "V^T K = Λ V^T")
    v = basis.dense()
    assert_close(v.T @ v, np.eye(n), 1e-12, "dense V orthogonal")
    assert_close(basis.apply(x), vx, 1e-12, "dense apply")


def test_factored_eigenbasis_touches_no_input_and_keeps_two_arrays():
    k, ktd, y, f0, _ = _problem(n=400, n_test=30)
    k_copy = k.copy()
    fn = predict.gradient_descent_mse(k, y, diag_reg=1e-4)
    fx_train, fx_test = fn([1.0, 1e3], f0, 0.0, ktd)
    assert np.array_equal(k, k_copy)
    basis = solvers.KernelFactor(k, 1e-4, False, "k").eig()[1]
    assert basis.reflectors.shape == basis.s.shape == (400, 400)  # two N×N arrays: reflectors and S
    lam, vecs = sl.eigh(k + 1e-4 * np.trace(k) / 400 * np.eye(400))
    e = np.expm1(-lam[None, :] * np.array([[1.0], [1e3]]) / y.size)
    z = vecs.T @ (f0 - y)
    assert_close(fx_train, f0 + np.einsum("ij,tj,jm->tim", vecs, e, z), 1e-11, "train vs scipy eigh")
    assert_close(fx_test, np.einsum("ai,ij,tj,jm->tam", ktd, vecs, e / lam, z), 1e-10, "test vs scipy eigh")


def test_bad_input():
    k, _, y, _, x = _problem(n=20, n_test=0)
    with pytest.raises(ValueError, match="rank"):
        solvers.nystrom_preconditioner(k, 1e-3, 21)
    with pytest.raises(ValueError, match="preconditioner"):
        predict.kernel_ridge(k, y, 1e-3, solver="cg", preconditioner="jacobi")
    with pytest.raises(ValueError, match="block_size"):
        solvers.kernel_operator(lambda *a: None, x, block_size=0)
    with pytest.raises(TypeError, match="kernel_fn"):
        solvers.kernel_operator(None, x)
    with pytest.raises(ValueError, match="t must be finite"):
        solvers.gradient_descent_mse_expm(k, y, np.inf)
    with pytest.raises(ValueError, match="diag_reg_absolute_scale"):
        solvers.gradient_descent_mse_expm(aslinearoperator(k), y, 1.0, diag_reg=1e-3)
    with pytest.raises(TypeError, match="LinearOperator only with solver='cg'"):
        predict.kernel_ridge(aslinearoperator(k), y)


def test_eigh_factored_survives_mrrr_failure(monkeypatch):
    """When stemr does not converge, the implicit-QL driver takes over."""
    import scipy.linalg as sl

    from fastntk import solvers

    real = sl.eigh_tridiagonal

    def failing_stemr(d, e, lapack_driver="auto", **kwargs):
        if lapack_driver == "stemr":
            raise np.linalg.LinAlgError("stemr (eigh_tridiagonal) did not converge (LAPACK info=22)")
        return real(d, e, lapack_driver=lapack_driver, **kwargs)

    monkeypatch.setattr(sl, "eigh_tridiagonal", failing_stemr)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 40))
    k = a @ a.T
    lam, basis = solvers.eigh_factored(k.copy())
    v = basis.apply(np.eye(40))
    np.testing.assert_allclose(v @ np.diag(lam) @ v.T, k, atol=1e-10 * np.abs(k).max())


def test_cg_refuses_nan():
    k, _, y, _, _ = _problem(n=20, n_test=0)
    with pytest.raises(ValueError, match="b contains NaN"):
        solvers.cg(lambda v: k @ v, np.where(np.arange(20)[:, None] == 3, np.nan, y))
    with pytest.raises(ValueError, match="matmat returned NaN"):
        solvers.cg(lambda v: k @ v * np.nan, y)
    with pytest.raises(ValueError, match="preconditioner returned NaN"):
        solvers.cg(lambda v: k @ v, y, preconditioner=lambda v: v * np.nan)
    calls = []

    def failing_later(v):
        calls.append(1)
        return v if len(calls) < 3 else v * np.nan

    with pytest.raises(ValueError, match="broke down at iteration 1"):
        solvers.cg(lambda v: k @ v, y, preconditioner=failing_later)
    with pytest.raises(TypeError, match="maxiter"):
        solvers.cg(lambda v: k @ v, y, maxiter=2.5)
    with pytest.raises(ValueError, match="maxiter"):
        solvers.cg(lambda v: k @ v, y, maxiter=-1)
    with pytest.raises(ValueError, match="tol"):
        solvers.cg(lambda v: k @ v, y, tol=-1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_eigh_factored_refuses_non_finite(bad):
    """LAPACK's MRRR loops forever on NaN: the input is checked first."""
    k = np.eye(6, order="F")
    k[2, 4] = k[4, 2] = bad
    with pytest.raises(ValueError, match="k_reg contains"):
        solvers.eigh_factored(k)


def test_eigh_factored_refuses_overflow():
    k = np.full((4, 4), 1e308, order="F")  # finite, but the tridiagonal reduction overflows
    with pytest.raises(ValueError, match="tridiagonal form"):
        solvers.eigh_factored(k)


@pytest.mark.parametrize("routine", ["dsytrd", "dormqr"])
def test_lapack_info_is_checked(routine, monkeypatch):
    import scipy.linalg.lapack as lapack

    real = getattr(lapack, routine)

    def failing(*args, **kwargs):
        out = real(*args, **kwargs)
        return (*out[:-1], -3)  # an illegal-argument report

    k = np.array(np.eye(5) + 0.1, order="F")
    if routine == "dormqr":
        lam, basis = solvers.eigh_factored(k)
        monkeypatch.setattr(lapack, routine, failing)
        with pytest.raises(np.linalg.LinAlgError, match="dormqr"):
            basis.apply(np.eye(5))
    else:
        monkeypatch.setattr(lapack, routine, failing)
        with pytest.raises(np.linalg.LinAlgError, match="dsytrd failed with info=-3"):
            solvers.eigh_factored(k)


def test_expm_bad_input_names_the_argument():
    k, ktd, y, _, _ = _problem(n=20, n_test=4)
    with pytest.raises(ValueError, match="t must be finite"):
        solvers.gradient_descent_mse_expm(k, y, None)
    with pytest.raises(TypeError, match="t must"):
        solvers.gradient_descent_mse_expm(k, y, "a")
    with pytest.raises(ValueError, match="t must"):
        solvers.gradient_descent_mse_expm(k, y, [1.0, np.nan])
    with pytest.raises(ValueError, match="learning_rate"):
        solvers.gradient_descent_mse_expm(k, y, 1.0, learning_rate=0.0)
    with pytest.raises(ValueError, match="k_test_train"):
        solvers.gradient_descent_mse_expm(k, y, 1.0, 0.0, 0.0, ktd[:, :3])
    with pytest.raises(ValueError, match="k_test_train"):
        solvers.gradient_descent_mse_expm(k, y, 1.0, 0.0, 0.0, aslinearoperator(ktd[:, :3]))
    asym = k.copy()
    asym[0, 1] += 0.01 * np.abs(k).max()
    with pytest.raises(ValueError, match="k_train_train must be symmetric"):
        solvers.gradient_descent_mse_expm(asym, y, 1.0)
    with pytest.raises(TypeError, match="seed"):
        solvers.nystrom_preconditioner(k, 1e-3, 5, seed="a")
    with pytest.raises(TypeError, match="block_size"):
        solvers.kernel_operator(lambda *a: None, np.ones((4, 2)), block_size=2.5)


def test_nystrom_refuses_a_non_finite_operator():
    k, _, _, _, _ = _problem(n=20, n_test=0)
    with pytest.raises(ValueError, match="Nyström sketch"):
        solvers.nystrom_preconditioner(aslinearoperator(k * np.nan), 1e-3, 5)


@pytest.mark.parametrize("block", [1, 7, 64, 1024])
def test_blocked_cholesky_equals_lapack_for_every_block_size(monkeypatch, block):
    """The blocked Cholesky (threaded ?gemm/?trsm, ?potrf on diagonal blocks only) is LAPACK's factor to
    rounding, for block sizes that divide the order, do not, and exceed it; its strict lower triangle is 0."""
    import scipy.linalg as sl

    from fastntk.solvers import _factor

    k = _problem(n=60, n_test=0)[0] + 1e-3 * np.eye(60)
    monkeypatch.setattr(_factor, "CHOLESKY_BLOCK", block)
    u = _factor.cholesky(k)
    ref = sl.cholesky(k, lower=False)
    np.testing.assert_allclose(u, ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    assert not np.tril(u, -1).any() and u.flags.f_contiguous and u.dtype == np.float64
    c = np.asfortranarray(k)
    assert _factor.cholesky(c, overwrite_a=True) is c  # in place on a float64 Fortran-order array
    np.testing.assert_array_equal(c, u)


def test_blocked_cholesky_names_the_failing_minor(monkeypatch):
    from fastntk.solvers import _factor

    monkeypatch.setattr(_factor, "CHOLESKY_BLOCK", 4)
    k = np.eye(10)
    k[6, 6] = -1.0  # the leading minor of order 7 is the first that is not positive definite
    with pytest.raises(np.linalg.LinAlgError, match="order 7 "):
        _factor.cholesky(k)
    with pytest.raises(ValueError, match="square"):
        _factor.cholesky(np.ones((3, 4)))
