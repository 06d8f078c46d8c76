"""Large N: kernel regression and gradient-flow predictions that never form an N×N matrix.

Every solver here touches the training kernel only through products ``K @ V`` (V of shape
(N, M)): an (N, N) array, a scipy ``LinearOperator``, or :func:`kernel_operator`, which computes
row blocks of K from the inputs on the fly (O(block·N) memory). Extra memory is O(N·M) per
solver (plus O(N·rank) for the Nyström preconditioner).

* :func:`cg` — preconditioned conjugate gradients on all M right-hand sides at once;
  :func:`nystrom_preconditioner` — randomized Nyström preconditioner of rank r (Frangella, Tropp &
  Udell 2023, arXiv:2110.02820), for ``(K + μI) x = b``; ``predict.kernel_ridge(solver='cg')``
  calls these.
* :func:`gradient_descent_mse_expm` — gradient-flow predictions at given times by Krylov
  ``scipy.sparse.linalg.expm_multiply`` on an (N + M)-sized augmented operator.

Conventions (``n = y_train.size``, relative ``diag_reg`` × trace(K)/N, times in units of
``learning_rate``) are those of :mod:`fastntk.predict`.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg as sl
from scipy.sparse.linalg import LinearOperator, expm_multiply

import scipy.linalg.lapack as lapack

from ._validation import check_positive

__all__ = ["CGResult", "FactoredEigenbasis", "cg", "eigh_factored", "gradient_descent_mse_expm", "kernel_operator",
           "nystrom_preconditioner"]


class CGResult(NamedTuple):
    """``solution`` (N, M), ``iterations`` run, ``residual`` ‖b − A x‖/‖b‖ per column (M,)."""

    solution: np.ndarray
    iterations: int
    residual: np.ndarray


def kernel_operator(kernel_fn, x, get="ntk", block_size=1024, **kernel_fn_kwargs):
    """K(x, x) as a symmetric LinearOperator that computes ``block_size`` rows of K per product.

    Parameters
    ----------
    kernel_fn : callable ``kernel_fn(x1, x2, get, **kwargs)`` returning an (N1, N2) array
        E.g. :func:`fastntk.stax.serial`'s third element.
    x : ndarray of shape (N, d)
    get : str
        Which kernel, as for ``kernel_fn``.
    block_size : int > 0
        Rows per block: peak extra memory is ``block_size·N`` values; every product recomputes K.

    Returns
    -------
    LinearOperator of shape (N, N), float64
    """
    if not callable(kernel_fn):
        raise TypeError(f"kernel_fn must be callable; got {type(kernel_fn).__name__}")
    if np.ndim(x) != 2:
        raise ValueError(f"x must be an array of shape (N, d); got shape {np.shape(x)}")
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size!r}")
    n = x.shape[0]

    def matmat(v):
        v = np.asarray(v, dtype=np.float64).reshape(n, -1)
        out = np.empty_like(v)
        for i in range(0, n, block_size):
            out[i:i + block_size] = np.asarray(kernel_fn(x[i:i + block_size], x, get, **kernel_fn_kwargs)) @ v
        return out

    return LinearOperator((n, n), matvec=lambda v: matmat(v).ravel(), matmat=matmat,
                          rmatvec=lambda v: matmat(v).ravel(), rmatmat=matmat, dtype=np.float64)


def _regularized(k, diag_reg, absolute):
    """(kernel, absolute regularizer) for an array or a LinearOperator (which needs an absolute one)."""
    from .predict import _kernel  # validation helpers live in the API module, which imports this one

    if isinstance(k, LinearOperator):
        if k.shape[0] != k.shape[1]:
            raise ValueError(f"k_train_train must be square (N, N); got shape {k.shape}")
        if diag_reg and not absolute:
            raise ValueError("diag_reg relative to trace(K)/N needs K's diagonal: pass diag_reg_absolute_scale=True "
                             "with a LinearOperator k_train_train")
        return k, diag_reg
    k = _kernel(k, "k_train_train")
    return k, diag_reg if absolute else diag_reg * float(np.trace(k, dtype=np.float64)) / k.shape[0]


def nystrom_preconditioner(k, diag_reg, rank, seed=0):
    """Randomized Nyström preconditioner ``P⁻¹`` of ``K + diag_reg·I`` (absolute ``diag_reg``).

    Parameters
    ----------
    k : ndarray of shape (N, N) or LinearOperator
        Symmetric positive semi-definite.
    diag_reg : float >= 0
        μ, absolute.
    rank : int, 1 <= rank <= N
        r: costs r products with K, O(N·r) memory and an (N, r) SVD.
    seed : int or numpy.random.Generator

    Returns
    -------
    callable ``apply(v)``: P⁻¹ v for v of shape (N, M)

    Notes
    -----
    Algorithm 2.1 of Frangella, Tropp & Udell (arXiv:2110.02820): K ≈ U Λ̂ Uᵀ from a shifted
    Nyström sketch with orthonormal test matrix Ω; then
    ``P⁻¹ = (λ̂_r + μ) U (Λ̂ + μI)⁻¹ Uᵀ + (I − U Uᵀ)``. The preconditioned system has condition
    number ≈ (λ_{r+1} + μ)/μ: it pays off when K's spectrum decays fast (NTKs usually do).
    """
    n = k.shape[0]
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= n:
        raise ValueError(f"rank must be an integer in [1, N={n}]; got {rank!r}")
    mu = check_positive(diag_reg, "diag_reg", allow_zero=True)
    omega, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, rank)))
    y = np.asarray(k @ omega, dtype=np.float64)
    shift = np.sqrt(n) * np.finfo(np.float64).eps * np.linalg.norm(y)
    y += shift * omega
    core = omega.T @ y
    chol = sl.cholesky((core + core.T) / 2, lower=False, check_finite=False)
    u, sig, _ = sl.svd(sl.solve_triangular(chol, y.T, trans="T", lower=False).T, full_matrices=False)
    lam = np.maximum(sig**2 - shift, 0.0)
    scale = (lam[-1] + mu) / (lam + mu) - 1.0 if mu > 0 or lam[-1] > 0 else np.zeros_like(lam)

    def apply(v):
        return v + u @ (scale[:, None] * (u.T @ v))

    return apply


def cg(matmat, b, tol=1e-10, maxiter=None, preconditioner=None):
    """Preconditioned conjugate gradients on every column of ``b`` (N, M) at once.

    ``matmat(V)`` = A V for a symmetric positive definite A; ``preconditioner(V)`` ≈ A⁻¹ V (SPD).
    Stops when ‖b − A x‖ ≤ tol·‖b‖ in every column, or after ``maxiter`` (default 10·N)
    iterations with a RuntimeWarning. Returns a :class:`CGResult`.
    """
    b = np.asarray(b, dtype=np.float64)
    maxiter = 10 * b.shape[0] if maxiter is None else maxiter
    precond = preconditioner or (lambda v: v)
    x, r = np.zeros_like(b), b.copy()
    z = precond(r)
    p, rz, goal = z.copy(), (r * z).sum(0), (tol * np.linalg.norm(b, axis=0)) ** 2
    rs = (r * r).sum(0)
    for it in range(maxiter + 1):
        active = rs > goal
        if not active.any() or it == maxiter:
            break
        ap = matmat(p)
        alpha = np.divide(rz, (p * ap).sum(0), out=np.zeros_like(rz), where=active)
        x += alpha * p
        r -= alpha * ap
        z = precond(r)
        rz_new, rs = (r * z).sum(0), (r * r).sum(0)
        p = z + np.divide(rz_new, rz, out=np.zeros_like(rz), where=active) * p
        rz = rz_new
    if active.any():
        warnings.warn(f"conjugate gradients stopped after maxiter={maxiter} iterations above tol", RuntimeWarning,
                      stacklevel=2)
    norm_b = np.linalg.norm(b, axis=0)
    return CGResult(x, it, np.sqrt(rs) / np.where(norm_b > 0, norm_b, 1.0))


def solve_regularized(k, reg, b, tol, maxiter, preconditioner, rank, seed):
    """(K + reg·I)⁻¹ b by (Nyström-preconditioned) CG; the driver of ``kernel_ridge(solver='cg')``."""
    if preconditioner not in (None, "nystrom"):
        raise ValueError(f"unknown preconditioner {preconditioner!r}; supported: None, 'nystrom'")
    precond = None if preconditioner is None else nystrom_preconditioner(k, reg, rank, seed)
    return cg(lambda v: k @ v + reg * v, b, check_positive(tol, "tol"), maxiter, precond).solution


def eigh_factored(k_reg):
    """Eigendecomposition ``K_reg = V diag(λ) V^T`` with V kept factored, overwriting ``k_reg``.

    Parameters
    ----------
    k_reg : ndarray of shape (N, N), float64, Fortran order
        Symmetric (its lower triangle is read); destroyed: it holds the reflectors afterwards.

    Returns
    -------
    lam : ndarray of shape (N,), ascending
    basis : FactoredEigenbasis
        ``V = Q S`` with Q the Householder reflectors of the tridiagonal reduction
        ``K_reg = Q T Q^T`` (LAPACK sytrd, 4N³/3 flops) and S the eigenvectors of T (MRRR,
        stemr, O(N²)). Skipping the back-transformation ``V = Q S`` (2N³ flops, what ``eigh``
        spends most of its time on) leaves about a third of an ``eigh``; applying V or V^T to an
        (N, p) block costs about 4N²p flops. Memory: ``k_reg`` and S, two N×N arrays.
    """
    n = k_reg.shape[0]
    lwork = max(int(lapack.dsytrd_lwork(n, lower=1)[0]), 1)
    reflectors, diag, off, tau, _ = lapack.dsytrd(k_reg, lower=1, lwork=lwork, overwrite_a=1)
    try:
        lam, s = sl.eigh_tridiagonal(diag, off, lapack_driver="stemr", check_finite=False)
    except np.linalg.LinAlgError:
        # MRRR can fail on tightly clustered spectra (e.g. the NTK of digits at a tiny
        # ridge: stemr info=22); implicit QL (stev) is slower, O(N³), but always converges.
        lam, s = sl.eigh_tridiagonal(diag, off, lapack_driver="stev", check_finite=False)
    return lam, FactoredEigenbasis(reflectors, tau, s)


class FactoredEigenbasis:
    """V = Q S with Q = H_1 ⋯ H_{N−1} the reflectors of ``dsytrd(lower=1)`` and S (N, N) the eigenvectors of T.

    Reflector j (0-based) has v = e_{j+1} + (0, …, 0, reflectors[j+2:, j]) and τ_j: the Q of a QR
    factorization stored in ``reflectors[1:, :-1]``, so LAPACK ormqr applies it, panel by panel
    (a copy of one (N, 256) panel at a time: no N×N temporary).
    """

    panel = 256

    def __init__(self, reflectors, tau, s):
        self.reflectors, self.tau, self.s, self._dense = reflectors, tau, s, None

    def apply(self, x):
        """V x for x (N, p)."""
        if self._dense is not None:
            return self._dense @ x
        return self._apply_q(np.ascontiguousarray(self.s @ x), transpose=False)

    def apply_t(self, x):
        """V^T x for x (N, p)."""
        if self._dense is not None:
            return self._dense.T @ x
        return self.s.T @ self._apply_q(np.array(x, dtype=np.float64, order="C"), transpose=True)

    def dense(self):
        """V as an (N, N) array; afterwards the factored form is dropped (needs one more N×N while forming)."""
        if self._dense is None:
            self._dense = self._apply_q(np.ascontiguousarray(self.s), transpose=False)
            self.reflectors = self.s = None
        return self._dense

    def _apply_q(self, c, transpose):
        """Q c or Q^T c in place, for c C-contiguous (N, p): ormqr from the right on c^T (Fortran (p, N))."""
        ct, m = c.T, c.shape[0] - 1
        starts = range(0, m, self.panel)
        lwork = None
        for j0 in starts if transpose else reversed(starts):  # Q^T c: H_1 first; Q c: H_{N−1} first
            j1 = min(j0 + self.panel, m)
            panel, view = np.array(self.reflectors[j0 + 1:, j0:j1], order="F"), ct[:, j0 + 1:]
            if lwork is None:
                lwork = max(int(lapack.dormqr("R", "T", panel, self.tau[j0:j1], view, -1)[1][0]), 1)
            out, _, info = lapack.dormqr("R", "N" if transpose else "T", panel, self.tau[j0:j1], view, lwork,
                                         overwrite_c=1)
            if not np.may_share_memory(out, view):  # f2py worked on a copy (never for Fortran views)
                view[...] = out
        return c


def gradient_descent_mse_expm(k_train_train, y_train, t, fx_train_0=0.0, fx_test_0=None, k_test_train=None,
                              learning_rate=1.0, diag_reg=0.0, diag_reg_absolute_scale=False):
    """Gradient-flow predictions at times ``t`` by Krylov ``expm_multiply``: matrix–vector products only.

    For large N, where an eigendecomposition is out of reach. ``k_train_train`` (N, N) array or a
    symmetric scipy LinearOperator (then ``diag_reg`` must be absolute); ``k_test_train``
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
    from .predict import _initial, _kernel, _outputs, _times

    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    k, reg = _regularized(k_train_train, diag_reg, diag_reg_absolute_scale)
    y, tail, _ = _outputs(y_train, k.shape[0])
    t = _times(t)
    if not np.all(np.isfinite(t)):
        raise ValueError("t must be finite for gradient_descent_mse_expm (use gradient_descent_mse(...)(None))")
    if fx_train_0 is None and fx_test_0 is None:
        raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError("k_test_train is needed for test predictions (fx_test_0 is not None)")
    n_tr, m, n = k.shape[0], y.shape[1], y.size
    f0 = _initial(0.0 if fx_train_0 is None else fx_train_0, "fx_train_0", (n_tr, *tail)).reshape(y.shape)
    eta = check_positive(learning_rate, "learning_rate")
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
    if fx_test_0 is None:
        return fx_train
    ktd = k_test_train if isinstance(k_test_train, LinearOperator) else _kernel(
        k_test_train, "k_test_train", (np.shape(k_test_train)[0], n_tr))
    ft0 = _initial(fx_test_0, "fx_test_0", (ktd.shape[0], *tail)).reshape(ktd.shape[0], 1, m)
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
