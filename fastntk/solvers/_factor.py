"""Lazy factorizations of K_reg = K + reg·I and the spectral functions of gradient flow.

Eigenvalues ``λ ≤ N·eps·λ_max`` (eps of the kernel's dtype), negative ones included, count as
0 (see :mod:`fastntk.predict`); a singular or indefinite ``K_reg`` warns and falls back to the
eigendecomposition pseudo-inverse.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg as sl

from .. import _core
from .._blas import CHOLESKY_BLAS
from .._validation import check_memory
from ._eigen import eigh_factored

__all__ = ["CHOLESKY_BLOCK", "FACTOR_ALTERNATIVES", "KernelFactor", "cholesky", "flow_factors", "in_eigenbasis",
           "step_factors"]

#: Columns per step of the blocked Cholesky (fastntk._core.cholesky_upper): LAPACK's ?potrf sees only
#: diagonal blocks of this order, far below the orders where OpenBLAS's threaded ?potrf crashes.
CHOLESKY_BLOCK = 1024


def cholesky(a, overwrite_a=False):
    """U (N, N) float64 upper triangular with UᵀU = a, its strict lower triangle 0, for a symmetric
    positive definite (N, N) array (its upper triangle is read). LinAlgError if a is not positive
    definite. Blocked, on threaded ?gemm and ?trsm (cpp/include/fastntk/cholesky.hpp says why not
    LAPACK's ?potrf: OpenBLAS's threaded one crashes on large matrices); ``overwrite_a`` factors a
    float64 Fortran-order ``a`` in place."""
    u = a if overwrite_a and a.dtype == np.float64 and a.flags.f_contiguous else np.array(a, np.float64, order="F")
    info = _core.cholesky_upper(u, CHOLESKY_BLOCK, *CHOLESKY_BLAS)
    if info:
        raise np.linalg.LinAlgError(f"the leading minor of order {info} is not positive definite")
    return u

#: What to use when an N×N float64 factor does not fit (the MemoryError message lists these).
FACTOR_ALTERNATIVES = ("kernel_ridge(..., solver='cg') or solvers.gradient_descent_mse_expm (products K @ V only, "
                       "no N×N factor), on solvers.kernel_operator (no N×N kernel); kernel_ridge(..., "
                       "solver='falkon') or predict.gradient_descent_mse_nystrom (Nyström on M centres: O(N·M) "
                       "memory); fewer training points")


class KernelFactor:
    """Lazy factorizations of K_reg = K + reg·I: eigendecomposition and Cholesky (≤ two N×N each).

    ``k`` (N, N) finite and symmetric (checked by the caller); ``diag_reg`` relative (× trace(K)/N)
    unless ``absolute``; ``name`` is the caller's argument name, used in warnings and errors.
    """

    def __init__(self, k, diag_reg, absolute, name):
        self.k, self.name, self.n = k, name, k.shape[0]
        self.reg = diag_reg if absolute else diag_reg * float(np.trace(k, dtype=np.float64)) / self.n
        self.eps = np.finfo(k.dtype).eps
        self._eig = self._chol = None
        self.singular = False

    def regularized(self, copies=1):
        """K_reg as a private Fortran-order float64 copy (K^T: a plain copy of a C-order K), for LAPACK.

        ``copies``: the N×N float64 arrays the caller will hold (the memory check counts them).
        """
        check_memory(8 * copies * self.n**2, f"factorizing {self.name} ({copies} × {self.n}×{self.n} float64)",
                     FACTOR_ALTERNATIVES)
        k_reg = np.array(self.k.T, dtype=np.float64, order="F")
        k_reg.flat[:: self.n + 1] += self.reg
        return k_reg

    def eig(self):
        """(λ, V as a FactoredEigenbasis) ascending, with λ ≤ N·eps·λ_max set to 0."""
        if self._eig is None:
            lam, basis = eigh_factored(self.regularized(copies=2))
            top = max(lam[-1], 0.0)
            if lam[0] < -np.sqrt(self.eps) * top:
                warnings.warn(f"{self.name} is indefinite beyond rounding: λ_min = {lam[0]:.3g}, λ_max = {top:.3g}; "
                              "negative eigenvalues are treated as 0", RuntimeWarning, stacklevel=4)
            self._eig = (np.where(lam > self.n * self.eps * top, lam, 0.0), basis)
        return self._eig

    def solve(self, b):
        """K_reg⁻¹ b by Cholesky (by the eigendecomposition if cached); the pseudo-inverse if singular."""
        if self._chol is None and not self.singular:
            c, self.singular = None, self._eig is not None and not self._eig[0].all()
            if self._eig is None:
                try:
                    c = (cholesky(self.regularized(), overwrite_a=True), False)
                    piv = np.abs(np.diag(c[0]))
                    self.singular = piv.min() ** 2 <= self.n * self.eps * piv.max() ** 2
                except np.linalg.LinAlgError:
                    self.singular = True
            if self.singular:
                warnings.warn(f"{self.name} (+ diag_reg) is numerically singular: Cholesky failed, lost all precision "
                              "or eigenvalues ≤ N·eps·λ_max; using the eigendecomposition pseudo-inverse",
                              RuntimeWarning, stacklevel=4)
            self._chol = None if self.singular else c
        return sl.cho_solve(self._chol, b, check_finite=False) if self._chol is not None else self.pinv_solve(b)

    def pinv_solve(self, b):
        """K_reg⁺ b: eigenvalues counted as zero are dropped."""
        lam, basis = self.eig()
        return basis.apply(np.divide(1.0, lam, out=np.zeros_like(lam), where=lam > 0)[:, None] * basis.apply_t(b))


def flow_factors(lam, tau, n):
    """e = exp(−λτ/n) − 1 and h = e/λ, shape (T, N) for tau (T, 1); both 0 where λ = 0."""
    pos = lam > 0
    with np.errstate(invalid="ignore"):  # 0·inf at λ = 0, τ = inf, masked
        e = np.where(pos, np.expm1(-lam * tau / n), 0.0)
    return e, e / np.where(pos, lam, 1.0)


def step_factors(lam, steps, learning_rate, n):
    """e = (1 − ηλ/n)^k − 1 and h = e/λ for k (T, 1) steps; expm1(k·log1p(−x)) keeps e exact for small x."""
    x = learning_rate * lam / n
    small = x < 1
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.where(small, np.expm1(steps * np.log1p(-np.where(small, x, 0.0))), (1.0 - x) ** steps - 1.0)
    return e, e / np.where(lam > 0, lam, 1.0)


def in_eigenbasis(basis, d, z, left=None):
    """V diag(d_l) z, or ``left`` @ it, for every row d_l of d (L, N): (L, N or N_left, M).

    z = V^T b (N, M). All L·M columns go through one product with V, then one with ``left``
    (N_test, N): 4N²·LM + 2·N_test·N·LM flops, against 4N²·N_test to form ``left @ V`` first.
    """
    n, m, big_l = z.shape[0], z.shape[1], d.shape[0]
    w = basis.apply((d.T[:, :, None] * z[:, None, :]).reshape(n, big_l * m))
    if left is not None:
        w = left @ w
    return np.moveaxis(w.reshape(-1, big_l, m), 1, 0)
