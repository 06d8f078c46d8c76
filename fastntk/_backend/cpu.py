"""The CPU backend: BLAS Grams, the C++ fused pass, Numba quadrature, NumPy user duals.

A network's kernel rule is compiled once per call into a *plan*: runs of layers that the
C++ module ``fastntk._core`` evaluates in one fused pass (Dense layers and closed-form
activations, as float64 op rows whose codes the module exports), and single layers whose
dual kernels are Python functions (Numba Gauss–Hermite quadrature, or the user's NumPy
functions). Every method works in place on arrays the driver allocated and validated.
"""

from __future__ import annotations

import math
import os
import sys
from typing import NamedTuple

import numpy as np
import scipy.linalg.blas

from .._blas import GEMM, one_blas_thread
from .. import _validation
from ..activations import (
    ABReluDual,
    ErfDual,
    ExpDual,
    ExpNormalizedDual,
    GaborDual,
    GaussianDual,
    GeluDual,
    GivenDual,
    HermiteDual,
    MonomialDual,
    PolynomialDual,
    QuadratureDual,
    RbfDual,
    RectifiedMonomialDual,
    SignDual,
    SinDual,
)
from ..infinite import Combine, Copy, Run, Scale
from ..spec import Dense

try:
    from fastntk import _core
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        "fastntk's compiled module fastntk._core is missing; reinstall with `pip install .` "
        "from a source checkout (it needs a C++17 compiler and CMake)"
    ) from e

__all__ = ["BACKEND", "OP_KINDS", "CpuBackend", "Program", "Segment", "get_num_threads", "set_num_threads"]

#: Op codes of the compiled fused pass by name ("input", "dense_ntk", ..., "gelu").
OP_KINDS = dict(_core.op_kinds)

#: Closed-form dual rules -> (op name, the op's parameters).
_CLOSED_FORM_OPS = {
    ABReluDual: lambda r: ("abrelu", (r.a, r.b)),
    ErfDual: lambda r: ("erf", (r.a, r.b, r.c)),
    SinDual: lambda r: ("sin", (r.a, r.b, r.c)),
    GeluDual: lambda r: ("gelu", ()),
    ExpDual: lambda r: ("exp", (r.a, r.b)),
    GaussianDual: lambda r: ("gaussian", (r.a, r.b)),
    ExpNormalizedDual: lambda r: ("exp_normalized", (r.gamma, r.shift, float(r.do_clip))),
    RbfDual: lambda r: ("rbf", (r.gamma,)),
    SignDual: lambda r: ("sign", ()),
    GaborDual: lambda r: ("gabor", ()),
    MonomialDual: lambda r: ("monomial", (r.degree,)),
    RectifiedMonomialDual: lambda r: ("rectified_monomial", (r.degree,)),
    PolynomialDual: lambda r: ("polynomial", r.coef),  # 4 coefficients (activations.polynomial)
    HermiteDual: lambda r: ("hermite", (r.degree,)),
}


class Segment(NamedTuple):
    """A run of the plan: ``ops`` (n_ops, 5) float64 rows for the fused pass, or one Python-level
    dual ``rule``; ``n_act`` activations (variances it reads per point)."""

    ops: np.ndarray | None
    rule: object
    n_act: int


class Program(NamedTuple):
    """A network with branches: the steps of ``infinite.kernel_program`` in order, each with its
    compiled plan (the Segments of a Run, else None), over ``n_regs`` registers (Σ, Θ of one
    branch each; register 0 holds the result); ``n_act`` variances per point in all."""

    steps: tuple
    n_regs: int
    n_act: int


def _op(name, *params):
    return [OP_KINDS[name], *params, *[0.0] * (4 - len(params))]


#: From this many features on, a symmetric result's Gram is most of its cost, and one threaded
#: BLAS syrk of the triangle (then the pass) beats a gemm per sub-tile inside the pass
#: (``benchmarks/compare_neural_tangents.py --floor --N 8000 --d 784 64 --depth 3``, with the syrk
#: phase and with every symmetric result fused, 2 threads, OpenBLAS 0.3.30): d = 784 0.73 s vs
#: 0.80 s; d = 64 0.44 s vs 0.39 s (the syrk's idle BLAS threads spinning beside the pass). Cross
#: blocks (x2 given) are always fused.
SYRK_MIN_D = 256


