"""Gram driver: infinite-width NNGP/NTK of a network spec, tile by tile.

Cost model (DESIGN §2): the Gram matrix x1·x2ᵀ by BLAS gemm, row block by row block,
written straight into a result buffer, then one fused pass of all layers over each row
block (``fastntk._core.fc_tile``), which reads each Gram entry once and writes Σ and Θ
once whatever the depth. When x2 is None only the upper triangle is computed and then
mirrored. The two phases do not alternate per block: BLAS threads keep spinning after a
gemm and would share the cores with the OpenMP pass. The results are the only O(N1·N2)
allocations (with get='ntk' alone the Gram is held in the NTK buffer); the rest is
O(N·depth) per-point variances.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg.blas

from . import _backend
from ._validation import check_memory

__all__ = ["infinite_kernels", "rho_tolerance"]


#: Op kinds of fastntk._core (cpp/include/fastntk/fc.hpp, OpKind), as the module exports them.
_OP = _backend.OP_KINDS
_OP_ACTIVATION = {name: _OP[name] for name in ("abrelu", "erf", "sin", "gelu")}

#: Bytes of one row block of one result; rows = this / (N2 · itemsize), within [16, 2048].
_BLOCK_BYTES = 32 * 2**20


def rho_tolerance(d, dtype):
    """1 − ρ² below which the ReLU family takes θ = 0 or π (see ``_reference.rho_tolerance``)."""
    return 16.0 * np.sqrt(d) * np.finfo(dtype).eps


def _segments(layers, d):
    """Split a network spec into runs the compiled kernel handles and Python-level layers.

    Returns a list of ``("ops", ops, n_act)`` (ops: float64 (n_ops, 5) rows for _core,
    n_act: activations among them) and ``("layer", layer, 1)`` entries, in network order.
    The first run starts with the input op Σ = x·x'/d, Θ = 0.
    """
    segments, ops = [], [[_OP["input"], 1.0 / d, 0.0, 0.0, 0.0]]
    fan_in = d

    def flush():
        if ops:
            arr = np.array(ops, dtype=np.float64)
            segments.append(("ops", arr, int(np.isin(arr[:, 0], list(_OP_ACTIVATION.values())).sum())))
            ops.clear()

    for layer in layers:
        kind = layer[0]
        if kind == "dense":
            _, W_std, b_std, parameterization, out_dim = layer
            b2 = 0.0 if b_std is None else b_std**2
            if parameterization == "ntk":
                ops.append([_OP["dense_ntk"], W_std**2, b2, 0.0, 0.0])
            else:
                ops.append([_OP["dense_standard"], W_std**2, b2, fan_in, 0.0 if b_std is None else 1.0])
            fan_in = out_dim
        elif kind in _OP_ACTIVATION:
            ops.append([_OP_ACTIVATION[kind], *layer[1:], *[0.0] * (5 - len(layer))])
        else:
            flush()
            segments.append(("layer", layer, 1))
    flush()
    return segments


def _sq_norms(x):
    """x·x for every row, in float64. (N,)"""
    xd = x.astype(np.float64, copy=False)
    return np.einsum("ij,ij->i", xd, xd)


def _diagonal_pass(sq_norms, segments, with_ntk):
    """Σ(x, x), Θ(x, x) for every point, and the variance entering each activation.

    sq_norms : (N,) float64, x·x. Returns ``(nngp, ntk, var)``: float64 arrays of shapes
    (N,), (N,) or None, (n_act, N).
    """
    n = sq_norms.shape[0]
    k = sq_norms.copy()
    t = np.zeros(n) if with_ntk else None
    n_act = sum(seg[2] for seg in segments)
    var = np.empty((n_act, n))
    a = 0
    for kind, payload, n_seg in segments:
        if kind == "ops":
            _backend.fc_diagonal(k, t, var[a : a + n_seg], payload)
        else:
            var[a] = k
            _backend.layer_diagonal(payload, k, t)
        a += n_seg
    return k, t, var


def _row_blocks(n1, rows, symmetric):
    """(i0, i1, c0) of each row block; c0 = i0 for the upper triangle of a symmetric result."""
    return [(i0, min(n1, i0 + rows), i0 if symmetric else 0) for i0 in range(0, n1, rows)]


def _gram(x1, x2, sigma, blocks):
    """sigma = x1·x2ᵀ in place (upper triangle only when x2 is None), by BLAS.

    x2 None and sigma C-contiguous: one syrk into sigma's memory (OpenBLAS's syrk is
    faster than gemm on row blocks of the triangle: 1.0 vs 1.3 CPU-s at N=8000, d=784).
    Otherwise gemm on each row block ``sigma[i0:i1, c0:]``.
    """
    if x2 is None and sigma.flags.c_contiguous:
        syrk = scipy.linalg.blas.dsyrk if x1.dtype == np.float64 else scipy.linalg.blas.ssyrk
        # sigma.T is Fortran-ordered; its lower triangle is sigma's upper one.
        if np.shares_memory(syrk(1.0, x1.T, beta=0.0, c=sigma.T, trans=1, lower=1, overwrite_c=1), sigma):
            # The row blocks' diagonal squares reach below the diagonal: fill those
            # entries too, so no layer reads uninitialised memory.
            for i0, i1, _ in blocks:
                square = sigma[i0:i1, i0:i1]
                lower = np.tril_indices(i1 - i0, -1)
                square[lower] = square.T[lower]
            return
    for i0, i1, c0 in blocks:
        np.matmul(x1[i0:i1], (x1 if x2 is None else x2)[c0:].T, out=sigma[i0:i1, c0:])


def _block_rows(n2, itemsize, block_rows):
    if block_rows is not None:
        return int(block_rows)
    return int(min(2048, max(16, _BLOCK_BYTES // max(1, n2 * itemsize))))


def infinite_kernels(x1, x2, layers, get, dtype, *, diagonal=False, out=None, block_rows=None, progress=False):
    """Σ and/or Θ of the network ``layers`` between the rows of x1 and x2.

    Parameters
    ----------
    x1 : ndarray of shape (N1, d), C-contiguous, of ``dtype``
    x2 : ndarray of shape (N2, d) or None (x2 = x1; the result is symmetric)
    layers : tuple of layer tuples (network spec, see ``fastntk._reference``)
    get : tuple of 'nngp' / 'ntk'
    dtype : numpy dtype of the results
    diagonal : bool
        Only Σ(x1ᵢ, x1ᵢ), Θ(x1ᵢ, x1ᵢ): shape (N1,), O(N1) work. Requires x2 None.
    out : dict name -> preallocated array of shape (N1, N2) and ``dtype``, or None
    block_rows : int or None
        Rows of x1 per tile; default from a 32 MiB budget per result block.
    progress : bool
        Show a tqdm progress bar over rows.

    Returns
    -------
    results : dict name -> ndarray, plus 'cov1' (N1,) and 'cov2' (N2,) or None: the NNGP
        of each point with itself.
    """
    n1, d = x1.shape
    with_ntk = "ntk" in get
    segments = _segments(layers, d)
    if diagonal:
        k1, t1, _ = _diagonal_pass(_sq_norms(x1), segments, with_ntk)
        res = {"nngp": k1.astype(dtype), "ntk": t1.astype(dtype) if with_ntk else None}
        return {name: res[name] for name in get} | {"cov1": res["nngp"], "cov2": None}

    symmetric = x2 is None
    n2 = n1 if symmetric else x2.shape[0]
    out = dict(out or {})
    # Σ needs a buffer of its own only when it is returned or a Python-level layer reads
    # it; otherwise the Gram is written into the NTK buffer and the NNGP is discarded.
    sigma_name = "nngp" if ("nngp" in get or any(seg[0] == "layer" for seg in segments)) else "ntk"
    names = tuple(dict.fromkeys((*get, sigma_name)))
    itemsize = np.dtype(dtype).itemsize
    check_memory(
        sum(n1 * n2 * itemsize for name in names if name not in out),
        f"kernel_fn with N1={n1}, N2={n2}, get={get}, dtype={np.dtype(dtype).name}",
        "out={name: np.memmap(...)} to write to disk, diagonal=True for Σ(x, x) and Θ(x, x) only, "
        "or blocks of x1 and x2",
    )
    for name in names:
        if name not in out:
            out[name] = np.empty((n1, n2), dtype)
    blocks = _row_blocks(n1, _block_rows(n2, itemsize, block_rows), symmetric)
    with _backend.progress_bar(2 * n1, progress) as bar:
        # Two phases, not alternating per block: BLAS threads spin for a while after each
        # gemm and would take the cores from the OpenMP pass that follows it.
        _gram(x1, x2, out[sigma_name], blocks)
        bar.update(n1)
        # x·x from the Gram itself when x2 is None, so coincident points see exactly
        # Σ₁₂ = Σ₁₁ = Σ₂₂ (θ = 0 for the ReLU family).
        sq1 = np.diagonal(out[sigma_name]).astype(np.float64) if symmetric else _sq_norms(x1)
        k1, _, var1 = _diagonal_pass(sq1, segments, False)
        k2, var2 = (k1, var1) if symmetric else _diagonal_pass(_sq_norms(x2), segments, False)[::2]
        rho_tol = rho_tolerance(d, dtype)
        for i0, i1, c0 in blocks:
            sigma = out[sigma_name][i0:i1, c0:]
            nngp = out["nngp"][i0:i1, c0:] if "nngp" in out else None
            ntk = out["ntk"][i0:i1, c0:] if with_ntk else None
            a = 0
            for kind, payload, n_seg in segments:
                v1, v2 = var1[a : a + n_seg, i0:i1], var2[a : a + n_seg, c0:]
                if kind == "ops":
                    _backend.fc_tile(sigma, nngp, ntk, v1, v2, payload, rho_tol)
                else:
                    _backend.layer_tile(payload, nngp, ntk, v1[0], v2[0])
                sigma = nngp
                a += n_seg
            bar.update(i1 - i0)
    if symmetric:
        for name in get:
            _backend.mirror_upper(out[name])
    res = {name: out[name] for name in get}
    res["cov1"] = k1.astype(dtype)
    res["cov2"] = None if symmetric else k2.astype(dtype)
    return res
