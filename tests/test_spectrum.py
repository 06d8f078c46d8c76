"""fastntk.spectrum: GCV/LOO against brute force, the spectrum and its bounds, alignment, scale and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fastntk import predict, spectrum

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

