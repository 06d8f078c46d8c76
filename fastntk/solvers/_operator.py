"""The matrix-free kernel: row blocks of K(x, x) computed on the fly, as a scipy LinearOperator."""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .._validation import check_integer

__all__ = ["kernel_operator"]


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
    block_size = check_integer(block_size, "block_size")
    n = x.shape[0]

    def matmat(v):
        v = np.asarray(v, dtype=np.float64).reshape(n, -1)
        out = np.empty_like(v)
        for i in range(0, n, block_size):
            out[i:i + block_size] = np.asarray(kernel_fn(x[i:i + block_size], x, get, **kernel_fn_kwargs)) @ v
        return out

    return LinearOperator((n, n), matvec=lambda v: matmat(v).ravel(), matmat=matmat,
                          rmatvec=lambda v: matmat(v).ravel(), rmatmat=matmat, dtype=np.float64)
