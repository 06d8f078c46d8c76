"""Randomized Nyström preconditioner for (K + μI) x = b (Frangella, Tropp & Udell 2023, arXiv:2110.02820)."""

from __future__ import annotations

import numpy as np
import scipy.linalg as sl

from .._validation import check_finite, check_integer, check_positive, check_seed
from ._factor import cholesky

__all__ = ["nystrom_preconditioner"]


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
    rank = check_integer(rank, "rank", maximum=n)
    mu = check_positive(diag_reg, "diag_reg", allow_zero=True)
    rng = check_seed(seed)
    omega, _ = np.linalg.qr(rng.standard_normal((n, rank)))
    y = np.asarray(k @ omega, dtype=np.float64)
    check_finite(y, "k @ omega (the Nyström sketch of k)")
    shift = np.sqrt(n) * np.finfo(np.float64).eps * np.linalg.norm(y)
    y += shift * omega
    core = omega.T @ y
    chol = cholesky((core + core.T) / 2, overwrite_a=True)
    u, sig, _ = sl.svd(sl.solve_triangular(chol, y.T, trans="T", lower=False).T, full_matrices=False)
    lam = np.maximum(sig**2 - shift, 0.0)
    scale = (lam[-1] + mu) / (lam + mu) - 1.0 if mu > 0 or lam[-1] > 0 else np.zeros_like(lam)

    def apply(v):
        return v + u @ (scale[:, None] * (u.T @ v))

    return apply
