"""The memory model of the empirical NTK: result and work-space bytes, and the block sizes.

Every path estimates what it will hold (the result, plus the per-point features or Jacobian blocks)
and calls :func:`check` before any O(N) work, so that a kernel that cannot fit fails at once with
the bytes needed and the alternatives, not after minutes of forward passes.
"""

from __future__ import annotations

import math

import numpy as np

from .._tiles import JAC_BYTES, TILE_BYTES, rows_per_block
from .._validation import check_memory

ALTERNATIVES = ("trace_axes=(-1,) (the trace NTK, N1×N2), pseudo_ntk (one output's cost), smaller batches of "
                "x1 and x2, or implementation=3 (structured derivatives: no Jacobian is formed)")


def result_shape(mode, n1, n2, n_out):
    """Shape of a kernel computed in ``mode`` ('trace', 'diag' or 'full')."""
    return {"trace": (n1, n2), "diag": (n1, n2, n_out), "full": (n1, n2, n_out, n_out)}[mode]


def check(what, shape, dtype, work_bytes=0):
    """MemoryError before allocating a result of ``shape`` plus ``work_bytes`` of work space."""
    nbytes = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize + int(work_bytes)
    check_memory(nbytes, f"{what} of shape {tuple(shape)} ({np.dtype(dtype).name}, with its work space)",
                 ALTERNATIVES)


def tile_rows(n1, n2, mode, n_out, itemsize, sym, block_rows):
    """Rows per tile of the structured path: the scratch budget, and for x2=None at most ⌈N/8⌉
    (upper-triangle tiles then cost (nb + 1)/(2 nb) of the full square: 56 % for nb = 8 tiles)."""
    if block_rows:
        return block_rows
    T = rows_per_block(tile_bytes(1, n2, mode, n_out, itemsize), budget=TILE_BYTES, hi=n1)
    if sym and n1 > 128:
        T = min(T, max(64, -(-n1 // 8)))
    return int(T)


def tile_bytes(rows, n2, mode, n_out, itemsize):
    """Scratch of one structured tile: the accumulator, the A Gram and the G Gram."""
    return rows * n2 * (3 * {"trace": 1, "diag": n_out, "full": n_out * n_out}[mode] + 2) * itemsize


def autodiff_rows(n1, n_out, n_params, itemsize, block_rows):
    """Rows per block of the autodiff paths: one (B, O, P) Jacobian block within JAC_BYTES."""
    return block_rows or rows_per_block(n_out * n_params * itemsize, budget=JAC_BYTES, hi=n1)
