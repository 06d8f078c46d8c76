"""Infinite-width driver: NNGP/NTK of a network spec, block by block.

Cost model (DESIGN §2): one fused pass of all layers over each row block, which writes Σ and Θ
once whatever the depth, with the Gram x1·x2ᵀ computed inside it (the backend's ``gram_tile``:
a single-threaded BLAS gemm per cache-sized sub-tile, in each OpenMP thread, read back from
cache) where the backend's ``fusable`` allows; else the Gram by BLAS first, written straight
into a result buffer (one syrk of the triangle for a symmetric result of many features), then
the pass (``tile``) reading each entry once. When x2 is None only the upper triangle is
computed and then mirrored. The two phases do not alternate per block: BLAS threads keep
spinning after a gemm and would share the cores with the OpenMP pass. The results are the only O(N1·N2)
allocations (with get='ntk' alone the Gram of a network without branches is held in the NTK
buffer); the rest is O(N·depth) per-point variances.

A network with branches (FanOut ... FanIn) is a program over registers, one (Σ, Θ) per live
branch (:func:`kernel_program`): runs of fused layers on one register, copies (FanOut), merges
(FanIn) and Dropout's scaling. Both the per-point pass and the tile pass walk it; register 0
is the result buffer, the others are tile-sized temporaries. A network without branches is one
run, computed exactly as before. ``kernel_fn(Kernel)`` starts the program from that Kernel
(:class:`Start`) instead of the inputs' Gram.
"""

from __future__ import annotations

import contextlib
import functools
from typing import NamedTuple

import numpy as np

from . import _tiles, spec
from ._validation import check_memory, reserve_disk

__all__ = ["Combine", "Copy", "PerPoint", "Run", "Scale", "Start", "infinite_kernels", "kernel_program", "per_point",
           "rho_tolerance"]


def rho_tolerance(d, dtype):
    """1 − ρ² below which the ReLU family takes θ = 0 or π (see ``_reference.rho_tolerance``)."""
    return 16.0 * np.sqrt(d) * np.finfo(dtype).eps


class Run(NamedTuple):
    """Dense and Act ``layers`` in order on register ``reg``, whose width (fan in) is ``fan_in``;
    ``first``: the run starts from the inputs (Σ = x·x'/d, Θ = 0)."""

    reg: int
    layers: tuple
    fan_in: int | None
    first: bool


class Copy(NamedTuple):
    """FanOut: registers ``dsts`` receive copies of register ``src``."""

    src: int
    dsts: tuple


class Combine(NamedTuple):
    """A FanIn of registers ``regs`` into ``regs[0]``: ``kind`` 'sum', 'prod' or 'mean' (FanInConcat of
    the features: Σ = Σᵢ wᵢΣᵢ / Σᵢ wᵢ, the same for Θ, with ``weights`` wᵢ)."""

    kind: str
    regs: tuple
    weights: tuple | None


class Scale(NamedTuple):
    """Dropout in mode 'train' on register ``reg``: Σ(x, x) and Θ(x, x) times ``factor`` (Σ₁₂, Θ₁₂ of
    coincident inputs when x1 is x2)."""

    reg: int
    factor: float


class Start(NamedTuple):
    """Where the recursion starts: the inputs (``kernel`` None, ``width`` = d), or a Kernel's
    ``nngp``, ``ntk`` (or None), ``cov1``, ``cov2`` (None: symmetric) whose finite network has
    ``width`` features (None: unknown) and Gaussian pre-activations if ``is_gaussian``."""

    width: int | None
    kernel: object = None
    is_gaussian: bool = False
    x1_is_x2: bool = True