class CpuBackend:
    name = "cpu"

    def plan(self, layers, d, first=True):
        """Segments of the kernel rule of ``layers`` (Dense and Act leaves, in order) for d inputs.

        With ``first`` the first run starts with the input op Σ = x·x'/d, Θ = 0; without, the
        plan continues given Σ, Θ of d features (d: the fan in of a 'standard' Dense layer).
        """
        segments, ops, fan_in = [], [_op("input", 1.0 / d)] if first else [], d

        def flush():
            if ops:
                n_act = sum(row[0] not in (OP_KINDS["input"], OP_KINDS["dense_ntk"], OP_KINDS["dense_standard"])
                            for row in ops)
                segments.append(Segment(np.array(ops, dtype=np.float64), None, n_act))
                ops.clear()

        for layer in layers:
            if isinstance(layer, Dense):
                b2 = 0.0 if layer.b_std is None else layer.b_std**2
                if layer.parameterization == "ntk":
                    ops.append(_op("dense_ntk", layer.W_std**2, b2))
                else:
                    ops.append(_op("dense_standard", layer.W_std**2, b2, layer.n_in(fan_in),
                                   0.0 if layer.b_std is None else 1.0))
                fan_in = layer.width
            elif type(layer.activation.dual) in _CLOSED_FORM_OPS:
                name, params = _CLOSED_FORM_OPS[type(layer.activation.dual)](layer.activation.dual)
                ops.append(_op(name, *params))
            else:
                flush()
                segments.append(Segment(None, layer.activation.dual, 1))
        flush()
        return segments

    def program(self, steps, n_regs):
        """The :class:`Program` of ``infinite.kernel_program``'s ``(steps, n_regs)``."""
        compiled = tuple((st, self.plan(st.layers, st.fan_in, st.first) if isinstance(st, Run) else None)
                         for st in steps)
        return Program(compiled, n_regs, sum(seg.n_act for _, segs in compiled if segs for seg in segs))

    def gram(self, x1, x2, sigma, blocks):
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

    def diagonal(self, plan, sq_norms, with_ntk, ntk=None):
        """Σ(x, x), Θ(x, x) for every point, and the variance entering each activation.

        sq_norms : (N,) float64, x·x (or Σ(x, x) for a plan that continues given kernels, whose
        Θ(x, x) is ``ntk``, None: 0). Returns ``(nngp, ntk, var)``: float64 arrays of shapes
        (N,), (N,) or None, (n_act, N). ``plan``: a list of Segments or a :class:`Program`.
        """
        n = sq_norms.shape[0]
        k = sq_norms.copy()
        t = (np.zeros(n) if ntk is None else np.array(ntk, dtype=np.float64)) if with_ntk else None
        if isinstance(plan, Program):
            var = np.empty((plan.n_act, n))
            regs, a = {0: (k, t)}, 0
            for st, segs in plan.steps:
                if segs is not None:
                    a = _diagonal_run(segs, *regs[st.reg], var, a)
                else:
                    _structural(st, regs, np.copy, None)
            return k, t, var
        var = np.empty((sum(seg.n_act for seg in plan), n))
        _diagonal_run(plan, k, t, var, 0)
        return k, t, var

    def tile(self, plan, sigma, nngp, ntk, var1, var2, rho_tol, diag_offset=None):
        """One tile through the whole plan, in place.

        sigma : (n1, n2) Gram entries x1·x2 of the tile (may be the ntk buffer when nngp is
        None and the plan is one fused run; a :class:`Program` needs it to be nngp); nngp, ntk :
        (n1, n2) outputs or None (on entry Σ₁₂, Θ₁₂ when the plan continues given kernels);
        var1 (n_act, n1), var2 (n_act, n2) : the diagonal pass's variances of the tile's points;
        diag_offset : column (in the tile) of the input coincident with row i is i + diag_offset
        (x1 is x2), for a Dropout's Scale; None: no coincident inputs.
        """
        if isinstance(plan, Program):
            regs, a = {0: (nngp, ntk)}, 0
            for st, segs in plan.steps:
                if segs is None:
                    _structural(st, regs, np.copy, diag_offset)
                    continue
                k, t = regs[st.reg]
                a = self._run_segments(segs, k, k, t, var1, var2, a, rho_tol)
            return
        self._run_segments(plan, sigma, nngp, ntk, var1, var2, 0, rho_tol)

    def fusable(self, plan, d, symmetric):
        """Whether :meth:`gram_tile` computes ``plan``'s Gram (d features) inside its pass: a list of
        Segments whose first is a fused run starting from the inputs, unless the result is symmetric
        and d >= ``SYRK_MIN_D`` (see there)."""
        return (not isinstance(plan, Program) and plan[0].ops is not None and plan[0].ops[0, 0] == OP_KINDS["input"]
                and not (symmetric and d >= SYRK_MIN_D))

    def gram_tile(self, plan, x1, x2, nngp, ntk, var1, var2, rho_tol, self_gram=None):
        """:meth:`tile` of the Gram x1·x2ᵀ, which the first segment computes sub-tile by sub-tile
        inside its pass (``_core.fc_gram_tile``, BLAS on one thread per OpenMP thread), so the
        layers read it from cache and it is never written to memory on its own.

        x1 (n1, d), x2 (n2, d) of the results' dtype, contiguous rows; the plan must be
        :meth:`fusable`. nngp, ntk : (n1, n2) outputs or None (not both). self_gram : None or
        (n1,) float64 x1ᵢ·x1ᵢ for a symmetric result's tile (x2 = x1 from its first row on):
        the Gram's entries (i, i) take these values, and only the entries on and above the
        diagonal are guaranteed (the rest are the mirror's).
        """
        first, rest = plan[0], plan[1:]
        with one_blas_thread():
            _core.fc_gram_tile(x1, x2, nngp, ntk, var1[: first.n_act], var2[: first.n_act], first.ops, rho_tol,
                               GEMM[x1.dtype.char], self_gram)
        if rest:
            self._run_segments(rest, nngp, nngp, ntk, var1, var2, first.n_act, rho_tol)

    def tiles(self, plan, nngp, ntk, var1, var2, rho_tol):
        """B tiles through ``plan`` (one run of Segments continuing given kernels) in place: nngp, ntk
        (B, n1, n2) float64 C-contiguous (ntk None: the NNGP alone); var1 (B, n_act, n1) and var2
        (B, n_act, n2): the variances entering each activation of each tile. One compiled call for
        all tiles where the plan is fused (the rows of every tile in parallel)."""
        a = 0
        for seg in plan:
            v1, v2 = var1[:, a : a + seg.n_act], var2[:, a : a + seg.n_act]
            if seg.ops is not None:
                _core.fc_tiles(nngp, ntk, np.ascontiguousarray(v1), np.ascontiguousarray(v2), seg.ops, rho_tol)
            else:
                for b in range(nngp.shape[0]):
                    _rule_tile(seg.rule, nngp[b], None if ntk is None else ntk[b], v1[b, 0], v2[b, 0])
            a += seg.n_act

    def conv_window(self, k, t, index, rule, k_out, t_out, ops=None, var1=None, var2=None, rho_tol=0.0):
        """A Conv's kernel rule with every filter tap in one pass: with s_K, s_T the sums over the taps t
        of k, t at the input positions index[o, t] (both positions of a pair moved by one tap; < 0: zero
        padding), K' = k_scale·s_K + k_offset and T' = t_from_k·s_K + t_scale·s_T + t_offset, ``rule`` =
        (k_scale, k_offset, t_from_k, t_scale, t_offset). k, t float64 C-contiguous (A, n, n, C) pair
        arrays or (A, n, C) one-position arrays (t None: T = 0); written into k_out, t_out (A, m, m, C) /
        (A, m, C). ``ops`` (the ops of one activation): the outputs then go through it, with the variances
        of the rows' and the columns' positions: pair arrays var1 (A, m), var2 (1 or A, m·C);
        one-position arrays (A = 1) var1 (m, n1), var2 (m, n2), each position's C = n1·n2 entries an
        (n1, n2) tile."""
        _core.conv_window(k, t, k_out, t_out, index, rule, ops, var1, var2, rho_tol)

    def conv_chain(self, k, t, steps, width, rho_tol, k_out, t_out, upper=False, x1=None, x2t=None):
        """Conv steps one after another on one-position arrays, a chunk of entries through all of them in
        cache (the memory traffic of one pass, whatever the depth). k, t (n, C) float64 C-contiguous (t None:
        T = 0), each position's C entries an (C / width, width) tile; or k None and the inputs x1 (C / width,
        n, c), x2t (n, c, width), float64 C-contiguous: K = x1[i, q]·x2t[q, :, j] / c per position q, T = 0
        (the Gram is never stored). ``steps`` a sequence of (index (m, taps),
        rule, ops, var1 (m, C / width), var2 (m, width)) as :meth:`conv_window`'s (ops None: no activation),
        each reading the previous one's m positions. Written into k_out, t_out (C,): the mean over the last
        step's positions (Flatten's rule); (m, C): every position. ``upper`` (with the mean): only the entries
        (i, j ≥ i) of each (C / width, width) tile are computed, those below them are 0 or computed."""
        _core.conv_chain(k, t, steps, width, rho_tol, k_out, t_out, upper, x1, x2t)

    def mirror_upper(self, a):
        """a[j, i] = a[i, j] for j > i, in place."""
        _core.mirror_upper(a)

    def _run_segments(self, segments, sigma, nngp, ntk, var1, var2, a, rho_tol):
        """Segments of a plan over one tile in place: the first reads Σ from ``sigma``, each writes
        ``nngp`` (and ``ntk``); variances from row ``a`` of var1/var2 on. Returns the next row."""
        for seg in segments:
            v1, v2 = var1[a : a + seg.n_act], var2[a : a + seg.n_act]
            if seg.ops is not None:
                self._fused(sigma, nngp, ntk, v1, v2, seg.ops, rho_tol)
            else:
                self._rule(seg.rule, nngp, ntk, v1[0], v2[0])
            sigma = nngp
            a += seg.n_act
        return a

    # The two ways a segment is computed, which the GPU backend replaces.
    _fused = staticmethod(_core.fc_tile)

    @staticmethod
    def _rule(rule, k, t, v1, v2):
        _rule_tile(rule, k, t, v1, v2)

    #: The namespace of the arrays this backend computes on (the drivers allocate results with it).
    xp = np

    @staticmethod
    def to_host(a):
        """a as a NumPy array (a itself here)."""
        return a

    @staticmethod
    def from_host(a):
        """A NumPy array as this backend's array (itself here)."""
        return a

    @staticmethod
    def available_memory():
        """Bytes the backend's arrays can still take (its memory check's): the host's available memory."""
        return _validation.available_memory()


