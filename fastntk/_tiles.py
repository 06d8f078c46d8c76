"""Block plans and the one per-block byte model every driver uses.

A driver walks a result of N1 rows in row blocks ``(i0, i1, c0)``: rows i0:i1 against
columns c0: (c0 = i0 for the upper triangle of a symmetric result). How many rows a block
holds follows from the bytes one row of the block costs and a budget.
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import check_out_array, reserve_disk

__all__ = ["BLOCK_BYTES", "JAC_BYTES", "TILE_BYTES", "fill_rows", "row_blocks", "rows_per_block", "square_side",
           "square_tiles"]

#: Budgets (bytes) of one block, by driver. The infinite-width pass streams a result block
#: through the cache-sized fused pass; the structured empirical NTK holds an accumulator and
#: two Grams per tile (bigger tiles, faster GEMMs); the autodiff paths one (B, O, P) Jacobian.
BLOCK_BYTES = 32 * 2**20
TILE_BYTES = 256 * 2**20
JAC_BYTES = 512 * 2**20


def rows_per_block(bytes_per_row, *, budget=BLOCK_BYTES, lo=1, hi=None):
    """Rows of a block whose rows cost ``bytes_per_row`` each, within the budget and [lo, hi]."""
    rows = max(lo, budget // max(1, int(bytes_per_row)))
    return int(rows if hi is None else min(hi, rows))


def row_blocks(n1, rows, symmetric):
    """(i0, i1, c0) of each row block; c0 = i0 for the upper triangle of a symmetric result."""
    return [(i0, min(n1, i0 + rows), i0 if symmetric else 0) for i0 in range(0, n1, rows)]


def square_side(bytes_per_entry, *, budget=BLOCK_BYTES):
    """Side of a square block whose entries cost ``bytes_per_entry`` each, within the budget (>= 1)."""
    return max(1, math.isqrt(budget // max(1, int(bytes_per_entry))))


def square_tiles(n1, n2, side, symmetric):
    """(i0, i1, j0, j1) of each ``side``-sized tile of an (n1, n2) result, row by row; only the tiles
    on and above the diagonal (j0 >= i0) for a symmetric result, whose others are their transposes."""
    return [(i0, min(n1, i0 + side), j0, min(n2, j0 + side)) for i0 in range(0, n1, side)
            for j0 in range(i0 if symmetric else 0, n2, side)]


def fill_rows(x, n_cols, dtype, bytes_per_row, fill, out=None):
    """The (N, n_cols) result of a row-wise map of x (N, ...), filled block by block of rows.

    ``fill(x_block, out_block)`` writes the rows of one block; a block holds as many rows as the
    budget allows at ``bytes_per_row`` of working memory each. ``out``: None (a new array) or a
    writeable (N, n_cols) array of ``dtype`` with contiguous rows, checked before any block; a
    file-backed np.memmap has its disk space reserved first and its dirty pages written to its
    file (msync) as each block completes, so a result larger than RAM needs only a block's memory.
    """
    shape = (x.shape[0], n_cols)
    if out is None:
        out = np.empty(shape, dtype)
    else:
        check_out_array(out, "out", shape, np.dtype(dtype))
        if np.shares_memory(out, x):
            raise ValueError("out shares memory with x; the map reads x while it writes out")
        reserve_disk(out, "out")
    for i0, i1, _ in row_blocks(x.shape[0], rows_per_block(bytes_per_row, budget=BLOCK_BYTES), False):
        fill(x[i0:i1], out[i0:i1])
        if isinstance(out, np.memmap):
            out.flush()
    return out
