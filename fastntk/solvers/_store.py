"""Kernels larger than RAM: K(x1, x2) block by block into .npy files, resumable; a stored kernel as an operator.

A store is a directory holding one ``<name>.npy`` per kernel ('nngp', 'ntk'), of shape (N1, N2),
written through a memory map (``numpy.lib.format.open_memmap``), and ``kernel_manifest.json``: what
is being computed (the inputs' shapes, dtypes and SHA-256, the network, ``get``, the dtype and the
block plan) and which blocks of the plan are finished.

Crash safety: a block is recorded as finished only after its entries have been flushed to the
files (``msync``), and the manifest is replaced atomically (a temporary file, ``fsync``, then
``os.replace``). Whatever stops a run (Ctrl-C, SIGKILL, a full disk, a power cut), the manifest
never claims a block the files do not hold, and a rerun with the same arguments computes only
the blocks that are not finished. A rerun with other inputs, another network, ``get``, dtype or
block plan is refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from .. import _tiles
from .._types import StoredKernels
from .._validation import check_get, check_integer, reserve_disk
from ._operator import KernelOperator

__all__ = ["MANIFEST", "StoredKernel", "store_kernels"]

#: The manifest's file name in a store directory, and the format its ``format`` entry names.
MANIFEST = "kernel_manifest.json"
_FORMAT = "fastntk kernel store 1"


def store_kernels(directory, kernel_fn, x1, x2=None, get=None, *, dtype=None, block_size=None, overwrite=False,
                  progress=False):
    """Compute K(x1, x2) block by block into ``directory/<name>.npy``, resuming an interrupted run.

    Parameters
    ----------
    directory : str or Path
        An existing, writable directory: the store (see the module docstring for its files).
    kernel_fn : a ``kernel_fn`` of :mod:`fastntk.stax`
        Its network spec identifies the kernel in the manifest.
    x1 : ndarray of shape (N1, d), float32 or float64
    x2 : ndarray of shape (N2, d) or None
        None: K(x1, x1), symmetric; only the tiles on and above the diagonal are computed, and each
        is written with its transpose, so the files hold the full, exactly symmetric matrix.
    get : None, 'nngp', 'ntk' or a tuple of them
        The kernels to store (None: both), all computed in one pass per block.
    dtype : None, np.float32 or np.float64, keyword-only
        Of the files; None: as the inputs (see ``kernel_fn``).
    block_size : int > 0 or None, keyword-only
        Side of the square blocks of the plan. None: the one recorded in the manifest when resuming,
        else blocks whose buffers (one per kernel, one for the Gram) take about 32 MiB together
        (``_tiles.BLOCK_BYTES``).
    overwrite : bool, keyword-only
        Start over: the manifest and the kernel files in ``directory`` are replaced (a kernel file
        of a name not in ``get`` is removed). CLI: ``--restart``.
    progress : bool, keyword-only
        A tqdm bar over blocks (the finished ones counted from the start).

    Returns
    -------
    StoredKernels
        ``paths`` (name -> Path of each .npy), ``manifest``, ``n_blocks``, ``computed`` (by this
        call). Open a stored kernel with ``np.load(path, mmap_mode='r')`` or :class:`StoredKernel`.

    Raises
    ------
    FileNotFoundError, NotADirectoryError, PermissionError
        ``directory`` is missing, not a directory or not writable (before any block is computed).
    ValueError
        The manifest in ``directory`` records other inputs, network, get, dtype or block plan; a
        kernel file there has another shape or dtype, is missing, or is not recorded in a manifest
        (pass ``overwrite=True``). Bad inputs (as ``kernel_fn``).
    OSError
        The disk cannot hold the files (their space is reserved before any block is computed).

    Notes
    -----
    Memory: the buffers of one block (``block_size``² entries per kernel, plus the fused pass's
    temporaries) and the per-point passes (O(N·depth)), whatever N: 21 MiB of anonymous memory
    for NNGP and NTK of N = 6000 (two 275 MiB files) at the default block size, measured
    (RssAnon). The files' dirty pages are flushed after every block, in a background thread
    that overlaps the next block's computation; a block is recorded only once flushed. Blocks are those of :meth:`KernelOperator.block` (each point's per-point
    pass computed once), so the stored entries equal ``kernel_fn``'s in-memory results to rounding
    (not bitwise: BLAS blocks a tile's Gram differently from a whole matrix's, and for x2 None
    ``kernel_fn`` takes the coincident points' norms from its Gram's diagonal), and a resumed run
    gives exactly the bits of an uninterrupted one.
    """
    names = check_get(get)
    directory = _check_directory(directory)
    if getattr(kernel_fn, "spec", None) is None:
        raise TypeError("kernel_fn must be a kernel_fn of fastntk.stax (its network spec identifies the stored "
                        f"kernel); got {type(kernel_fn).__name__}")
    block_size = check_integer(block_size, "block_size", allow_none=True)
    op = KernelOperator(kernel_fn, x1, x2, names[0], dtype=dtype)
    symmetric, (n1, n2), dtype = x2 is None, op.shape, op.block_dtype
    manifest = directory / MANIFEST
    record = None if overwrite else _read_manifest(manifest)
    if block_size is None:
        recorded = (record or {}).get("block_size")
        block_size = recorded if isinstance(recorded, int) and recorded > 0 else _tiles.square_side(
            dtype.itemsize * (len(names) + 1))
    identity = {"format": _FORMAT, "network": _network_id(kernel_fn.spec), "get": list(names), "dtype": dtype.name,
                "shape": [n1, n2], "symmetric": symmetric, "block_size": block_size, "x1": _fingerprint(op.x1),
                "x2": None if symmetric else _fingerprint(op.x2)}
    paths = {name: directory / f"{name}.npy" for name in names}
    if record is None:
        record = identity | {"finished": []}
        arrays = _create(paths, manifest, record, overwrite)
    else:
        _check_record(record, identity, directory)
        arrays = _reopen(paths, (n1, n2), dtype)
    tiles = _tiles.square_tiles(n1, n2, block_size, symmetric)
    todo = [t for t in range(len(tiles)) if not _contains(record["finished"], t)]
    _compute(op, names, arrays, tiles, todo, record, manifest, progress)
    return StoredKernels(paths, manifest, len(tiles), len(todo))


def _compute(op, names, arrays, tiles, todo, record, manifest, progress):
    """The tiles ``todo`` into ``arrays``; each is flushed to disk, then recorded in the manifest.

    The flush and manifest of tile t (one background thread) overlap the computation of tile t+1;
    at most one is in flight, so the dirty pages not yet on their way to disk are those of two
    tiles. On an exception the one in flight completes: the manifest stays consistent.
    """
    from tqdm.auto import tqdm

    if not todo:
        return
    rows = max(i1 - i0 for i0, i1, _, _ in tiles)
    cols = max(j1 - j0 for _, _, j0, j1 in tiles)
    buffers = {name: np.empty(rows * cols, op.block_dtype) for name in names}
    symmetric, pending = record["symmetric"], None
    bar = tqdm(total=len(tiles), initial=len(tiles) - len(todo), desc="kernel blocks", unit="block",
               disable=not progress)
    with bar, _Flusher(arrays) as flusher, ThreadPoolExecutor(1) as syncer:
        for t in todo:
            i0, i1, j0, j1 = tiles[t]
            blocks = {name: buf[:(i1 - i0) * (j1 - j0)].reshape(i1 - i0, j1 - j0) for name, buf in buffers.items()}
            op.block(slice(i0, i1), slice(j0, j1), out=blocks, get=names)
            if pending is not None:
                pending.result()  # tile t-1 on disk and recorded (or its error raised)
            for name, arr in arrays.items():
                if symmetric and i0 == j0:
                    op.backend.mirror_upper(blocks[name])  # a diagonal tile: exactly symmetric
                arr[i0:i1, j0:j1] = blocks[name]
                if symmetric and i0 != j0:
                    arr[j0:j1, i0:i1] = blocks[name].T
            pending = syncer.submit(_checkpoint, flusher, record, t, manifest)
            bar.update(1)
        pending.result()


def _checkpoint(flusher, record, t, manifest):
    """Tile t's entries to disk, then tile t in the manifest (in this order: a crash between the two
    only loses the record, and tile t is computed again)."""
    flusher.flush()
    record["finished"] = _insert(record["finished"], t)
    _write_manifest(manifest, record)


class _Flusher:
    """Writes the dirty pages of memory-mapped .npy files to disk.

    On Linux ``msync(MS_SYNC)`` of a shared file mapping is ``fdatasync`` of its range (mm/msync.c),
    and ``os.fdatasync`` releases the GIL, so a flush in a background thread overlaps computation;
    elsewhere the memmap's own ``flush`` (msync, holding the GIL).
    """

    def __init__(self, arrays):
        self.arrays = list(arrays.values())
        self.fds = []

    def __enter__(self):
        if sys.platform.startswith("linux"):
            self.fds = [os.open(arr.filename, os.O_RDWR) for arr in self.arrays]
        return self

    def __exit__(self, *exc):
        for fd in self.fds:
            os.close(fd)

    def flush(self):
        if self.fds:
            for fd in self.fds:
                os.fdatasync(fd)
        else:
            for arr in self.arrays:
                arr.flush()


class StoredKernel(KernelOperator):
    """A kernel stored in an .npy file as a :class:`KernelOperator`: products by row blocks of the memory map.

    Parameters
    ----------
    path : str or Path
        An .npy file of shape (N1, N2), float32 or float64: a kernel of :func:`store_kernels` (or of
        ``fastntk kernel``), whose manifest must record every block as finished, or any other .npy.
    block_size : int > 0 or None
        Rows of K per block of a product; None: about 32 MiB of rows.

    Notes
    -----
    ``K @ V`` and ``K.T @ V`` (V of shape (N2, M) or (N1, M)) read the file once, a row block at a
    time, in float64: extra memory one row block (in float64) and the result. The kernel is
    symmetric (``K.T @ V`` is ``K @ V``, :meth:`diagonal` defined) when its manifest says so.
    Usable wherever a LinearOperator is, e.g. ``predict.kernel_ridge(StoredKernel(p), y, reg,
    diag_reg_absolute_scale=True, solver='cg')`` and :func:`fastntk.solvers.cg`.
    """

    def __init__(self, path, block_size=None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path {str(path)!r} is not a file; expected an .npy kernel (e.g. from fastntk "
                                    "kernel --out DIR: DIR/ntk.npy)")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.ndim != 2 or array.dtype.type not in (np.float32, np.float64):
            raise ValueError(f"path {str(path)!r} holds an array of shape {array.shape} and dtype {array.dtype}; "
                             "expected a kernel of shape (N1, N2), float32 or float64")
        record = _read_manifest(path.parent / MANIFEST)
        symmetric = False
        if record is not None and path.stem in record.get("get", ()):
            total = len(_tiles.square_tiles(*record["shape"], record["block_size"], record["symmetric"]))
            done = sum(b - a for a, b in record["finished"])
            if done < total:
                raise ValueError(f"path {str(path)!r} is incomplete: {done} of {total} blocks are finished; finish it "
                                 "by running the same store_kernels call (or fastntk kernel command) again")
            symmetric = bool(record["symmetric"])
        self.path, self.array, self.symmetric, self.points = path, array, symmetric, None
        self.get = path.stem if path.stem in ("nngp", "ntk") else None
        self.block_size = check_integer(block_size, "block_size", allow_none=True)
        self.block_dtype = array.dtype
        super(KernelOperator, self).__init__(np.float64, array.shape)

    def block(self, rows=slice(None), cols=slice(None), out=None, *, get=None):
        """K[rows, cols] read from the file: a view of the memory map for slices (a copy for index
        arrays); written into ``out`` (an array of the block's shape) when given. ``get``: None (or
        this file's kernel, then a dict is returned, as :meth:`KernelOperator.block`)."""
        if get is not None and tuple(get) != (self.get,):
            raise ValueError(f"get={get!r}: {str(self.path)!r} holds the kernel {self.get!r} only")
        k = np.asarray(self.array[rows][:, cols])
        if out is not None:
            out[...] = k
            k = out
        return k if get is None else {self.get: k}

    def diagonal(self):
        """K(xᵢ, xᵢ) of a symmetric stored kernel: (N,), read from the file."""
        if not self.symmetric:
            raise ValueError(f"diagonal() is of a symmetric stored kernel; {str(self.path)!r} is not one (its "
                             "manifest says x2 was given, or it has none)")
        return np.diagonal(self.array).copy()


def _check_directory(directory):
    """``directory`` as a Path, or the error that says why no store can be written there."""
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"directory {str(path)!r} does not exist; create it first (the CLI creates it)")
    if not path.is_dir():
        raise NotADirectoryError(f"directory {str(path)!r} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"directory {str(path)!r} is not writable")
    return path


def _fingerprint(x):
    """Shape, dtype and SHA-256 of the bytes of a C-contiguous array, as the manifest records an input."""
    digest = hashlib.sha256()
    flat = x.reshape(-1).view(np.uint8)
    for i in range(0, flat.size, 2**24):  # 16 MiB at a time: no copy of x
        digest.update(flat[i:i + 2**24])
    return {"shape": list(x.shape), "dtype": x.dtype.name, "sha256": digest.hexdigest()}


def _network_id(layer_spec):
    """The network spec's repr without the memory addresses of its functions (they change per process)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(layer_spec))


def _read_manifest(path):
    """The manifest's record, or None when there is none."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not a manifest of {_FORMAT!r}; pass overwrite=True (fastntk kernel "
                         "--restart) to start over, or choose another directory")
    return record


