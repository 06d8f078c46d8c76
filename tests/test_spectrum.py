"""fastntk.spectrum: GCV/LOO and GCV's risk estimate against brute force, the spectrum and its bounds, alignment,
scale and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fastntk import _validation, predict, spectrum

from conftest import assert_close


def _problem(n=12, n_test=5, d=3, out=2, seed=0):
    """PSD joint kernel of train+test points, targets and f0 (as in test_predict)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_test, 2 * (n + n_test) + d))
    k = x @ x.T / x.shape[1] + 0.5
    return k[:n, :n], k[n:, :n], rng.standard_normal((n, out)), 0.3 * rng.standard_normal((n, out))


def test_select_diag_reg_matches_brute_force():
    k, _, y, f0 = _problem(n=15)
    grid = np.logspace(-4, 1, 6)
    sel = spectrum.select_diag_reg(k, y, grid, True, fx_train_0=f0, criterion="loo")
    r, n = y - f0, 15
    for i, lam in enumerate(grid):
        s = lam * np.linalg.inv(k + lam * np.eye(n))
        gcv = np.sum((s @ r) ** 2) / r.size / (np.trace(s) / n) ** 2
        loo = []
        for j in range(n):
            keep = np.arange(n) != j
            coef = np.linalg.solve(k[np.ix_(keep, keep)] + lam * np.eye(n - 1), r[keep])
            loo.append(r[j] - k[j, keep] @ coef)
        mean_square = np.mean(r**2)  # the curves are relative to it (their limit at diag_reg → ∞)
        assert sel.gcv[i] == pytest.approx(gcv / mean_square, rel=1e-9)
        assert sel.loo[i] == pytest.approx(np.mean(np.square(loo)) / mean_square, rel=1e-9)
    assert sel.diag_reg == grid[np.argmin(sel.loo)]
    assert spectrum.select_diag_reg(k, y, grid, True).diag_reg in grid


@pytest.mark.parametrize("absolute", [True, False])
def test_gcv_risk_matches_dense_numpy(absolute):
    k, _, y, f0 = _problem(n=15, out=3)
    grid = np.logspace(-4, 1, 6)
    risk = spectrum.gcv_risk(k, y, grid, absolute, fx_train_0=f0)
    assert risk.shape == (6,) and risk.dtype == np.float64
    r, n = y - f0, 15
    for i, g in enumerate(grid):
        lam = g if absolute else g * np.trace(k) / n
        s = lam * np.linalg.inv(k + lam * np.eye(n))  # S = λ(K + λI)⁻¹
        assert risk[i] == pytest.approx(np.sum((s @ r) ** 2) / r.size / (np.trace(s) / n) ** 2, rel=1e-10)
    assert_close(spectrum.gcv_risk(k.astype(np.float32), y.astype(np.float32), grid, absolute,
                                   fx_train_0=f0.astype(np.float32)), risk, 1e-4, "float32")


def test_gcv_risk_is_select_diag_reg_curve_in_units_of_y_squared():
    k, _, y, f0 = _problem(n=15)
    grid = np.logspace(-6, 2, 9)
    sel = spectrum.select_diag_reg(k, y, grid, fx_train_0=f0)
    assert_close(spectrum.gcv_risk(k, y, grid, fx_train_0=f0), sel.gcv * np.mean((y - f0) ** 2), 1e-12, "gcv")
    assert_close(spectrum.gcv_risk(k, y[:, 0], grid), spectrum.select_diag_reg(k, y[:, 0], grid).gcv
                 * np.mean(y[:, 0] ** 2), 1e-12, "1-D y_train")


@pytest.mark.parametrize("scale", [3.0, 1e100, 1e-100])
def test_gcv_risk_is_scale_equivariant(scale):
    k, _, y, f0 = _problem(n=15)
    grid = np.logspace(-8, 1, 10)
    risk = spectrum.gcv_risk(k, y, grid, fx_train_0=f0)
    assert_close(spectrum.gcv_risk(k, scale * y, grid, fx_train_0=scale * f0), scale**2 * risk, 1e-12, "c² · risk")


def test_gcv_risk_edge_cases():
    k, _, y, f0 = _problem()
    assert not spectrum.gcv_risk(k, y, [1e-3, 1.0], fx_train_0=y).any()  # y = f_0: every ridge is exact
    # a zero kernel: S = I, so GCV is the mean square residual at every ridge
    assert_close(spectrum.gcv_risk(np.zeros((12, 12)), y, [1e-3, 1.0], True), np.full(2, np.mean(y**2)), 1e-15, "S=I")
    assert np.isinf(spectrum.gcv_risk(k, 1e200 * y, [1.0])).all()  # beyond float64: inf, no overflow warning
    assert spectrum.gcv_risk(k, y, [1e-6, 1e6])[1] == pytest.approx(np.mean(y**2), rel=1e-5)  # λ → ∞: no fit


