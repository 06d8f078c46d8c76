"""Result types of fastntk: one home for every namedtuple and record a public call returns."""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["Kernel", "kernel_tuple"]


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
