"""The eigendecomposition of a symmetric matrix with V kept factored (reflectors + tridiagonal eigenvectors)."""

from __future__ import annotations

import numpy as np
import scipy.linalg as sl
import scipy.linalg.lapack as lapack

from .._validation import check_finite, check_memory

__all__ = ["FactoredEigenbasis", "eigh_factored", "largest_eigenvalue"]


def _lapack_ok(info, routine):
    """LinAlgError unless LAPACK returned info = 0 (info < 0: an illegal argument, a bug; > 0: no convergence)."""
    if int(info) != 0:
        raise np.linalg.LinAlgError(f"LAPACK {routine} failed with info={int(info)}")


def eigh_factored(k_reg):
    """Eigendecomposition ``K_reg = V diag(λ) V^T`` with V kept factored, overwriting ``k_reg``.

    Parameters
    ----------
    k_reg : ndarray of shape (N, N), float64, Fortran order
        Symmetric (its lower triangle is read), finite; destroyed: it holds the reflectors afterwards.

    Returns
    -------
    lam : ndarray of shape (N,), ascending
    basis : FactoredEigenbasis
        ``V = Q S`` with Q the Householder reflectors of the tridiagonal reduction
        ``K_reg = Q T Q^T`` (LAPACK sytrd, 4N³/3 flops) and S the eigenvectors of T (MRRR,
        stemr, O(N²)). Skipping the back-transformation ``V = Q S`` (2N³ flops, what ``eigh``
        spends most of its time on) leaves about a third of an ``eigh``; applying V or V^T to an
        (N, p) block costs about 4N²p flops. Memory: ``k_reg`` and S, two N×N arrays.

    Raises
    ------
    ValueError
        ``k_reg`` holds NaN or inf (LAPACK would loop on it), or its tridiagonal form overflows.
    numpy.linalg.LinAlgError
        A LAPACK call returned info ≠ 0.
    """
    check_finite(k_reg, "k_reg")
    n = k_reg.shape[0]
    work, info = lapack.dsytrd_lwork(n, lower=1)
    _lapack_ok(info, "dsytrd (workspace query)")
    reflectors, diag, off, tau, info = lapack.dsytrd(k_reg, lower=1, lwork=max(int(work), 1), overwrite_a=1)
    _lapack_ok(info, "dsytrd")
    check_finite(diag, "the tridiagonal form of k_reg (overflow: rescale the kernel)")
    check_finite(off, "the tridiagonal form of k_reg (overflow: rescale the kernel)")
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
            n = self.s.shape[0]
            check_memory(8 * n * n, f"forming the eigenvectors V ({n}×{n} float64)",
                         "the factored basis (apply / apply_t), fewer training points")
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
                _, work, info = lapack.dormqr("R", "T", panel, self.tau[j0:j1], view, -1)
                _lapack_ok(info, "dormqr (workspace query)")
                lwork = max(int(work[0]), 1)
            out, _, info = lapack.dormqr("R", "N" if transpose else "T", panel, self.tau[j0:j1], view, lwork,
                                         overwrite_c=1)
            _lapack_ok(info, "dormqr")
            if not np.may_share_memory(out, view):  # f2py worked on a copy (never for Fortran views)
                view[...] = out
        return c


def largest_eigenvalue(k):
    """λ_max of a symmetric (N, N) array (its lower triangle is read), in float64 (one N×N copy)."""
    n = k.shape[0]
    return sl.eigh(k.astype(np.float64), eigvals_only=True, overwrite_a=True, check_finite=False,
                   subset_by_index=(n - 1, n - 1))[-1]