def kernel_program(layer_spec, start):
    """The kernel recursion of a spec as a step list over registers (Σ, Θ of one branch each).

    Returns ``(steps, n_regs, width, is_gaussian)``: :class:`Run`, :class:`Copy`, :class:`Combine`,
    :class:`Scale` in order; register 0 holds the result, of ``width`` features (None: unknown),
    Gaussian (a following activation may read it) if ``is_gaussian``. A network without branches
    is one Run.
    Refuses what neural-tangents 0.6.5 refuses: the dual kernels need Gaussian pre-activations,
    so an activation must follow a Dense layer (through Identity layers, Dropout in mode 'test'
    or a FanInSum of Gaussian branches), not the inputs, another activation, a FanInProd,
    a FanInConcat, a Flatten or a Dropout in mode 'train'; FanInSum needs Gaussian branches.
    """
    if spec.arity(layer_spec) != 1:
        raise ValueError("the network ends in several branches; merge them with FanInSum, FanInProd or "
                         "FanInConcat for its kernels")
    steps, free, n_regs = [], [], 1
    # per branch: [register, width, Gaussian?, name of its last layer]
    branches = [[0, start.width, start.is_gaussian, "input" if start.kernel is None else "kernel"]]
    run, first = None, start.kernel is None  # the Run being built; the input op still to apply

    def flush():
        nonlocal run, first
        if run is not None:
            steps.append(Run(run[0], tuple(run[1]), run[2], run[3]))
        elif first:
            steps.append(Run(0, (), start.width, True))
        run, first = None, False

    for leaf, (r, m) in zip(spec.leaves(layer_spec), spec.places(layer_spec)):
        b = branches[r]
        if isinstance(leaf, (spec.Dense, spec.Act)):
            if isinstance(leaf, spec.Act) and not b[2]:
                raise ValueError(
                    f"unsupported layer order: activation {leaf.activation.name!r} follows {b[3]!r}; the dual kernels "
                    "need Gaussian pre-activations (as in neural-tangents), so an activation must follow a Dense "
                    "layer, or a FanInSum of branches that end in one")
            if isinstance(leaf, spec.Dense) and leaf.parameterization == "standard" and b[1] is None:
                raise ValueError("a Dense layer in the 'standard' parameterization needs the width of its input; "
                                 "the Kernel given as input does not carry it (shape1)")
            if run is not None and run[0] != b[0]:
                flush()
            if run is None:
                run, first = (b[0], [], b[1], first), False
            run[1].append(leaf)
            b[1:] = ([leaf.width, True, "dense"] if isinstance(leaf, spec.Dense)
                     else [b[1], False, leaf.activation.name])
            continue
        if isinstance(leaf, spec.Identity) or (isinstance(leaf, spec.Dropout) and leaf.mode == "test"):
            continue
        if isinstance(leaf, spec.Flatten):  # (N, d) kernels are unchanged, but no longer Gaussian (neural-tangents)
            b[2:] = [False, "flatten"]
            continue
        flush()
        if isinstance(leaf, spec.Dropout):
            steps.append(Scale(b[0], 1.0 / leaf.rate))
            b[2:] = [False, "dropout"]
        elif isinstance(leaf, spec.FanOut):
            dsts = []
            for _ in range(leaf.num - 1):
                dsts.append(free.pop() if free else n_regs)
                n_regs = max(n_regs, dsts[-1] + 1)
            steps.append(Copy(b[0], tuple(dsts)))
            branches[r:r + 1] = [b] + [[reg, *b[1:]] for reg in dsts]
        else:
            ins = branches[r:r + m]
            widths = [x[1] for x in ins]
            name = type(leaf).__name__
            if isinstance(leaf, spec.FanInConcat):
                if leaf.axis % 2 != 1:
                    raise ValueError(f"FanInConcat(axis={leaf.axis}) concatenates along the batch axis of (N, d) "
                                     "inputs, which has no kernel of shape (N1, N2); use axis=-1 (the features)")
                kind, weights = "mean", (None if None in widths else tuple(
                    [1] * m if all(w == widths[0] for w in widths) else widths))
                if weights is None and m > 1:
                    raise ValueError("FanInConcat of branches of unknown widths (after a Kernel input without "
                                     "shape1): the kernel's weights are the widths")
                out = [None if None in widths else sum(widths), False, "fanin_concat"]
            else:
                if len(set(widths)) > 1 and None not in widths:
                    raise ValueError(f"{name} needs branches of one width; got widths {widths}")
                if isinstance(leaf, spec.FanInSum):
                    if m > 1 and not all(x[2] for x in ins):
                        raise ValueError(
                            f"FanInSum needs Gaussian branches (as in neural-tangents): every branch must end in a "
                            f"Dense layer or pass one through; got branches ending in {[x[3] for x in ins]}")
                    kind, out = "sum", [widths[0], all(x[2] for x in ins), "fanin_sum"]
                else:
                    kind, out = "prod", [widths[0], m == 1 and ins[0][2], "fanin_prod"]
                weights = None
            if m > 1:
                steps.append(Combine(kind, tuple(x[0] for x in ins), weights))
            free.extend(x[0] for x in ins[1:])
            branches[r:r + m] = [[ins[0][0], *out]]
    flush()
    return steps, n_regs, branches[0][1], branches[0][2]


