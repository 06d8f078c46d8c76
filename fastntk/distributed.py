"""Kernels of dask arrays, block by block as dask tasks: an executor, not a backend (DESIGN §1).

The blocks are those of the in-process driver, each computed by the CPU code
(:func:`fastntk.infinite.infinite_kernels`) on NumPy chunks inside one dask task, on whatever
scheduler is active: a ``dask.distributed.Client`` when one exists, else dask's local threads.
Inputs are cut into their row chunks (``x.chunks[0]``; the d features are one chunk); the
per-point pass of each chunk (:func:`fastntk.infinite.per_point`, O(n·depth)) is one task that
every block of that chunk reads.

* ``kernel_fn(x1, x2, get)`` of a :mod:`fastntk.stax` network with dask arrays returns dask arrays
  (:func:`kernels`): Σ and Θ of shape (N1, N2) with chunks (x1's row chunks, x2's row chunks),
  one task per block; nothing of size N1×N2 reaches the client. x2 None: the blocks above the
  diagonal are computed once and mirrored (the blocks below are their transposes), each diagonal
  block as the symmetric kernel of its chunk.
* :class:`KernelBlocks`: the products K @ V, Kᵀ @ W and Kᵀ K V as dask tasks (one per block, each
  block's partial product summed by dask's tree reduction), NumPy results on the client.
  ``solvers.KernelOperator`` uses it for dask inputs; :func:`nystrom_products` gives Falkon's
  K_NM products.

Values: the per-point passes are those of NumPy inputs, bit for bit; a block's Gram comes from
BLAS on the chunk pair, and the symmetric kernel's blocks off the diagonal take the points'
x·x from the per-point pass rather than from the Gram's diagonal, so kernels equal the NumPy
results to rounding (bitwise where BLAS sums each dot product in the same order in a block as
in the whole). Products sum their blocks in another order: equal to rounding.

Threads: a task's compiled pass runs with the OpenMP threads of the thread it runs in, which
start from ``OMP_NUM_THREADS`` (``fastntk.set_num_threads`` sets the calling thread's only).
dask.distributed's nanny starts each worker process with OMP_NUM_THREADS=1 (one core per worker
thread); with dask's local threads (one task per core at a time) set OMP_NUM_THREADS=1 before
Python starts, or each task's threads share the cores with the others'.

Needs dask (``pip install "fastntk[dask]"``); no other module of fastntk imports it.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import numpy as np

try:
    import dask
    import dask.array as da
    import dask.local
    import dask.threaded
except ImportError as e:
    raise ImportError('fastntk.distributed needs dask and dask.array: pip install "fastntk[dask]"') from e

from . import _backend, infinite
from ._types import Kernel
from ._validation import (
    check_block_rows,
    check_integer,
    check_kernel_name,
    check_memory,
    check_pair,
    check_rows,
)

__all__ = ["KernelBlocks", "falkon_products", "kernels", "nystrom_products"]


class _Network(NamedTuple):
    """What every block task of one call needs besides its chunks: the network ``spec``, the kernel
    ``names`` ('nngp'/'ntk'), the result ``dtype``, the ``backend`` object and ``block_rows``."""

    spec: object
    names: tuple
    dtype: np.dtype
    backend: object
    block_rows: int | None


def kernels(layer_spec, x1, x2, names, *, diagonal=False, out=None, dtype=None, progress=False, block_rows=None,
            backend="auto", diagonal_batch=True):
    """``kernel_fn``'s results for dask inputs: the dict of :func:`fastntk.infinite.infinite_kernels`
    ('nngp', 'ntk' as asked, 'cov1', 'cov2', 'width', 'is_gaussian', 'x1_is_x2') with dask arrays.

    Parameters
    ----------
    layer_spec : the network (``kernel_fn.spec``)
    x1 : dask array of shape (N1, d), float32 or float64 (or an ndarray when x2 is a dask array)
    x2 : dask array or ndarray of shape (N2, d), or None (x1: the symmetric kernel)
    names : the lower-cased fields of ``get`` (``_validation.check_get``)
    diagonal : bool
        Σ(x1ᵢ, x1ᵢ), Θ(x1ᵢ, x1ᵢ) only: dask vectors (N1,), chunked as x1's rows. x2 must be None.
    dtype, block_rows, backend, diagonal_batch : as for ``kernel_fn``; ``diagonal_batch=False``
        makes cov1 (cov2) the (N1, N1) ((N2, N2)) NNGP of x1 (x2), a dask array as well.
    out, progress : refused (ValueError): dask writes the chunks where its scheduler keeps
        them (``da.store`` or ``to_zarr`` writes them to disk), and shows progress with
        ``dask.diagnostics.ProgressBar`` or ``dask.distributed.progress``.

    Returns
    -------
    dict as ``infinite.infinite_kernels``'s: kernels (N1, N2) with chunks (x1.chunks[0],
    x2.chunks[0]) (an ndarray side is cut into chunks of the dask side's largest row chunk);
    cov1 (N1,) and cov2 (N2,) (None when x2 is None): Σ(x, x) of each point. Values are checked
    chunk by chunk as they are computed (NaN, inf, a Gram that would overflow: ValueError then).
    x1_is_x2 with x2 given compares x1 and x2 (one pass over both) when their shapes agree.
    """
    if isinstance(x1, Kernel):
        raise TypeError("a Kernel of dask arrays cannot be continued through another network; call kernel_fn "
                         "of the composed network (stax.serial) on the inputs instead")
    if out is not None:
        raise ValueError("out is for NumPy results; with dask inputs the result is a dask array: write it with "
                         "dask.array.store(kernel, target) or kernel.to_zarr(...)")
    if progress:
        raise ValueError("progress is for NumPy inputs; with dask inputs use dask.diagnostics.ProgressBar() (local "
                         "scheduler) or dask.distributed.progress(...) (a Client)")
    x1, x2 = _arrays(x1, x2)
    if np.ndim(x1) != 2 or (x2 is not None and np.ndim(x2) != 2):
        raise ValueError(f"dask inputs must be of shape (N, d); got x1.shape={np.shape(x1)}, x2.shape="
                         f"{None if x2 is None else np.shape(x2)} (inputs with location axes need NumPy arrays)")
    x1, x2, dtype = check_pair(x1, x2, dtype, lazy=True)
    if diagonal and x2 is not None:
        raise ValueError("diagonal=True gives Σ(x, x) and Θ(x, x) of x1 alone; x2 must be None")
    net, width, is_gaussian = _network(layer_spec, x1.shape[1], tuple(n for n in names if n in ("nngp", "ntk")),
                                       dtype, backend, block_rows)
    x1, x2 = _as_dask(x1, x2)
    res = {"width": width, "is_gaussian": is_gaussian, "x1_is_x2": x2 is None or _same(x1, x2)}
    if diagonal or not net.names:  # the O(N) per-point pass (only per-point fields asked for: of x2 too)
        res |= _diagonals(x1, "x1", net)
        res["cov2"] = None if x2 is None else _diagonals(x2, "x2", net)["cov1"]
        return res
    blocks = KernelBlocks(layer_spec, x1, x2, net.names, dtype, backend=backend, block_rows=block_rows)
    res |= blocks.kernels() | {"cov1": blocks.cov(1), "cov2": None if x2 is None else blocks.cov(2)}
    if not diagonal_batch:  # neural-tangents' full covariance of each batch: x1 with itself computed already
        res["cov1"] = (res["nngp"] if x2 is None and "nngp" in res
                       else _symmetric_nngp(layer_spec, x1, dtype, backend, block_rows))
        res["cov2"] = None if x2 is None else _symmetric_nngp(layer_spec, x2, dtype, backend, block_rows)
    return res


def _network(layer_spec, d, names, dtype, backend, block_rows):
    """(:class:`_Network`, the width of the last layer, whether its result is Gaussian) of a call,
    checked on the client before any task: the kernel program (the errors of an unsupported
    layer order come now), ``backend`` and ``block_rows``. Refuses Dropout(mode='train'), whose
    kernel depends on which points of x1 and x2 coincide."""
    steps, _, width, is_gaussian = infinite.kernel_program(layer_spec, infinite.Start(d))
    if any(isinstance(step, infinite.Scale) for step in steps):
        raise ValueError("Dropout(mode='train') scales the kernel of coincident points, which dask's blocks do "
                         "not see; pass NumPy arrays, or use Dropout(mode='test')")
    net = _Network(layer_spec, names, dtype, _backend.select(backend=backend), check_block_rows(block_rows))
    return net, width, is_gaussian


def _arrays(x1, x2):
    """x1 and x2 as dask arrays or ndarrays (np.asarray of anything else; None stays None)."""
    for name, x in (("x1", x1), ("x2", x2)):
        if dask.is_dask_collection(x) and not isinstance(x, da.Array):
            raise TypeError(f"{name} must be a dask array; got {type(x).__name__} (a dask DataFrame converts with "
                            ".to_dask_array(lengths=True))")
    return tuple(x if x is None or isinstance(x, da.Array) else np.asarray(x) for x in (x1, x2))


def _as_dask(x1, x2):
    """x1 and x2 as dask arrays with the d features in one chunk; an ndarray side is cut into
    chunks of rows as large as the dask side's largest."""
    rows = max(max(x.chunks[0]) for x in (x1, x2) if isinstance(x, da.Array))
    return tuple(None if x is None else x.rechunk({1: -1}) if isinstance(x, da.Array)
                 else da.from_array(x, chunks=(rows, -1)) for x in (x1, x2))


def _same(x1, x2):
    """neural-tangents' x1_is_x2 (``infinite._same``) of dask arrays, without a pass over them when they
    are one and the same graph."""
    return (x1.shape == x2.shape and x1.name == x2.name) or infinite._same(x1, x2)


def _symmetric_nngp(layer_spec, x, dtype, backend, block_rows):
    """The (N, N) NNGP of x with itself, a dask array."""
    return KernelBlocks(layer_spec, x, None, ("nngp",), dtype, backend=backend, block_rows=block_rows).kernels()["nngp"]


def _diagonals(x, name, net):
    """'cov1' (Σ(x, x), N) and the kernels of ``net.names`` of each point with itself: dask vectors
    chunked as x's rows, one task per chunk (x: one of kernel_fn's inputs, called ``name``)."""
    fields = ("cov1", *(n for n in net.names if n != "nngp"))
    key = _graph_key(net)
    parts = [da.from_delayed(dask.delayed(_diagonal_task)(c, name, key, fields), (len(fields), n), dtype=net.dtype)
             for c, n in zip(x.to_delayed()[:, 0], x.chunks[0])]
    stacked = da.concatenate(parts, axis=1)
    res = {f: stacked[k] for k, f in enumerate(fields)}
    return res | ({"nngp": res["cov1"]} if "nngp" in net.names else {})


def _diagonal_task(x, name, net, fields):
    """The per-point ``fields`` (len(fields), n) of the chunk x of rows of the input ``name``."""
    x = check_rows(x, name, net.dtype)
    res = infinite.infinite_kernels(x, None, net.spec, tuple(f for f in fields if f != "cov1"), net.dtype,
                                    net.backend, diagonal=True)
    return np.stack([res[f] for f in fields])


def _graph_key(net):
    """``net`` as one key of the graph, which every task of a call reads instead of carrying a copy."""
    return dask.delayed(net, name=f"fastntk-network-{uuid.uuid4().hex}", traverse=False)


class KernelBlocks:
    """K(x1, x2) of a network, block by block over the row chunks of x1 and x2, as dask tasks.

    Parameters
    ----------
    layer_spec : the network (``kernel_fn.spec`` of :mod:`fastntk.stax`)
    x1 : dask array (or ndarray) of shape (N1, d), float32 or float64
    x2 : dask array (or ndarray) of shape (N2, d), or None (x1: K is symmetric). An ndarray is cut
        into chunks of rows as large as the other side's largest.
    names : tuple of 'nngp' / 'ntk'
        The kernels of :meth:`kernels`; the products are of the kernel ``names[0]``.
    dtype : None, np.float32 or np.float64
        Of the blocks (None: float32 when both inputs are, else float64); products are float64.
    backend : 'auto' or a backend name (``fastntk._backend``)
    block_rows : int or None
        Rows per tile of each block's fused pass (``kernel_fn``'s block_rows).
    rows : int or None
        Rows per chunk: x1 and x2 rechunked to it (None: their chunks as given).

    Notes
    -----
    Each task reads two chunks of rows and their per-point passes, computes its block by
    ``infinite.infinite_kernels(..., points=)`` and, for a product, multiplies it and drops it: a
    task holds one block (rows of x1's chunk × rows of x2's). With x2 None a block above the
    diagonal gives both of its products (Kᵢⱼ Vⱼ and Kᵢⱼᵀ Vᵢ), so each is computed once.
    The checked chunks and their per-point passes are tasks of each graph; :meth:`persist`
    computes them once and keeps them where the scheduler keeps data (the workers' memory, or
    the client's with local threads: O(N·(d + depth)) in all), so that repeated products (an
    iterative solver) read them instead of recomputing x's graph.
    """

    def __init__(self, layer_spec, x1, x2=None, names=("ntk",), dtype=None, *, backend="auto", block_rows=None,
                 rows=None):
        x1, x2, dtype = check_pair(*_arrays(x1, x2), dtype, lazy=True)
        rows = check_integer(rows, "rows", allow_none=True)
        self.net = _network(layer_spec, x1.shape[1], names, dtype, backend, block_rows)[0]
        x1, x2 = _as_dask(x1, x2)
        self.dtype, self.symmetric = dtype, x2 is None
        self.shape = (x1.shape[0], (x1 if x2 is None else x2).shape[0])
        self._net, self._kept = _graph_key(self.net), None
        self._sides = [_Side(x, name, rows, self._net, dtype) for x, name in ((x1, "x1"), (x2, "x2")) if x is not None]
        if x2 is None:
            self._sides.append(self._sides[0])

    @classmethod
    def of(cls, kernel_fn, x1, x2=None, get="ntk", dtype=None, *, backend="auto", rows=None):
        """The KernelBlocks of one kernel ``get`` ('nngp' or 'ntk') of a :mod:`fastntk.stax` ``kernel_fn``."""
        if getattr(kernel_fn, "spec", None) is None:
            raise TypeError(f"kernel_fn must be a kernel_fn of fastntk.stax (it has .spec) for dask inputs; got "
                            f"{type(kernel_fn).__name__}")
        return cls(kernel_fn.spec, x1, x2, (check_kernel_name(get),), dtype, backend=backend, rows=rows)

    def persist(self, blocks=False):
        """Compute each chunk of rows, checked and cast, and its per-point pass now, and keep them where
        the scheduler keeps data (see Notes); returns self.

        blocks : bool
            Also compute every block of the kernel ``names[0]`` once, now, and keep it: the products
            then read the kept blocks instead of recomputing them (N1·N2·itemsize bytes of the block
            dtype in the workers' memory, or in this process's with dask's local threads, where it
            is checked against the memory available; x2 None: the blocks on and above the diagonal).
        """
        for side in dict.fromkeys(self._sides):
            n = len(side.rows)
            kept = dask.persist(*side.rows, *side.points)
            side.rows, side.points = list(kept[:n]), list(kept[n:])
        if blocks:
            a, b = self._sides
            pairs = self._pairs()
            if dask.base.get_scheduler() in (None, dask.threaded.get, dask.local.get_sync):  # in this process
                check_memory(sum(a.chunks[i] * b.chunks[j] for i, j in pairs) * self.dtype.itemsize,
                             f"keeping the {self.shape[0]}×{self.shape[1]} kernel's blocks",
                             "store=False (the blocks recomputed at each product), dtype=np.float32, or a "
                             "dask.distributed cluster")
            kept = dask.persist(*(dask.delayed(_kernel_task)(*self._block(i, j)) for i, j in pairs))
            self._kept = dict(zip(pairs, kept))
        return self

    def _pairs(self):
        """(i, j) of every block computed: all of them, or those on and above the diagonal (x2 None)."""
        n1, n2 = (len(s.chunks) for s in self._sides)
        return [(i, j) for i in range(n1) for j in range(i if self.symmetric else 0, n2)]

    def _block(self, i, j):
        """The arguments of :func:`_block_task` for block (i, j): x1 chunk i, x2 chunk j (None for a
        diagonal block of x1 with itself), their per-point passes and the network."""
        a, b = self._sides
        diag = self.symmetric and i == j
        return a.rows[i], None if diag else b.rows[j], a.points[i], None if diag else b.points[j], self._net

    def _task(self, fn, i, j, *args, nout=None):
        """The delayed ``fn(K block (i, j) of names[0], *args)`` (of ``nout`` results): on the block kept
        by :meth:`persist`, else on the block computed in the same task and dropped after."""
        if self._kept is not None:
            return dask.delayed(fn, nout=nout)(self._kept[i, j], *args)
        return dask.delayed(_on_block, nout=nout)(fn, *self._block(i, j), *args)

    def kernels(self):
        """name -> K (N1, N2), a dask array with chunks (x1's row chunks, x2's row chunks)."""
        a, b = self._sides
        n = len(self.net.names)
        done = {(i, j): da.from_delayed(dask.delayed(_block_task)(*self._block(i, j)), (n, a.chunks[i], b.chunks[j]),
                                        dtype=self.dtype) for i, j in self._pairs()}
        grid = [[done[i, j] if (i, j) in done else done[j, i].transpose(0, 2, 1) for j in range(len(b.chunks))]
                for i in range(len(a.chunks))]
        stacked = da.block(grid)
        return {name: stacked[k] for k, name in enumerate(self.net.names)}

    def cov(self, side):
        """Σ(x, x) of each point of x1 (``side`` 1) or x2 (2): a dask vector (N,) of the block dtype."""
        s = self._sides[side - 1]
        return da.concatenate([da.from_delayed(dask.delayed(_field)(p, "nngp", self.dtype), (n,), dtype=self.dtype)
                               for p, n in zip(s.points, s.chunks)])

    def diagonal(self):
        """K(x1ᵢ, x1ᵢ) of a symmetric K: an ndarray (N,) of the block dtype, from the per-point passes."""
        if not self.symmetric:
            raise ValueError("diagonal() is of a symmetric kernel (x2 None)")
        s = self._sides[0]
        parts = [dask.delayed(_field)(p, self.net.names[0], self.dtype) for p in s.points]
        return np.concatenate(dask.compute(*parts))

    def block(self, rows=slice(None), cols=slice(None), names=None, out=None):
        """The kernels ``names`` (a tuple of 'nngp'/'ntk'; None: ``names[0]`` of this K) of x1[rows]
        against x2[cols]: a dict name -> ndarray. Those rows of x1 and x2 are computed and fetched
        to the client, where the blocks are computed (rows, cols: slices or index arrays; ``out``:
        None or a dict name -> array of the block's shape and dtype with contiguous rows)."""
        a, b = self._sides
        x1, x2, _ = check_pair(a.take(rows), b.take(cols), self.dtype)
        return infinite.infinite_kernels(x1, x2, self.net.spec, names or self.net.names[:1], self.dtype,
                                         self.net.backend, out=out)

    def matmat(self, v):
        """K @ v: v of shape (N2, k) or (N2,), float64; an ndarray (N1, k) (or (N1,)), float64."""
        v2 = self._vector(v, 1)
        a, b = self._sides
        vb = b.parts(v2)
        parts = [[] for _ in a.chunks]
        for i, j in self._pairs():
            if self.symmetric and i != j:  # one block, both of its products
                ki_vj, kj_vi = self._task(_mirrored_product, i, j, vb[j], vb[i], nout=2)
                parts[i].append(ki_vj)
                parts[j].append(kj_vi)
            else:
                parts[i].append(self._task(np.matmul, i, j, vb[j]))
        return self._sum_rows(parts, a.chunks, v2.shape[1]).reshape(self.shape[0], *np.shape(v)[1:])

    def rmatmat(self, w):
        """Kᵀ @ w: w of shape (N1, k) or (N1,), float64; an ndarray (N2, k) (or (N2,)), float64."""
        if self.symmetric:
            return self.matmat(w)
        w1 = self._vector(w, 0)
        a, b = self._sides
        wa = a.parts(w1)
        parts = [[] for _ in b.chunks]
        for i, j in self._pairs():
            parts[j].append(self._task(_transposed_product, i, j, wa[i]))
        return self._sum_rows(parts, b.chunks, w1.shape[1]).reshape(self.shape[1], *np.shape(w)[1:])

    def normal(self, v):
        """Kᵀ K v: v of shape (N2, k) or (N2,), float64; an ndarray (N2, k) (or (N2,)), float64.

        With x2 in one chunk (Falkon's centres) one pass: each task computes its row block Kᵢ and
        Kᵢᵀ (Kᵢ v); otherwise :meth:`matmat`, then :meth:`rmatmat`.
        """
        a, b = self._sides
        if len(b.chunks) > 1:
            return self.rmatmat(self.matmat(v))
        v2 = self._vector(v, 1)
        (vb,) = b.parts(v2)
        parts = [[self._task(_normal_product, i, 0, vb) for i in range(len(a.chunks))]]
        return self._sum_rows(parts, b.chunks, v2.shape[1]).reshape(np.shape(v))

    def _vector(self, v, axis):
        """v as a float64 (n, k) array, n = shape[axis]."""
        v = np.asarray(v, dtype=np.float64)
        if v.ndim not in (1, 2) or v.shape[0] != self.shape[axis]:
            raise ValueError(f"the vectors must be of shape ({self.shape[axis]},) or ({self.shape[axis]}, k); got "
                             f"shape {v.shape}")
        return v.reshape(self.shape[axis], -1)

    def _sum_rows(self, parts, chunks, k):
        """The rows of a product: chunk i of them the sum of the delayed (chunks[i], k) arrays parts[i],
        by dask's tree reduction; computed on the active scheduler and concatenated: an ndarray."""
        sums = [da.stack([da.from_delayed(p, (n, k), dtype=np.float64) for p in ps]).sum(axis=0)
                for ps, n in zip(parts, chunks)]
        return da.concatenate(sums).compute()


class _Side:
    """One input of :class:`KernelBlocks`: the dask array ``x`` (features in one chunk), its row
    ``chunks`` (sizes) and ``offsets``, the delayed checked chunks ``rows`` and per-point passes ``points``."""

    def __init__(self, x, name, rows, net, dtype):
        self.x = x if rows is None else x.rechunk({0: rows})
        self.chunks = self.x.chunks[0]
        self.offsets = np.cumsum((0, *self.chunks))
        self.rows = [dask.delayed(check_rows)(c, name, dtype) for c in self.x.to_delayed()[:, 0]]
        self.points = [dask.delayed(_per_point_task)(c, net) for c in self.rows]

    def take(self, index):
        """The rows ``index`` (a slice or an index array, in any order, repeats allowed) of x as an
        ndarray; an index array is fetched sorted and without repeats (one piece per chunk), then
        put in its order here."""
        if isinstance(index, slice):
            return self.x[index].compute()
        unique, inverse = np.unique(np.asarray(index), return_inverse=True)
        return self.x[unique].compute()[inverse.reshape(-1)]

    def parts(self, v):
        """The rows of v (n, k) of each chunk of this side, one graph key each."""
        token = uuid.uuid4().hex
        return [dask.delayed(v[i0:i1], name=f"fastntk-v-{token}-{i}", traverse=False)
                for i, (i0, i1) in enumerate(zip(self.offsets[:-1], self.offsets[1:]))]


def _per_point_task(x, net):
    return infinite.per_point(x, net.spec, net.backend)


def _field(points, name, dtype):
    """Σ(x, x) ('nngp') or Θ(x, x) ('ntk') of a per-point pass, in ``dtype``."""
    return getattr(points, name).astype(dtype)


def _block_task(x1, x2, p1, p2, net):
    """The kernels ``net.names`` of one block, stacked: (len(names), n1, n2) of ``net.dtype``.
    x2 None: x1's chunk with itself (the symmetric kernel: its own per-point pass, x·x from the
    Gram's diagonal, as the whole kernel's NumPy path has it)."""
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    check_memory(len(net.names) * n1 * n2 * net.dtype.itemsize, f"a block of {n1}×{n2} kernel entries",
                 "smaller chunks of x1 and x2 (x.rechunk)")
    out = np.empty((len(net.names), n1, n2), net.dtype)
    infinite.infinite_kernels(x1, x2, net.spec, net.names, net.dtype, net.backend, out=dict(zip(net.names, out)),
                              block_rows=net.block_rows, points=None if x2 is None else (p1, p2))
    return out


def _kernel_task(x1, x2, p1, p2, net):
    """The block of the kernel ``net.names[0]``: (n1, n2) of ``net.dtype``."""
    return _block_task(x1, x2, p1, p2, net)[0]


def _on_block(fn, x1, x2, p1, p2, net, *args):
    """fn(the block of ``net.names[0]``, *args), the block computed here and dropped after."""
    return fn(_kernel_task(x1, x2, p1, p2, net), *args)


def _mirrored_product(k, v2, v1):
    """(Kᵢⱼ vⱼ, Kᵢⱼᵀ vᵢ) of one block Kᵢⱼ above the diagonal of a symmetric K."""
    return k @ v2, k.T @ v1


def _transposed_product(k, w1):
    """Kᵢⱼᵀ wᵢ of one block Kᵢⱼ: (n2, k) float64."""
    return k.T @ w1


def _normal_product(k, v2):
    """Kᵢᵀ (Kᵢ v) of one row block Kᵢ = K(x1 chunk i, x2): (n2, k) float64."""
    return k.T @ (k @ v2)


def nystrom_products(kernel_fn, x, centres, get="ntk", dtype=None, *, store=False, backend="auto"):
    """Falkon's products with K_NM = K(x, centres), as dask tasks over the row chunks of x.

    Parameters
    ----------
    kernel_fn : a ``kernel_fn`` of :mod:`fastntk.stax`
    x : dask array of shape (N, d), float32 or float64: the training points
    centres : ndarray (or dask array) of shape (M, d): the Nyström centres, one chunk
    get : 'nngp' or 'ntk'
    dtype : None, np.float32 or np.float64: of the blocks K(chunk, centres) (None: as the inputs)
    store : bool, keyword-only
        Compute K_NM once, here, and keep its blocks (N·M·itemsize bytes of ``dtype``: float32
        halves them) where the scheduler keeps data, so that each product is only its matrix
        products; False: each product recomputes the blocks (memory: one block per running task).
    backend : 'auto' or a backend name

    Returns
    -------
    :class:`KernelBlocks` of K(x, centres) whose ``normal(v)`` is K_NMᵀ K_NM v and ``rmatmat(w)``
    K_NMᵀ w, (M, k) float64 ndarrays for v (M, k) and w (N, k) (``matmat(v)``: K_NM v, (N, k)).
    The per-point passes of x's chunks and of the centres are computed once, here, and kept by
    the scheduler; each product task then computes the block K(chunk, centres) of its chunk (or
    reads it, with ``store``) and its partial product, and drops the block; dask sums the partial
    products by tree reduction on the active scheduler (a ``dask.distributed.Client`` if one
    exists, else local threads).
    """
    centres = centres.rechunk(-1) if isinstance(centres, da.Array) else da.from_array(centres, chunks=-1)
    return KernelBlocks.of(kernel_fn, x, centres, get, dtype, backend=backend).persist(bool(store))


def falkon_products(op, rows, centers):
    """``solvers.falkon``'s products of a dask :class:`fastntk.solvers.KernelOperator` ``op`` (symmetric):
    :func:`nystrom_products` of its rows ``rows`` (None: all; a sorted index array otherwise) against
    the centres x[centers] (fetched to the client: M×d), the blocks recomputed at each product."""
    x = op.x1 if rows is None else op.x1[rows]
    centres = op.x1[centers]
    centres = centres.compute() if isinstance(centres, da.Array) else centres
    return nystrom_products(op.kernel_fn, x, np.asarray(centres), op.get, op.block_dtype)
