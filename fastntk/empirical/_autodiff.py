"""One block loop for the autodiff paths: the empirical NTK of torch modules and JAX functions.

A framework shim supplies the pieces that need autodiff; this loop owns the blocking, the memory
check, the reuse of x1's Jacobian on diagonal blocks and the contraction (BLAS, in NumPy):

* ``shim.x1``, ``shim.x2``: the inputs as framework arrays (``x2`` None: x1, the symmetric case);
* ``shim.n_out``, ``shim.n_params``: O and P, known before any pass over the data;
* ``shim.jacobian(x)``: per-sample Jacobians of a block of rows, a NumPy array (B, O, P);
* ``shim.ntvp(xa, xb)``: Θ̂(xa, xb) by NTK-vector products, a NumPy array (Ba, Bb, O, O).

Blocks are B rows (``block_rows`` or one (B, O, P) Jacobian within ``_tiles.JAC_BYTES``); the
working memory is O(B·O·P + B²·O²) besides the result.
"""

from __future__ import annotations

import numpy as np

from . import _memory

_DIAG = {"trace": "ijaa->ij", "diag": "ijaa->ija", "full": "ijab->ijab"}


def ntk(shim, mode, ntvp, block_rows, dtype):
    """Θ̂(x1, x2) as NumPy in ``mode``: 'trace' (N1, N2) summed over outputs, 'diag' (N1, N2, O), 'full'."""
    x1, sym = shim.x1, shim.x2 is None
    x2 = x1 if sym else shim.x2
    n1, n2, n_out, itemsize = x1.shape[0], x2.shape[0], shim.n_out, np.dtype(dtype).itemsize
    B = _memory.autodiff_rows(n1, n_out, shim.n_params, itemsize, block_rows)
    shape = _memory.result_shape(mode, n1, n2, n_out)
    work = (2 * B * n_out * shim.n_params + B * B * n_out * n_out) * itemsize  # Ji, Jj (or tangents), a block
    _memory.check(f"the {mode} empirical NTK", shape, dtype, work)
    out = np.empty(shape, dtype)
    for r0 in range(0, n1, B):
        rows = slice(r0, min(n1, r0 + B))
        Ji = None if ntvp else shim.jacobian(x1[rows])
        for c0 in range(0, n2, B):
            cols = slice(c0, min(n2, c0 + B))
            if ntvp:
                out[rows, cols] = np.einsum(_DIAG[mode], shim.ntvp(x1[rows], x2[cols]))
            else:
                Jj = Ji if sym and c0 == r0 else shim.jacobian(x2[cols])
                out[rows, cols] = _contract(Ji, Jj, mode)
    return out


def _contract(Ji, Jj, mode):
    """Σ_p Ji[i, a, p] Jj[j, b, p] as 'trace' (a = b summed), 'diag' (a = b kept) or 'full', by GEMMs."""
    (n1, n_out, n_p), n2 = Ji.shape, Jj.shape[0]
    if mode == "full":
        return (Ji.reshape(n1 * n_out, n_p) @ Jj.reshape(n2 * n_out, n_p).T).reshape(n1, n_out, n2, n_out) \
            .transpose(0, 2, 1, 3)
    per_out = np.matmul(Ji.transpose(1, 0, 2), Jj.transpose(1, 2, 0))  # (O, N1, N2)
    return per_out.sum(0) if mode == "trace" else per_out.transpose(1, 2, 0)
