"""Result types of fastntk: one home for every namedtuple and record a public call returns."""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["CGResult", "DiagRegSelection", "Gaussian", "Kernel", "KernelRidge", "Spectrum", "kernel_tuple"]


@dataclass
class Kernel:
    """Kernels of x1 against x2, as neural-tangents' ``Kernel`` (the fields users read).

    nngp, ntk : ndarray of shape (N1, N2)
    cov1 : ndarray of shape (N1,), Σ(x1ᵢ, x1ᵢ); cov2 : (N2,) or None when x2 is None.
    """

    nngp: np.ndarray
    ntk: np.ndarray | None
    cov1: np.ndarray
    cov2: np.ndarray | None


@functools.lru_cache(maxsize=None)
def kernel_tuple(names):
    """The namedtuple ``Kernel`` with fields ``names`` (what a tuple ``get`` returns)."""
    return collections.namedtuple("Kernel", names)


class Gaussian(NamedTuple):
    """``(mean, covariance)``; the covariance is per output column (``Cov ⊗ I_O``)."""

    mean: np.ndarray
    covariance: np.ndarray


class KernelRidge(NamedTuple):
    """Kernel ridge regression: ``dual_coef`` (N, ...), ``fx_train`` (N, ...), ``fx_test`` or None."""

    dual_coef: np.ndarray
    fx_train: np.ndarray
    fx_test: np.ndarray | None


class Spectrum(NamedTuple):
    """Eigenvalues (descending) of K_reg and the numbers derived from them."""

    eigenvalues: np.ndarray
    lambda_min: float
    lambda_max: float
    condition_number: float
    effective_rank: float


class DiagRegSelection(NamedTuple):
    """Chosen ``diag_reg`` and the GCV and leave-one-out curves over the grid ``diag_regs``."""

    diag_reg: float
    diag_regs: np.ndarray
    gcv: np.ndarray
    loo: np.ndarray


class CGResult(NamedTuple):
    """``solution`` (N, M), ``iterations`` run, ``residual`` ‖b − A x‖/‖b‖ per column (M,)."""

    solution: np.ndarray
    iterations: int
    residual: np.ndarray