def test_spectrum_convergence_and_loss_bound():
    k, _, y, f0 = _problem()
    spec = spectrum.kernel_spectrum(k)
    lam = np.linalg.eigvalsh(k)[::-1]
    assert_close(spec.eigenvalues, lam, 1e-13)
    assert spec.condition_number == pytest.approx(lam[0] / lam[-1], rel=1e-10)
    assert spectrum.kernel_spectrum(np.eye(5)).effective_rank == pytest.approx(5.0)
    assert spectrum.kernel_spectrum(np.ones((4, 4))).condition_number == np.inf
    times = spectrum.convergence_times(k, y.size, tol=1e-3, learning_rate=0.5)
    assert_close(np.exp(-lam * 0.5 * times / y.size), np.full(12, 1e-3), 1e-12)
    predict_fn = predict.gradient_descent_mse(k, y, 0.5)
    t = np.linspace(0.0, 200.0, 9)
    loss = 0.5 * ((predict_fn(t, f0) - y) ** 2).sum(axis=(1, 2)) / y.size
    assert np.all(loss <= spectrum.loss_bound(k, t, loss[0], y.size, 0.5) * (1 + 1e-12))
    bottom = np.linalg.eigh(k)[1][:, :1]  # residual along the bottom eigenvector: the bound is tight
    loss = 0.5 * ((predict.gradient_descent_mse(k, bottom)(t, 0.0) - bottom) ** 2).sum(axis=(1, 2)) / 12
    assert_close(loss, spectrum.loss_bound(k, t, loss[0], 12), 1e-10)


def test_kernel_alignment():
    y = np.random.default_rng(2).standard_normal((6, 2))
    assert spectrum.kernel_alignment(3.0 * y @ y.T, y) == pytest.approx(1.0)
    k = _problem(n=6)[0]
    assert -1 <= spectrum.kernel_alignment(k, y, centered=True) <= 1


@pytest.mark.parametrize("scale", [1e200, 1e-200, 3.0])
def test_select_diag_reg_is_scale_free(scale):
    k, _, y, f0 = _problem(n=15)
    grid = np.logspace(-8, 1, 10)
    sel = spectrum.select_diag_reg(k, y, grid, fx_train_0=f0)
    big = spectrum.select_diag_reg(k, scale * y, grid, fx_train_0=scale * f0)  # no overflow warning (an error here)
    assert big.diag_reg == sel.diag_reg
    assert np.isfinite(big.gcv).all() and np.isfinite(big.loo).all()
    # the curves are relative to the mean square residual: the same for y and scale·y
    assert_close(big.gcv, sel.gcv, 1e-12, "gcv")
    assert_close(big.loo, sel.loo, 1e-12, "loo")
    assert sel.gcv[-1] == pytest.approx(1.0, abs=0.1)  # diag_reg → ∞: no better than f_0


def test_select_diag_reg_zero_kernel_and_zero_residual():
    _, _, y, _ = _problem()
    with pytest.raises(ValueError, match="k_train_train has trace 0"):
        spectrum.select_diag_reg(np.zeros((12, 12)), y, [1e-3, 1.0])
    sel = spectrum.select_diag_reg(np.zeros((12, 12)), y, [1e-3, 1.0], True)  # S = I: both curves are 1
    assert_close(sel.gcv, [1.0, 1.0], 1e-15, "gcv")
    assert_close(sel.loo, [1.0, 1.0], 1e-15, "loo")
    k = _problem()[0]
    sel = spectrum.select_diag_reg(k, y, [1e-3, 1.0], fx_train_0=y)  # y = f_0: every diag_reg is exact
    assert sel.diag_reg == 1e-3 and not sel.gcv.any() and not sel.loo.any()


def test_kernel_alignment_is_scale_free():
    k, _, y, _ = _problem()
    for centered in (False, True):
        ref = spectrum.kernel_alignment(k, y, centered)
        assert spectrum.kernel_alignment(1e200 * k, 1e200 * y, centered) == pytest.approx(ref, rel=1e-13)