@functools.lru_cache(maxsize=64)
def _cached_program(layer_spec, start):
    return kernel_program(layer_spec, start)


def _program(layer_spec, start):
    """kernel_program(layer_spec, start), cached for the inputs' start (specs are frozen; a spec
    holding something unhashable, e.g. a user's activation parameters, is compiled each call)."""
    if start.kernel is None:
        try:
            return _cached_program(layer_spec, start)
        except TypeError:
            pass
    return kernel_program(layer_spec, start)


class PerPoint(NamedTuple):
    """The per-point pass of inputs x (N, d): Σ(x, x) ``nngp`` (N,), Θ(x, x) ``ntk`` (N,) and the variance
    entering each activation ``var`` (n_act, N), float64. Computed once (:func:`per_point`) and reused by
    every block against the same points (``infinite_kernels(..., points=)``); ``take`` selects points."""

    nngp: np.ndarray
    ntk: np.ndarray
    var: np.ndarray

    def take(self, index):
        """The per-point pass of the points ``index`` (a slice or an index array) of these."""
        if isinstance(index, slice):
            return PerPoint(self.nngp[index], self.ntk[index], self.var[:, index])
        return PerPoint(*(np.take(a, index, axis=-1) for a in self))


def per_point(x, layer_spec, backend):
    """:class:`PerPoint` of inputs x (N, d) through the network ``layer_spec``: O(N·depth) work."""
    d = x.shape[1]
    steps, n_regs, _, _ = _program(layer_spec, Start(d))
    return PerPoint(*backend.diagonal(_plan(backend, steps, n_regs, d, len(steps) != 1), _sq_norms(x), True))


def _plan(backend, steps, n_regs, d, branched):
    """The backend's compiled kernel program: a Program of the steps when ``branched``, else the one
    Run's Segments for d inputs."""
    return backend.program(steps, n_regs) if branched else backend.plan(steps[0].layers, d)


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
def _progress(total, enabled, unit="row"):
    """A tqdm bar over ``total`` rows (or other units) when enabled, else an object whose update() does nothing."""
    if not enabled:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=f"kernel {unit}s", unit=unit) as bar:
        yield bar


class _NoBar:
    def update(self, n):
        pass


