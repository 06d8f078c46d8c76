"""The matrix-free kernel: blocks K(x1[rows], x2[cols]) computed on the fly, and K as a scipy LinearOperator."""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .. import _backend, _tiles, infinite
from .._blas import one_blas_thread
from .._validation import check_integer, check_kernel_name, check_pair, uses_dask

__all__ = ["KernelOperator", "kernel_operator"]


class KernelOperator(LinearOperator):
    """K(x1, x2) of one network as a LinearOperator, and its blocks, never held whole.

    Parameters
    ----------
    kernel_fn : a ``kernel_fn`` of :mod:`fastntk.stax`, or any callable ``kernel_fn(x1, x2, get)``
        returning an (n1, n2) array (then every block is one call, and nothing is cached).
    x1 : ndarray or dask array of shape (N1, d)
    x2 : ndarray or dask array of shape (N2, d) or None (x1: K is symmetric)
    get : 'nngp' or 'ntk'
    block_size : int > 0 or None
        Rows of K per block of a product; None: blocks of about 32 MiB (``_tiles.BLOCK_BYTES``).
    dtype : None, np.float32 or np.float64
        Of the blocks (None: as the inputs, see ``kernel_fn``); products are float64.

    Notes
    -----
    For a stax ``kernel_fn`` the per-point pass of every input (its Σ(x, x), Θ(x, x) and the
    variance entering each activation, O(N·depth)) is computed once here and shared by every block
    (:class:`fastntk.infinite.PerPoint`), so a block costs its Gram and the fused pass only. A
    product ``K @ V`` (V of shape (N2, M)) walks row blocks: extra memory one block.

    Dask arrays x1 (or x2) make every block and product dask tasks on the active scheduler
    (:class:`fastntk.distributed.KernelBlocks`; needs ``pip install "fastntk[dask]"``): the blocks
    are those of the row chunks of x1 and x2 (rechunked to ``block_size`` rows when it is given),
    the per-point passes are computed once here and kept by the scheduler, and products come
    back to the client as ndarrays (V and the result are O(N·M); K never is).
    """

    #: The dask executor of the blocks (:class:`fastntk.distributed.KernelBlocks`) when x1 or x2 is a dask array.
    dask = None

    def __init__(self, kernel_fn, x1, x2=None, get="ntk", block_size=None, dtype=None):
        if not callable(kernel_fn):
            raise TypeError(f"kernel_fn must be callable; got {type(kernel_fn).__name__}")
        self.get = check_kernel_name(get)
        self.block_size = check_integer(block_size, "block_size", allow_none=True)
        self.kernel_fn, self.symmetric = kernel_fn, x2 is None
        layer_spec = getattr(kernel_fn, "spec", None)
        if uses_dask(x1, x2):  # the blocks of the row chunks as dask tasks (fastntk.distributed needs dask)
            from .. import distributed

            self.dask = distributed.KernelBlocks.of(kernel_fn, x1, x2, self.get, dtype, rows=self.block_size).persist()
            self.x1, self.x2, self.points, self.block_dtype = x1, x1 if x2 is None else x2, None, self.dask.dtype
            super().__init__(np.float64, self.dask.shape)
            return
        if layer_spec is None:  # any callable: inputs as given, one call per block
            for name, x in (("x1", x1), ("x2", x2)):
                if x is not None and np.ndim(x) != 2:
                    raise ValueError(f"{name} must be an array of shape (N, d); got shape {np.shape(x)}")
            self.x1, self.x2, block_dtype, self.points = x1, x1 if x2 is None else x2, np.dtype(dtype or "f8"), None
        else:
            self.x1, x2, block_dtype = check_pair(x1, x2, dtype)
            self.x2 = self.x1 if x2 is None else x2
            self.spec, self.backend = layer_spec, _backend.select(self.x1)
            p1 = infinite.per_point(self.x1, layer_spec, self.backend)
            self.points = (p1, p1 if x2 is None else infinite.per_point(self.x2, layer_spec, self.backend))
        self.block_dtype = block_dtype
        super().__init__(np.float64, (self.x1.shape[0], self.x2.shape[0]))

    def block(self, rows=slice(None), cols=slice(None), out=None, *, get=None):
        """K(x1[rows], x2[cols]): rows, cols slices or index arrays; ``out`` an (n1, n2) array of the
        block dtype to write into (C-contiguous rows), or None. Returns the block.

        ``get`` (keyword-only): None for this operator's kernel, or a tuple of names ('nngp', 'ntk')
        for each of them from one pass; then ``out`` is None or a dict name -> array, and a dict
        name -> block is returned.
        """
        names = (self.get,) if get is None else tuple(get)
        outs = {self.get: out} if get is None else dict(out or {})
        outs = {name: arr for name, arr in outs.items() if arr is not None}
        if self.dask is not None:
            res = self.dask.block(rows, cols, names, outs or None)
        elif self.points is None:
            res = {}
            for name in names:
                k = np.asarray(self.kernel_fn(self.x1[rows], self.x2[cols], name), dtype=self.block_dtype)
                if name in outs:
                    outs[name][...] = k
                res[name] = outs.get(name, k)
        else:
            x1, x2 = self.x1[rows], self.x2[cols]
            p1, p2 = self.points[0].take(rows), self.points[1].take(cols)
            res = infinite.infinite_kernels(np.ascontiguousarray(x1), np.ascontiguousarray(x2), self.spec, names,
                                            self.block_dtype, self.backend, out=outs or None, points=(p1, p2))
        return res[self.get] if get is None else {name: res[name] for name in names}

    def diagonal(self):
        """K(x1ᵢ, x2ᵢ) for a symmetric operator: (N,), from the per-point pass (no block)."""
        if not self.symmetric:
            raise ValueError("diagonal() is of a symmetric kernel operator (x2 None)")
        if self.dask is not None:
            return self.dask.diagonal()
        if self.points is None:
            return np.array([self.block(slice(i, i + 1), slice(i, i + 1))[0, 0] for i in range(self.shape[0])])
        p = self.points[0]
        return (p.nngp if self.get == "nngp" else p.ntk).astype(self.block_dtype)

    def _rows(self):
        n2 = self.shape[1]
        rows = self.block_size or _tiles.rows_per_block(n2 * self.block_dtype.itemsize, lo=16)
        return _tiles.row_blocks(self.shape[0], rows, False)

    def _matmat(self, v):
        if self.dask is not None:
            return self.dask.matmat(v)
        v = np.asarray(v, dtype=np.float64).reshape(self.shape[1], -1)
        out = np.empty((self.shape[0], v.shape[1]))
        with one_blas_thread():  # as NystromProducts: no BLAS threads left spinning beside the next block
            for i0, i1, _ in self._rows():
                out[i0:i1] = self.block(slice(i0, i1)) @ v
        return out

    def _rmatmat(self, v):
        if self.dask is not None:
            return self.dask.rmatmat(v)
        if self.symmetric:
            return self._matmat(v)
        v = np.asarray(v, dtype=np.float64).reshape(self.shape[0], -1)
        out = np.zeros((self.shape[1], v.shape[1]))
        with one_blas_thread():
            for i0, i1, _ in self._rows():
                out += self.block(slice(i0, i1)).T @ v[i0:i1]
        return out

    def _matvec(self, v):
        return self._matmat(v).ravel()

    def _rmatvec(self, v):
        return self._rmatmat(v).ravel()


def kernel_operator(kernel_fn, x, get="ntk", block_size=1024, **kernel_fn_kwargs):
    """K(x, x) as a symmetric :class:`KernelOperator` computing ``block_size`` rows of K per block.

    ``kernel_fn_kwargs``: ``dtype`` of the blocks. See :class:`KernelOperator`.
    """
    unknown = set(kernel_fn_kwargs) - {"dtype"}
    if unknown:
        raise TypeError(f"kernel_operator got unexpected keyword arguments {sorted(unknown)}; supported: dtype")
    return KernelOperator(kernel_fn, x, None, get, block_size, kernel_fn_kwargs.get("dtype"))