def _diagonal_run(plan, k, t, var, a):
    """The per-point pass of one run's Segments on k, t in place, variances from row a of var; the next row."""
    for seg in plan:
        if seg.ops is not None:
            _core.fc_diagonal(k, t, var[a : a + seg.n_act], seg.ops)
        else:
            var[a] = k
            _rule_diagonal(seg.rule, k, t)
        a += seg.n_act
    return a


def _structural(step, regs, copy, diag_offset):
    """A Copy, Combine or Scale step on ``regs`` (register -> (Σ, Θ or None) arrays), in place.

    Per point (1-D arrays) a Scale multiplies every entry; on a tile only the coincident inputs'
    (``diag_offset``, see ``CpuBackend.tile``; None: none), as neural-tangents' Dropout does.
    """
    if isinstance(step, Copy):
        k, t = regs[step.src]
        for dst in step.dsts:
            regs[dst] = (copy(k), None if t is None else copy(t))
    elif isinstance(step, Combine):
        (k0, t0), rest = regs[step.regs[0]], [regs[r] for r in step.regs[1:]]
        if step.kind == "sum":
            for k, t in rest:
                k0 += k
                if t0 is not None:
                    t0 += t
        elif step.kind == "prod":  # Θ by the product rule, in neural-tangents' order
            for k, t in rest:
                if t0 is not None:
                    t0 *= k
                    t0 += k0 * t
                k0 *= k
        else:  # 'mean': Σᵢ wᵢKᵢ / Σᵢ wᵢ
            w = step.weights
            for x0, xs in ((k0, [k for k, _ in rest]), (t0, [t for _, t in rest])):
                if x0 is None:
                    continue
                x0 *= w[0]
                for wi, x in zip(w[1:], xs):
                    x0 += wi * x
                x0 /= sum(w)
    elif isinstance(step, Scale):
        for x in regs[step.reg]:
            if x is None:
                continue
            if x.ndim == 1:
                x *= step.factor
            elif diag_offset is not None:
                rows = np.arange(x.shape[0])
                cols = rows + diag_offset
                ok = (cols >= 0) & (cols < x.shape[1])
                x[rows[ok], cols[ok]] *= step.factor
    else:  # pragma: no cover - kernel_program makes only these
        raise TypeError(f"no rule for step {type(step).__name__}")


def _rule_tile(rule, k, t, v1, v2):
    """A layer whose dual kernels are Python functions, over a tile in place."""
    if isinstance(rule, QuadratureDual):
        from . import numba_kernels

        if numba_kernels.compiles(rule):
            numba_kernels.quad_tile(rule, k, t, v1, v2)
        else:
            _quad_tile_numpy(rule, k, t, v1, v2)
    elif isinstance(rule, GivenDual):
        k64 = k.astype(np.float64)
        if t is not None:
            t *= rule.d_nngp_fn(k64, v1[:, None], v2[None, :])
        k[...] = rule.nngp_fn(k64, v1[:, None], v2[None, :])
    else:  # pragma: no cover - plan() sends only these here
        raise TypeError(f"no tile rule for {type(rule).__name__}")


def _rule_diagonal(rule, k, t):
    """Same for per-point values k = Σ(x, x), t = Θ(x, x) (float64, in place)."""
    if isinstance(rule, QuadratureDual):
        from . import numba_kernels

        if numba_kernels.compiles(rule):
            numba_kernels.quad_diag(rule, k, t)
        else:
            _quad_tile_numpy(rule, k[:, None], None if t is None else t[:, None], k, k, diagonal=True)
    else:
        if t is not None:
            t *= rule.d_nngp_fn(k, k, k)
        k[...] = rule.nngp_fn(k, k, k)


