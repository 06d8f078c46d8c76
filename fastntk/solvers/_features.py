"""Kernel ridge regression on explicit features Φ (K ≈ Φ Φᵀ): an m×m solve, O(N·m²)."""

from __future__ import annotations

import numpy as np
import scipy.linalg as sl

from .._validation import check_positive
from ._factor import cholesky

__all__ = ["feature_ridge"]


def feature_ridge(phi, y, diag_reg=0.0, diag_reg_absolute_scale=False):
    """Weights w of ridge regression on features: argmin ‖y − Φ w‖² + λ‖w‖².

    Parameters
    ----------
    phi : ndarray (N, m), the features of the N training points (float32 or float64)
    y : ndarray (N,) or (N, O), the targets
    diag_reg : float >= 0, the ridge λ, relative to trace(Φ Φᵀ)/N (as ``predict.kernel_ridge``'s)
        unless ``diag_reg_absolute_scale``

    Returns
    -------
    w : float64 ndarray (m,) or (m, O), w = (ΦᵀΦ + λI)⁻¹ Φᵀ y, so that Φ_test w is kernel ridge
    regression with the kernel Φ Φᵀ and ridge λ (w = Φᵀ (Φ Φᵀ + λI)⁻¹ y); for λ = 0 the least-squares
    solution of least norm (ΦᵀΦ may be singular). Computed in float64 (ΦᵀΦ by BLAS, one Cholesky).
    """
    reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    phi64 = np.asarray(phi, dtype=np.float64)
    y64 = np.asarray(y, dtype=np.float64)
    if y64.shape[0] != phi64.shape[0]:
        raise ValueError(f"y must have {phi64.shape[0]} rows (one per row of phi); got shape {y64.shape}")
    lam = reg if diag_reg_absolute_scale else reg * float(np.einsum("ij,ij->", phi64, phi64)) / max(1, len(phi64))
    if lam == 0:
        return np.linalg.lstsq(phi64, y64, rcond=None)[0]
    gram = phi64.T @ phi64
    gram[np.diag_indices_from(gram)] += lam
    u = cholesky(gram, overwrite_a=True)
    return sl.cho_solve((u, False), phi64.T @ y64, check_finite=False)