def _write_manifest(path, record):
    """Replace the manifest atomically: a reader (or a rerun after a crash) sees the old or the new one.
    Without an fsync of the directory a power cut may bring back the old one, which claims fewer
    blocks: those are computed again."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_record(record, identity, directory):
    """ValueError naming what differs between the manifest's record and this call."""
    changed = [key for key in identity if record.get(key) != identity[key]]
    if not changed:
        return

    def show(key, value):
        if key in ("x1", "x2") and value is not None:
            return f"shape {tuple(value['shape'])} {value['dtype']} sha256 {value['sha256'][:12]}"
        return repr(value)

    diffs = "; ".join("network: another network spec than the one stored" if key == "network" else
                      f"{key}: stored {show(key, record.get(key))}, given {show(key, identity[key])}" for key in changed)
    raise ValueError(f"{str(directory)!r} holds kernels of other arguments ({diffs}); rerun with the arguments "
                     "it was started with, pass overwrite=True (fastntk kernel --restart) to start over, or choose "
                     "another directory")


def _create(paths, manifest, record, overwrite):
    """New .npy files of the record's shape and dtype with their disk space reserved, then the
    manifest ``record``; no file is left behind on failure. Refuses to replace files no manifest
    records unless ``overwrite``."""
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise ValueError(f"{', '.join(existing)} exist(s) and no manifest ({MANIFEST}) records how it was "
                         "computed; pass overwrite=True (fastntk kernel --restart) to replace it, or choose another "
                         "directory")
    manifest.unlink(missing_ok=True)  # first: no manifest may outlive the blocks it records
    for name in {"nngp", "ntk"} - set(paths):  # a kernel of the run started over, not asked for now
        (manifest.parent / f"{name}.npy").unlink(missing_ok=True)
    arrays = {}
    try:
        for name, path in paths.items():
            arrays[name] = open_memmap(path, mode="w+", dtype=np.dtype(record["dtype"]), shape=tuple(record["shape"]))
            reserve_disk(arrays[name], f"the {name} kernel")
        _write_manifest(manifest, record)
    except BaseException:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise
    return arrays


def _reopen(paths, shape, dtype):
    """The recorded .npy files, memory-mapped for writing; ValueError when one is missing or does not fit."""
    arrays = {}
    for name, path in paths.items():
        try:
            arr = open_memmap(path, mode="r+")
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"{str(path)!r}, recorded in the manifest, cannot be opened ({err}); pass overwrite=True "
                             "(fastntk kernel --restart) to start over") from None
        if arr.shape != shape or arr.dtype != dtype:
            raise ValueError(f"{str(path)!r} holds shape {arr.shape} and dtype {arr.dtype}; the manifest records "
                             f"{shape} {dtype.name}: pass overwrite=True (fastntk kernel --restart) to start over")
        reserve_disk(arr, f"the {name} kernel")
        arrays[name] = arr
    return arrays


def _contains(intervals, t):
    return any(a <= t < b for a, b in intervals)


def _insert(intervals, t):
    """The sorted, disjoint [start, stop) intervals of block indices, with block t added."""
    merged = []
    for a, b in sorted([*intervals, [t, t + 1]]):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged
