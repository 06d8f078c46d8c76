"""Krylov methods on products ``K @ V`` only: block conjugate gradients and expm_multiply gradient flow."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.sparse.linalg import LinearOperator, expm_multiply
from tqdm.auto import tqdm

from .._types import CGResult
from .._validation import (check_finite, check_initial, check_integer, check_kernel_or_operator, check_outputs,
                           check_positive, check_test_operator, check_times)
from ._nystrom import nystrom_preconditioner

__all__ = ["cg", "gradient_descent_mse_expm", "solve_regularized"]


def cg(matmat, b, tol=1e-10, maxiter=None, preconditioner=None, *, monitor=None, patience=5, progress=False):
    """Preconditioned conjugate gradients on every column of ``b`` (N, M) at once.

    ``matmat(V)`` = A V for a symmetric positive definite A; ``preconditioner(V)`` ≈ A⁻¹ V (SPD).
    Stops when ‖b − A x‖ ≤ tol·‖b‖ in every column, or after ``maxiter`` (an int >= 1, default
    10·N) iterations, or (with ``monitor``) when ``monitor`` has not improved for ``patience``
    iterations. ``monitor(x)`` → float, lower is better (e.g. a validation error), is called on
    every iterate, x₀ = 0 included; the best iterate by it is returned. Without ``monitor`` the
    iterate with the smallest largest-column relative residual is returned (the last one when CG
    converges). ``progress``: a tqdm bar over iterations. Reaching ``maxiter`` above ``tol``
    (and without an early stop) warns (RuntimeWarning) with the residual of the iterate returned.

    Returns
    -------
    CGResult
        ``solution`` (N, M) the best iterate, ``residual`` (M,) its relative residuals, ``history``
        (iterations + 1, M) the relative residual of every iterate, ``monitor`` (iterations + 1,)
        or None, ``best_iteration``, ``converged`` (every column reached ``tol``).

    Raises
    ------
    ValueError
        ``b`` holds NaN or inf, or ``matmat`` (or ``preconditioner``) returns NaN or inf.
    """
    b = np.asarray(b, dtype=np.float64)
    check_finite(b, "b")
    tol = check_positive(tol, "tol")
    maxiter = 10 * b.shape[0] if maxiter is None else check_integer(maxiter, "maxiter")
    patience = check_integer(patience, "patience")
    precond = preconditioner or (lambda v: v)
    x, r = np.zeros_like(b), b.copy()
    z = precond(r)
    if not np.isfinite(z).all():
        raise ValueError("preconditioner returned NaN or inf")
    p, rz, goal = z.copy(), (r * z).sum(0), (tol * np.linalg.norm(b, axis=0)) ** 2
    rs, norm_b = (r * r).sum(0), np.linalg.norm(b, axis=0)
    scale = np.where(norm_b > 0, norm_b, 1.0)
    history, scores = [np.sqrt(rs) / scale], None if monitor is None else [float(monitor(x))]
    best, best_x = 0, x.copy()
    with tqdm(total=maxiter, desc="conjugate gradients", unit="it", disable=not progress) as bar:
        for it in range(maxiter + 1):
            active = rs > goal
            if not active.any() or it == maxiter or (scores is not None and it - best >= patience):
                break
            ap = matmat(p)
            p_ap = (p * ap).sum(0)
            if not np.isfinite(p_ap).all():
                raise ValueError(f"matmat returned NaN or inf at iteration {it}: the operator is not finite")
            alpha = np.divide(rz, p_ap, out=np.zeros_like(rz), where=active)
            x += alpha * p
            r -= alpha * ap
            z = precond(r)
            rz_new, rs = (r * z).sum(0), (r * r).sum(0)
            if not (np.isfinite(rz_new).all() and np.isfinite(rs).all()):
                raise ValueError(f"conjugate gradients broke down at iteration {it} (NaN or inf residual): the "
                                 "operator or the preconditioner is not finite, or not positive definite")
            p = z + np.divide(rz_new, rz, out=np.zeros_like(rz), where=active) * p
            rz = rz_new
            history.append(np.sqrt(rs) / scale)
            if scores is not None:
                scores.append(float(monitor(x)))
            if (scores[-1] < scores[best]) if scores is not None else history[-1].max() <= history[best].max():
                best, best_x = it + 1, x.copy()
            bar.update(1)
            bar.set_postfix(residual=f"{history[-1].max():.2e}")
    converged = not active.any()
    if not converged and it == maxiter and (scores is None or it - best < patience):
        warnings.warn(f"conjugate gradients stopped after maxiter={maxiter} iterations above tol={tol:g}: relative "
                      f"residual {history[-1].max():.3g} (largest column); returning the best iterate, iteration "
                      f"{best}, relative residual {history[best].max():.3g}", RuntimeWarning, stacklevel=2)
    return CGResult(best_x, it, history[best], np.array(history), None if scores is None else np.array(scores),
                    best, converged)


def solve_regularized(k, reg, b, tol, maxiter, preconditioner, rank, seed, progress=False):
    """(K + reg·I)⁻¹ b by (Nyström-preconditioned) CG, as a :class:`CGResult`; the driver of
    ``kernel_ridge(solver='cg')``."""
    if preconditioner not in (None, "nystrom"):
        raise ValueError(f"unknown preconditioner {preconditioner!r}; supported: None, 'nystrom'")
    precond = None if preconditioner is None else nystrom_preconditioner(k, reg, rank, seed)
    return cg(lambda v: k @ v + reg * v, b, tol, maxiter, precond, progress=progress)


def gradient_descent_mse_expm(k_train_train, y_train, t, fx_train_0=0.0, fx_test_0=None, k_test_train=None,
                              learning_rate=1.0, diag_reg=0.0, diag_reg_absolute_scale=False):
    """Gradient-flow predictions at times ``t`` by Krylov ``expm_multiply``: matrix–vector products only.

    For large N, where an eigendecomposition is out of reach. ``k_train_train`` (N, N) symmetric
    array or a symmetric scipy LinearOperator (then ``diag_reg`` must be absolute); ``k_test_train``
    (N_test, N) array or LinearOperator. ``t``: scalar or array of times (units of
    ``learning_rate``), finite. Returns as the predict_fn of
    :func:`fastntk.predict.gradient_descent_mse`.

    Notes
    -----
    ``W(τ) = ∫₀^τ e^{−sK/n} ds (f_train_0 − y)`` is the top block of
    ``exp(τ [[−K/n, R], [0, 0]]) [0; I]``; then ``f_train = f_train_0 − K W/n``,
    ``f_test = f_test_0 − K_test,train W/n``. Times are visited in increasing order, each step
    continuing from the previous state; the final products with K and K_test,train are one
    (N, T·M) block product each.
    """
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    k, reg = check_kernel_or_operator(k_train_train, "k_train_train", diag_reg, diag_reg_absolute_scale)
    y, tail, _ = check_outputs(y_train, k.shape[0])
    if t is None:
        raise ValueError("t must be finite for gradient_descent_mse_expm (use gradient_descent_mse(...)(None))")
    t = check_times(t)
    if not np.all(np.isfinite(t)):
        raise ValueError("t must be finite for gradient_descent_mse_expm (use gradient_descent_mse(...)(None))")
    if fx_train_0 is None and fx_test_0 is None:
        raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError("k_test_train is needed for test predictions (fx_test_0 is not None)")
    n_tr, m, n = k.shape[0], y.shape[1], y.size
    f0 = check_initial(0.0 if fx_train_0 is None else fx_train_0, "fx_train_0", (n_tr, *tail)).reshape(y.shape)
    eta = check_positive(learning_rate, "learning_rate")
    ktd = None
    if fx_test_0 is not None:
        ktd = check_test_operator(k_test_train, "k_test_train", n_tr)
        ft0 = check_initial(fx_test_0, "fx_test_0", (ktd.shape[0], *tail)).reshape(ktd.shape[0], 1, m)
    step = _augmented(k, reg, f0 - y, eta)
    trace = 0.0 if isinstance(k, LinearOperator) else -eta * (np.trace(k) + n_tr * reg) / n
    state, now, ws = np.vstack([np.zeros((n_tr, m)), np.eye(m)]), 0.0, np.empty((n_tr, t.size, m))
    for i in np.argsort(t.ravel(), kind="stable"):
        if t.flat[i] > now:
            state = expm_multiply((t.flat[i] - now) * step, state, traceA=(t.flat[i] - now) * trace)
        now, ws[:, i] = t.flat[i], state[:n_tr]
    ws = ws.reshape(n_tr, -1)  # (N, T·M): one product with K for all times
    fx_train = None
    if fx_train_0 is not None:
        fx_train = (f0[:, None, :] - (k @ ws + reg * ws).reshape(n_tr, t.size, m) / n).transpose(1, 0, 2)
        fx_train = fx_train.reshape(*t.shape, n_tr, *tail)
    if ktd is None:
        return fx_train
    fx_test = (ft0 - (ktd @ ws).reshape(ktd.shape[0], t.size, m) / n).transpose(1, 0, 2)
    fx_test = fx_test.reshape(*t.shape, ktd.shape[0], *tail)
    return fx_test if fx_train is None else (fx_train, fx_test)


def _augmented(k, reg, r, eta):
    """η [[−K_reg/n, R], [0, 0]] as a LinearOperator of size N + M (R = f_train_0 − y, n = R.size)."""
    n_tr, m, c = r.shape[0], r.shape[1], eta / r.size

    def matmat(v):
        u, w = v[:n_tr], v[n_tr:]
        return np.vstack([-c * (k @ u + reg * u) + eta * (r @ w), np.zeros_like(w)])

    def rmatmat(v):
        u = v[:n_tr]
        return np.vstack([-c * (k @ u + reg * u), eta * (r.T @ u)])

    shape = (n_tr + m, n_tr + m)
    return LinearOperator(shape, matvec=lambda v: matmat(v.reshape(-1, 1)).ravel(), matmat=matmat,
                          rmatvec=lambda v: rmatmat(v.reshape(-1, 1)).ravel(), rmatmat=rmatmat, dtype=np.float64)
