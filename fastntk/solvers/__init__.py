"""Linear algebra for kernel regression and gradient flow: algorithms on arrays or operators.

No neural-tangents API here (that is :mod:`fastntk.predict`) and no spectral diagnostics (that is
:mod:`fastntk.spectrum`); the arguments of the public functions are checked by
:mod:`fastntk._validation`, the algorithms below trust them.

* Dense factorizations: :func:`largest_eigenvalue`, :func:`eigh_factored` and
  :class:`FactoredEigenbasis` (V = Q S kept factored: two N×N arrays), and :class:`KernelFactor`,
  the lazy eigendecomposition and Cholesky of ``K + reg·I`` that :mod:`fastntk.predict` and
  :mod:`fastntk.spectrum` share, with the gradient-flow factors :func:`flow_factors`,
  :func:`step_factors` and :func:`in_eigenbasis`.
* Large N, products ``K @ V`` only (V of shape (N, M)): ``K`` an (N, N) array, a scipy
  ``LinearOperator``, or :func:`kernel_operator`, which computes row blocks of K from the inputs on
  the fly (O(block·N) memory). :func:`cg` — preconditioned conjugate gradients on all M right-hand
  sides at once; :func:`nystrom_preconditioner` — randomized Nyström preconditioner of rank r
  (Frangella, Tropp & Udell 2023, arXiv:2110.02820), for ``(K + μI) x = b``;
  ``predict.kernel_ridge(solver='cg')`` calls these. :func:`gradient_descent_mse_expm` —
  gradient-flow predictions at given times by Krylov ``scipy.sparse.linalg.expm_multiply`` on an
  (N + M)-sized augmented operator. Extra memory O(N·M) per solver (plus O(N·rank) for Nyström).
* Kernels larger than RAM: :func:`store_kernels` writes K(x1, x2) block by block into .npy files
  with a manifest of finished blocks, so an interrupted run resumes where it stopped;
  :class:`StoredKernel` is a stored .npy as an operator (row blocks of its memory map).
* Nyström on M centres, never an N×N matrix (:class:`KernelOperator` blocks against the centres):
  :func:`falkon` — kernel ridge regression by Falkon's preconditioned CG on the M-dimensional
  normal equations (Rudi, Carratino & Rosasco 2017; Meanti et al. 2020), exact when every training
  point is a centre; :func:`gradient_descent_mse_nystrom` — gradient flow with the Nyström kernel at
  any times from one M×M eigendecomposition; :class:`NystromProducts` — K_NM v, K_NMᵀ w, K_NMᵀ K_NM v
  by row blocks, K_NM stored in float32 within a memory budget or recomputed.
* Explicit features (K ≈ Φ Φᵀ, :mod:`fastntk.features`): :func:`feature_ridge` — ridge regression on
  the m features, one m×m Cholesky.

Conventions (``n = y_train.size``, relative ``diag_reg`` × trace(K)/N, times in units of
``learning_rate``) are those of :mod:`fastntk.predict`.
"""

from __future__ import annotations

from .._types import CGResult, FalkonResult
from ._eigen import FactoredEigenbasis, eigh_factored, largest_eigenvalue
from ._factor import (
           FACTOR_ALTERNATIVES,
           KernelFactor,
           flow_factors,
           in_eigenbasis,
           step_factors,
)
from ._falkon import NystromProducts, falkon, gradient_descent_mse_nystrom
from ._features import feature_ridge
from ._krylov import cg, gradient_descent_mse_expm, solve_regularized
from ._nystrom import nystrom_preconditioner
from ._operator import KernelOperator, kernel_operator
from ._store import StoredKernel, store_kernels

__all__ = ["FACTOR_ALTERNATIVES", "CGResult", "FactoredEigenbasis", "FalkonResult", "KernelFactor", "KernelOperator",
           "NystromProducts", "StoredKernel", "cg", "eigh_factored", "falkon", "feature_ridge", "flow_factors", "gradient_descent_mse_expm",
           "gradient_descent_mse_nystrom", "in_eigenbasis", "kernel_operator", "largest_eigenvalue",
           "nystrom_preconditioner", "solve_regularized", "step_factors", "store_kernels"]