#: float64 values of φ(v) (and of φ'(v)) held per block of rows: 2²² (32 MiB).
_QUAD_BLOCK_VALUES = 2**22


def _quad_tile_numpy(rule, k, t, v1, v2, diagonal=False):
    """``numba_kernels.quad_tile`` (or, with ``diagonal``, ``quad_diag`` on columns (n, 1)) in
    vectorised NumPy, for a φ that Numba cannot compile: the same deg×deg Gauss–Hermite rule
    and the same arithmetic per node (so equal to rounding), over blocks of rows whose
    (rows, n2, deg, deg) node values stay within _QUAD_BLOCK_VALUES.
    """
    from .numba_kernels import hermite_rule

    z, w = hermite_rule(rule.deg)
    deg, n2 = len(z), k.shape[1]
    rows = max(1, _QUAD_BLOCK_VALUES // (n2 * (1 if diagonal else deg * deg)))
    for i0 in range(0, k.shape[0], rows):
        b = slice(i0, i0 + rows)
        u = np.sqrt(v1[b])[:, None] * z  # (rows, deg)
        fu = np.asarray(rule.fn(u), dtype=np.float64)
        if diagonal:  # E[φ(u)²], E[φ'(u)²]: ρ = 1
            k[b, 0] = (w * fu * fu).sum(1)
            if t is not None:
                du = np.asarray(rule.df(u), dtype=np.float64)
                t[b, 0] *= (w * du * du).sum(1)
            continue
        vb1, vb2 = v1[b][:, None], v2[None, :]
        # ρ = Σ12/(√Σ11·√Σ22); Σ11 itself where Σ11 = Σ22, as in the Numba kernel.
        scale = np.where(vb1 == vb2, vb1, np.sqrt(vb1) * np.sqrt(vb2))
        rho = np.clip(np.divide(k[b].astype(np.float64), scale, out=np.zeros(scale.shape), where=scale > 0), -1, 1)
        c = np.sqrt(1.0 - rho * rho)
        v = np.sqrt(v2)[None, :, None, None] * (rho[..., None, None] * z[:, None] + c[..., None, None] * z)
        k_new = np.einsum("a,ia,ijab,b->ij", w, fu, np.asarray(rule.fn(v), dtype=np.float64), w)
        if t is not None:
            du = np.asarray(rule.df(u), dtype=np.float64)
            t[b] *= np.einsum("a,ia,ijab,b->ij", w, du, np.asarray(rule.df(v), dtype=np.float64), w)
        k[b] = k_new


def _numba_serial_after_fork():
    """In a fork()ed child, run the Numba quadrature without threads (DESIGN §3: fork-safe).

    Numba's 'omp' threading layer on GNU OpenMP terminates (SIGTERM) a child of the process
    that started its threads at the child's first parallel region, whatever the thread count;
    such a child switches to the serial kernel (same results bit for bit: rows are
    independent). The tbb and workqueue layers survive fork(). The OpenMP pool of
    ``fastntk._core`` is released before each fork by src/core.cpp.
    """
    numba = sys.modules.get("numba")
    if numba is None:
        return
    try:
        if numba.threading_layer() != "omp":
            return
    except ValueError:  # Numba's threads have not started
        return
    from . import numba_kernels

    numba_kernels.use_serial_kernels()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_numba_serial_after_fork)


def set_num_threads(n):
    """Threads of fastntk's compiled kernels (OpenMP). BLAS keeps its own setting."""
    _core.set_num_threads(int(n))


def get_num_threads():
    return _core.get_num_threads()


BACKEND = CpuBackend()