def infinite_kernels(x1, x2, layer_spec, get, dtype, backend, *, diagonal=False, out=None, block_rows=None,
                     progress=False, start=None, points=None):
    """Σ and/or Θ of the network ``layer_spec`` between the rows of x1 and x2.

    Parameters
    ----------
    x1 : ndarray of shape (N1, d), C-contiguous, of ``dtype`` (unused with ``start``)
    x2 : ndarray of shape (N2, d) or None (x2 = x1; the result is symmetric)
    layer_spec : a :mod:`fastntk.spec` node
    get : tuple of 'nngp' / 'ntk'
    dtype : numpy dtype of the results
    backend : the backend from ``fastntk._backend.select``
    diagonal : bool
        Only Σ(x1ᵢ, x1ᵢ), Θ(x1ᵢ, x1ᵢ): shape (N1,), O(N1) work. Requires x2 None.
    out : dict name -> preallocated array of shape (N1, N2) and ``dtype``, or None
        An np.memmap is flushed to its file (msync) after the Gram phase (when the Gram is not
        computed inside the pass), after each block of the fused pass and after the mirror.
    block_rows : int or None
        Rows of x1 per tile; default from a 32 MiB budget per result block.
    progress : bool
        Show a tqdm progress bar over rows.
    start : :class:`Start` or None
        Continue another network's kernels (``start.kernel``: nngp (N1, N2), ntk or None, cov1
        (N1,), cov2 (N2,) or None when symmetric) instead of starting from x1, x2.
    points : (:class:`PerPoint` of x1, :class:`PerPoint` of x2) or None
        The per-point passes of x1 and x2 computed before (:func:`per_point`), for a block of a
        larger kernel: not recomputed here. Only with x2 given and no ``start``.

    Returns
    -------
    results : dict name -> ndarray, plus 'cov1' (N1,) and 'cov2' (N2,) or None: the NNGP
        of each point with itself, and 'width' (the features of the last layer, None if unknown)
        and 'is_gaussian' (whether a following activation may read the result).

    Raises
    ------
    OverflowError
        A kernel value or a hidden variance exceeds the dtype's range (checked on the diagonal,
        which bounds every entry, before the O(N1·N2) work).
    """
    kernel = None if start is None else start.kernel
    if kernel is None:
        (n1, d), symmetric = x1.shape, x2 is None
        n2 = n1 if symmetric else x2.shape[0]
        start = Start(d, None, False, symmetric or _same(x1, x2))
    else:
        (n1, n2), symmetric, d = np.shape(kernel.nngp), kernel.cov2 is None, start.width or 1
    with_ntk = "ntk" in get
    if kernel is not None and with_ntk and kernel.ntk is None:
        raise ValueError("get asks for 'ntk' but the Kernel given as input holds no NTK; compute it with "
                         "get=('nngp', 'ntk') (or get=None)")
    steps, n_regs, width, is_gaussian = _program(layer_spec, start)
    meta = {"width": width, "is_gaussian": is_gaussian}
    branched = kernel is not None or len(steps) != 1
    plan = _plan(backend, steps, n_regs, d, branched)

    def point_pass(x, cov):
        """The per-point pass of inputs x (or of a Kernel's variances cov)."""
        if kernel is None:
            return backend.diagonal(plan, _sq_norms(x), True)
        # Θ(x, x) of a Kernel: its diagonal when symmetric, else unknown (only the bound checks read it)
        t0 = np.diagonal(kernel.ntk) if symmetric and kernel.ntk is not None else None
        return backend.diagonal(plan, np.asarray(cov, dtype=np.float64), t0 is not None, t0)

    if diagonal:
        k1, t1, var1 = point_pass(x1, None if kernel is None else kernel.cov1)
        if with_ntk and t1 is None:
            raise ValueError("get asks for 'ntk' but the Kernel given as input holds no NTK")
        _check_range(k1, t1, var1, dtype)
        res = {"nngp": backend.from_host(k1.astype(dtype)),
               "ntk": backend.from_host(t1.astype(dtype)) if with_ntk else None}
        return {name: res[name] for name in get} | {"cov1": res["nngp"], "cov2": None, "x1_is_x2": True} | meta

    out = dict(out or {})
    # Σ needs a buffer of its own only when it is returned or a Python-level layer or a branch
    # reads it; otherwise the Gram is written into the NTK buffer and the NNGP is discarded.
    sigma_name = "nngp" if ("nngp" in get or branched or any(seg.ops is None for seg in plan)) else "ntk"
    names = tuple(dict.fromkeys((*get, sigma_name)))
    itemsize = np.dtype(dtype).itemsize
    check_memory(
        sum(n1 * n2 * itemsize for name in names if name not in out),
        f"kernel_fn with N1={n1}, N2={n2}, get={get}, dtype={np.dtype(dtype).name}",
        "solvers.store_kernels(directory, kernel_fn, x) or `fastntk kernel` to write it to disk block by block "
        "(resumable), out={name: np.memmap(...)}, solvers.KernelOperator for products K @ V without the "
        "matrix (kernel_ridge(..., solver='cg' or 'falkon')), diagonal=True for Σ(x, x) and Θ(x, x) only, "
        "or blocks of x1 and x2",
        backend.available_memory,
    )
    # The per-point pass first (O(N·depth)): it bounds every entry, so an overflow is refused
    # before any O(N1·N2) work.
    if points is not None:
        diag1, diag2 = points
    else:
        diag1 = point_pass(x1, None if kernel is None else kernel.cov1)
        diag2 = None if symmetric else point_pass(x2, None if kernel is None else kernel.cov2)
    for diag in (diag1, diag2):
        if diag is not None:
            _check_range(*diag, dtype)
    for name, arr in out.items():
        reserve_disk(arr, f"out[{name!r}]")
    for name in names:
        if name not in out:
            out[name] = backend.xp.empty((n1, n2), dtype)
    rows = block_rows or _tiles.rows_per_block(n2 * itemsize * (1 + (n_regs - 1) * (1 + with_ntk)), lo=16, hi=2048)
    blocks = _tiles.row_blocks(n1, rows, symmetric)
    scaled = any(isinstance(st, Scale) for st in steps) and start.x1_is_x2
    # The Gram inside the fused pass where the plan allows (one sub-tile at a time, read from
    # cache); else in a phase of its own first: not alternating with the pass per block, as BLAS
    # threads spin for a while after each gemm and would take the cores from the OpenMP pass.
    fused = kernel is None and backend.fusable(plan, d, symmetric)
    with _progress((1 if fused else 2) * n1, progress) as bar:
        if kernel is None and not fused:
            backend.gram(x1, x2, out[sigma_name], blocks)
        elif kernel is not None:
            for i0, i1, c0 in blocks:
                out["nngp"][i0:i1, c0:] = kernel.nngp[i0:i1, c0:]
                if with_ntk:
                    out["ntk"][i0:i1, c0:] = kernel.ntk[i0:i1, c0:]
        if not fused:
            bar.update(n1)
            _flush(out)
        self_gram = None
        if symmetric and kernel is None:  # x·x as the Gram holds it, so coincident points see exactly Σ₁₂ = Σ₁₁ = Σ₂₂
            self_gram = (_sq_norms(x1).astype(dtype).astype(np.float64) if fused
                         else np.diagonal(out[sigma_name]).astype(np.float64))
            k1, _, var1 = backend.diagonal(plan, self_gram, False)
            k2, var2 = k1, var1
        elif symmetric:
            (k1, _, var1), (k2, var2) = diag1, (diag1[0], diag1[2])
        else:
            (k1, _, var1), (k2, _, var2) = diag1, diag2
        rho_tol = rho_tolerance(d, dtype)
        for i0, i1, c0 in blocks:
            sigma = out[sigma_name][i0:i1, c0:]
            nngp = out["nngp"][i0:i1, c0:] if "nngp" in out else None
            ntk = out["ntk"][i0:i1, c0:] if with_ntk else None
            if fused:
                backend.gram_tile(plan, x1[i0:i1], (x1 if symmetric else x2)[c0:], nngp, ntk, var1[:, i0:i1],
                                  var2[:, c0:], rho_tol, None if self_gram is None else self_gram[i0:i1])
            elif branched:
                backend.tile(plan, sigma, nngp, ntk, var1[:, i0:i1], var2[:, c0:], rho_tol,
                             i0 - c0 if scaled else None)
            else:
                backend.tile(plan, sigma, nngp, ntk, var1[:, i0:i1], var2[:, c0:], rho_tol)
            _flush(out)
            bar.update(i1 - i0)
    if symmetric:
        for name in get:
            backend.mirror_upper(out[name])
        _flush(out)
    res = {name: out[name] for name in get}
    res["cov1"] = backend.from_host(k1.astype(dtype))
    res["cov2"] = None if symmetric else backend.from_host(k2.astype(dtype))
    return res | meta | {"x1_is_x2": start.x1_is_x2}


def _flush(out):
    """Write the dirty pages of the np.memmap results to their files (msync), as blocks complete."""
    for arr in out.values():
        if isinstance(arr, np.memmap):
            arr.flush()


def _same(x1, x2):
    """neural-tangents' x1_is_x2: equal shapes and every |x1 − x2| < 1e-12 (Dropout reads it)."""
    return x1.shape == x2.shape and bool(np.all(np.abs(x1 - x2) < 1e-12))