def test_zero_kernel_spectrum():
    spec = spectrum.kernel_spectrum(np.zeros((4, 4)))
    assert not spec.eigenvalues.any() and spec.condition_number == np.inf and spec.effective_rank == 0.0


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda k, y: spectrum.select_diag_reg(k, y, []), ValueError, "diag_regs"),
    (lambda k, y: spectrum.select_diag_reg(k, y, "abc"), ValueError, "diag_regs"),
    (lambda k, y: spectrum.select_diag_reg(k, y, None), ValueError, "diag_regs"),
    (lambda k, y: spectrum.select_diag_reg(k, y, [[1.0, 2.0]]), ValueError, "diag_regs"),
    (lambda k, y: spectrum.select_diag_reg(k, y, [np.nan]), ValueError, "diag_regs"),
    (lambda k, y: spectrum.select_diag_reg(k, y, [1.0], criterion="aic"), ValueError, "criterion"),
    (lambda k, y: spectrum.select_diag_reg(k, y, [1.0], fx_train_0="a"), TypeError, "fx_train_0"),
    (lambda k, y: spectrum.select_diag_reg(k[:, :3], y, [1.0]), ValueError, "k_train_train"),
    (lambda k, y: spectrum.select_diag_reg(k, y[:3], [1.0]), ValueError, "y_train"),
    (lambda k, y: spectrum.gcv_risk(k, y, []), ValueError, "diag_regs"),
    (lambda k, y: spectrum.gcv_risk(k, y, [-1.0]), ValueError, "diag_regs"),
    (lambda k, y: spectrum.gcv_risk(k, y, [1.0], fx_train_0="a"), TypeError, "fx_train_0"),
    (lambda k, y: spectrum.gcv_risk(k, y, [1.0], fx_train_0=np.zeros((3, 2))), ValueError, "fx_train_0"),
    (lambda k, y: spectrum.gcv_risk(k[:, :3], y, [1.0]), ValueError, "k_train_train"),
    (lambda k, y: spectrum.gcv_risk(k, y[:3], [1.0]), ValueError, "y_train"),
    (lambda k, y: spectrum.gcv_risk(np.zeros((12, 12)), y, [1.0]), ValueError, "k_train_train has trace 0"),
    (lambda k, y: spectrum.kernel_spectrum(k, diag_reg="a"), TypeError, "diag_reg"),
    (lambda k, y: spectrum.kernel_spectrum(k[0]), ValueError, "k_train_train"),
    (lambda k, y: spectrum.kernel_spectrum(None), TypeError, "k_train_train"),
    (lambda k, y: spectrum.convergence_times(k, 2.5), TypeError, "y_train_size"),
    (lambda k, y: spectrum.convergence_times(k, True), TypeError, "y_train_size"),
    (lambda k, y: spectrum.convergence_times(k, 0), ValueError, "y_train_size"),
    (lambda k, y: spectrum.convergence_times(k, 12, tol=2.0), ValueError, "tol"),
    (lambda k, y: spectrum.convergence_times(k, 12, learning_rate=-1.0), ValueError, "learning_rate"),
    (lambda k, y: spectrum.loss_bound(k, np.nan, 1.0, 12), ValueError, "t must"),
    (lambda k, y: spectrum.loss_bound(k, -1.0, 1.0, 12), ValueError, "t must"),
    (lambda k, y: spectrum.loss_bound(k, "a", 1.0, 12), TypeError, "t must"),
    (lambda k, y: spectrum.loss_bound(k, None, 1.0, 12), TypeError, "t must"),
    (lambda k, y: spectrum.loss_bound(k, 1.0, -1.0, 12), ValueError, "loss_0"),
    (lambda k, y: spectrum.kernel_alignment(k, None), TypeError, "y_train"),
    (lambda k, y: spectrum.kernel_alignment(np.zeros((12, 12)), y), ValueError, "zero kernel"),
])
def test_bad_input(call, error, match):
    k, _, y, _ = _problem()
    with pytest.raises(error, match=match):
        call(k, y)


@pytest.mark.parametrize("call", [
    lambda k, y: spectrum.select_diag_reg(k, y, [1.0]),
    lambda k, y: spectrum.gcv_risk(k, y, [1.0]),
    lambda k, y: spectrum.kernel_spectrum(k),
    lambda k, y: spectrum.convergence_times(k, 12),
    lambda k, y: spectrum.loss_bound(k, 1.0, 1.0, 12),
])
def test_asymmetric_kernel_is_refused(call):
    k, _, y, _ = _problem()
    k = k.copy()
    k[0, 5] += 1e-3 * np.abs(k).max()
    with pytest.raises(ValueError, match="k_train_train must be symmetric"):
        call(k, y)


@pytest.mark.parametrize("call", [
    lambda k, y: spectrum.select_diag_reg(k, y, [1.0]),
    lambda k, y: spectrum.gcv_risk(k, y, [1.0]),
    lambda k, y: spectrum.kernel_spectrum(k),
    lambda k, y: spectrum.kernel_alignment(k, y, centered=True),
])
def test_memory_is_checked_before_n_by_n(call, monkeypatch):
    k, _, y, _ = _problem()
    monkeypatch.setattr(_validation, "available_memory", lambda: 1000)  # 12×12 float64 = 1152 bytes
    with pytest.raises(MemoryError, match="GiB.*alternatives"):
        call(k, y)

