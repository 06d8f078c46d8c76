"""Infinite-width driver: NNGP/NTK of a network spec, block by block.

Cost model (DESIGN §2): the Gram matrix x1·x2ᵀ by BLAS, row block by row block, written
straight into a result buffer, then one fused pass of all layers over each row block
(the backend's ``tile``), which reads each Gram entry once and writes Σ and Θ once
whatever the depth. When x2 is None only the upper triangle is computed and then
mirrored. The two phases do not alternate per block: BLAS threads keep spinning after a
gemm and would share the cores with the OpenMP pass. The results are the only O(N1·N2)
allocations (with get='ntk' alone the Gram is held in the NTK buffer); the rest is
O(N·depth) per-point variances.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import _tiles
from ._validation import check_memory, reserve_disk
from .spec import Act, Dense, Identity, leaves

__all__ = ["infinite_kernels", "kernel_layers", "rho_tolerance"]


def rho_tolerance(d, dtype):
    """1 − ρ² below which the ReLU family takes θ = 0 or π (see ``_reference.rho_tolerance``)."""
    return 16.0 * np.sqrt(d) * np.finfo(dtype).eps


def kernel_layers(layer_spec):
    """The Dense and Act leaves of a spec in order (Identity dropped), checked for the recursion.

    The dual kernels need Gaussian pre-activations: every activation must follow a Dense layer.
    """
    layers, prev = [], "input"
    for leaf in leaves(layer_spec):
        if isinstance(leaf, Identity):
            continue
        if isinstance(leaf, Act) and prev != "dense":
            raise ValueError(
                f"unsupported layer order: activation {leaf.activation.name!r} follows {prev!r}; the dual kernels "
                "need Gaussian pre-activations, so every activation must follow a Dense layer"
            )
        prev = "dense" if isinstance(leaf, Dense) else leaf.activation.name
        layers.append(leaf)
    return layers


def _sq_norms(x):
    """x·x for every row, in float64. (N,)"""
    xd = x.astype(np.float64, copy=False)
    return np.einsum("ij,ij->i", xd, xd)


def _check_range(nngp, ntk, var, dtype):
    """OverflowError when Σ(x, x), Θ(x, x) or a variance inside the network is not finite in float64
    or the results exceed ``dtype``: every |Σ₁₂| ≤ √(Σ₁₁Σ₂₂) (and the same for Θ), so the diagonal
    bounds the whole kernel, and this runs before the O(N1·N2) pass."""
    big = np.finfo(dtype).max
    for name, values, limit in (("variance of a hidden layer", var, np.inf), ("NNGP Σ(x, x)", nngp, big),
                                ("NTK Θ(x, x)", ntk, big)):
        if values is None or not values.size:
            continue
        top = np.max(np.abs(values))
        if not np.isfinite(top) or top > limit:
            raise OverflowError(
                f"the {name} reaches {top:.3g}, beyond {np.dtype(dtype).name}'s range ({big:.3g}); the kernel "
                "cannot be represented: use dtype=np.float64, a smaller W_std, fewer layers or rescaled inputs")


@contextlib.contextmanager
def _progress(total, enabled):
    """A tqdm bar over rows when enabled, else an object whose update() does nothing."""
    if not enabled:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="kernel rows", unit="row") as bar:
        yield bar


class _NoBar:
    def update(self, n):
        pass


def infinite_kernels(x1, x2, layer_spec, get, dtype, backend, *, diagonal=False, out=None, block_rows=None,
                     progress=False):
    """Σ and/or Θ of the network ``layer_spec`` between the rows of x1 and x2.

    Parameters
    ----------
    x1 : ndarray of shape (N1, d), C-contiguous, of ``dtype``
    x2 : ndarray of shape (N2, d) or None (x2 = x1; the result is symmetric)
    layer_spec : a :mod:`fastntk.spec` node
    get : tuple of 'nngp' / 'ntk'
    dtype : numpy dtype of the results
    backend : the backend from ``fastntk._backend.select``
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

    Raises
    ------
    OverflowError
        A kernel value or a hidden variance exceeds the dtype's range (checked on the diagonal,
        which bounds every entry, before the O(N1·N2) work).
    """
    n1, d = x1.shape
    with_ntk = "ntk" in get
    plan = backend.plan(kernel_layers(layer_spec), d)
    if diagonal:
        k1, t1, var1 = backend.diagonal(plan, _sq_norms(x1), with_ntk)
        _check_range(k1, t1, var1, dtype)
        res = {"nngp": k1.astype(dtype), "ntk": t1.astype(dtype) if with_ntk else None}
        return {name: res[name] for name in get} | {"cov1": res["nngp"], "cov2": None}

    symmetric = x2 is None
    n2 = n1 if symmetric else x2.shape[0]
    out = dict(out or {})
    # Σ needs a buffer of its own only when it is returned or a Python-level layer reads
    # it; otherwise the Gram is written into the NTK buffer and the NNGP is discarded.
    sigma_name = "nngp" if ("nngp" in get or any(seg.ops is None for seg in plan)) else "ntk"
    names = tuple(dict.fromkeys((*get, sigma_name)))
    itemsize = np.dtype(dtype).itemsize
    check_memory(
        sum(n1 * n2 * itemsize for name in names if name not in out),
        f"kernel_fn with N1={n1}, N2={n2}, get={get}, dtype={np.dtype(dtype).name}",
        "out={name: np.memmap(...)} to write to disk, diagonal=True for Σ(x, x) and Θ(x, x) only, "
        "or blocks of x1 and x2",
    )
    # The per-point pass first (O(N·depth)): it bounds every entry, so an overflow is refused
    # before any O(N1·N2) work.
    diag1 = backend.diagonal(plan, _sq_norms(x1), True)
    diag2 = None if symmetric else backend.diagonal(plan, _sq_norms(x2), True)
    for diag in (diag1, diag2):
        if diag is not None:
            _check_range(*diag, dtype)
    for name, arr in out.items():
        reserve_disk(arr, f"out[{name!r}]")
    for name in names:
        if name not in out:
            out[name] = np.empty((n1, n2), dtype)
    rows = block_rows or _tiles.rows_per_block(n2 * itemsize, lo=16, hi=2048)
    blocks = _tiles.row_blocks(n1, rows, symmetric)
    with _progress(2 * n1, progress) as bar:
        # Two phases, not alternating per block: BLAS threads spin for a while after each
        # gemm and would take the cores from the OpenMP pass that follows it.
        backend.gram(x1, x2, out[sigma_name], blocks)
        bar.update(n1)
        if symmetric:  # x·x from the Gram itself, so coincident points see exactly Σ₁₂ = Σ₁₁ = Σ₂₂
            k1, _, var1 = backend.diagonal(plan, np.diagonal(out[sigma_name]).astype(np.float64), False)
            k2, var2 = k1, var1
        else:
            (k1, _, var1), (k2, _, var2) = diag1, diag2
        rho_tol = rho_tolerance(d, dtype)
        for i0, i1, c0 in blocks:
            sigma = out[sigma_name][i0:i1, c0:]
            nngp = out["nngp"][i0:i1, c0:] if "nngp" in out else None
            ntk = out["ntk"][i0:i1, c0:] if with_ntk else None
            backend.tile(plan, sigma, nngp, ntk, var1[:, i0:i1], var2[:, c0:], rho_tol)
            bar.update(i1 - i0)
    if symmetric:
        for name in get:
            backend.mirror_upper(out[name])
    res = {name: out[name] for name in get}
    res["cov1"] = k1.astype(dtype)
    res["cov2"] = None if symmetric else k2.astype(dtype)
    return res
