"""Convolutional driver: NNGP/NTK of networks with spatial axes (Conv, pooling, Flatten, LayerNorm).

Inputs (N, *S, C), channels last. The infinite-width state of a pair of inputs is a covariance
over pairs of positions; the driver walks the network over one *block* of pairs at a time
(rows i of x1 against columns j of x2), so memory is O(block) beside the (N1, N2) results.
Two layouts, chosen once per network (as neural-tangents chooses ``diagonal_spatial``):

* full: every pair of positions, pair arrays (b1, *S, *S, b2), self arrays (b, *S, *S) —
  needed by pooling (AvgPool, SumPool, GlobalAvgPool, GlobalSumPool), whose windows mix
  positions, and by a network that ends with spatial axes;
* diagonal: same-position covariances only, pair arrays (*S, b1, b2), self arrays (*S, b) —
  exact when no layer mixes positions before a Flatten readout: a Conv's shared-weight tap
  moves both positions together, so the output diagonal reads only the input diagonal.
  O(P) instead of O(P²) per pair.

Every input is first walked with itself (a self pass: its self-covariances, and the variances each
activation and LayerNorm reads, recorded in walk order); the pair blocks then read those variances,
so each input's self-covariances are walked once, and a pair of coincident inputs gets exactly its
own variances (the same arithmetic). Each Conv is one pass of the backend's ``conv_window`` over a
block (every tap, K and T together, the Dense rule, and the activation after it on each chunk while
it is in cache); each pool one pass per position; other activations run in the backend's fused
tiles (the (b1·P, P·b2) matrix in the full layout, one (b1, b2) tile per position in the diagonal one).
In the diagonal layout a pair block defers its Convs and closed-form activations and runs them, with
the Flatten after them, as one ``conv_chain`` pass: a chunk of pairs goes through every step while it
is in cache, so the memory traffic is the input Gram's and the result's whatever the depth (and a
block on the diagonal of a symmetric kernel computes its upper triangle alone). Any other layer runs
the deferred steps first (``_Block.materialize``).

Blocks take their buffers from :data:`fastntk._pool.POOL`, which keeps up to 64 MiB of them between calls.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from . import spec
from .infinite import _progress, rho_tolerance
from ._blas import one_blas_thread
from ._pool import POOL
from ._validation import check_memory

__all__ = ["Walk", "conv_kernels", "walk_shape"]

#: Pair-array entries per block (float64): 2²² (32 MiB per array; a block holds a few).
BLOCK_ENTRIES = 2**22


class Walk(NamedTuple):
    """What a network does to inputs of spatial shape ``shape`` and ``width`` channels: the output's
    spatial shape and width, whether it is Gaussian, and whether any layer mixes positions (pooling:
    the full layout is needed)."""

    shape: tuple
    width: int
    is_gaussian: bool
    mixes_positions: bool


class _Gram(NamedTuple):
    """The inputs of a diagonal-layout pair block, whose Gram K[p, i, j] = Σ_c x1[i, p, c]·x2t[p, c, j] / C
    (T = 0) the first deferred pass forms chunk by chunk in cache (it is never stored)."""

    x1: np.ndarray  # (b1, P, C) float64
    x2t: np.ndarray  # (P, C, b2) float64

    @property
    def pairs(self):
        return self.x1.shape[0], self.x2t.shape[2]

    def array(self, take):
        """The Gram (P, b1, b2), in an array from ``take(shape)``."""
        k = take((self.x1.shape[1], *self.pairs))
        np.matmul(self.x1.transpose(1, 0, 2), self.x2t, out=k)
        k /= self.x1.shape[2]
        return k


class _Branch:
    """One branch of a block: pair arrays k, t (None in a dry run), self arrays per side (one side
    when the block's rows are its columns), and what the network has made of it so far. ``steps``:
    Conv steps (``conv_chain``'s) still to run on k, t (a pair pass in the diagonal layout defers them
    to one compiled pass); ``shape`` is the spatial shape after them."""

    def __init__(self, k, t, sides, shape, width, gaussian, last, t_zero=False):
        self.k, self.t, self.sides = k, t, sides  # k: a _Gram, with t None, before a diagonal pair pass's steps
        self.shape, self.width, self.gaussian, self.last = shape, width, gaussian, last
        self.t_zero = t_zero  # Θ = 0 everywhere in t (the inputs'): a Conv need not average it
        self.steps = []

    def copy(self):
        """An independent copy (a FanOut's): the activations work in place."""
        def dup(a):
            return None if a is None else a.copy()

        return _Branch(dup(self.k), dup(self.t), [(dup(k), dup(t)) for k, t in self.sides], self.shape, self.width,
                       self.gaussian, self.last, self.t_zero)


def _where(index, leaf):
    return f"layer {index} ({type(leaf).__name__})"


def walk_shape(layer_spec, shape, width):
    """The :class:`Walk` of ``layer_spec`` for inputs of spatial shape ``shape``, ``width`` channels,
    checked as neural-tangents checks it; ValueError naming the layer and its place otherwise."""
    mixes = any(isinstance(leaf, (spec.Pool, spec.GlobalPool)) for leaf in spec.leaves(layer_spec))
    (b,) = _walk(layer_spec, [_Branch(None, None, [], tuple(shape), width, False, "the inputs")], None, [0])
    return Walk(b.shape, b.width, b.gaussian, mixes)


def _walk(node, branches, block, counter, act=None):
    """The branches after ``node``; ``block`` None is a dry run (shapes and checks only). ``act``: the
    activation layer after a Conv ``node``, walked with it."""
    if isinstance(node, spec.Serial):
        layers, i = node.layers, 0
        while i < len(layers):  # a Conv and the activation after it: one pass (the Conv walks both)
            then = layers[i + 1] if i + 1 < len(layers) else None
            fuse = block is not None and isinstance(layers[i], spec.Conv) and isinstance(then, spec.Act)
            branches = _walk(layers[i], branches, block, counter, then if fuse else None)
            i += 2 if fuse else 1
        return branches
    if isinstance(node, spec.Parallel):
        if len(branches) != len(node.layers):
            raise ValueError(f"parallel of {len(node.layers)} layers receives {len(branches)} branch(es); it needs "
                             "one per layer (e.g. after FanOut)")
        return [_walk(child, [b], block, counter)[0] for child, b in zip(node.layers, branches)]
    if isinstance(node, spec.Repeat):
        for _ in range(node.n):
            branches = _walk(node.layer, branches, block, counter)
        return branches
    index = counter[0]
    counter[0] += 1
    where = _where(index, node)
    if isinstance(node, spec.FanOut):
        if block is not None:
            block.materialize(branches[0])
        return [branches[0]] + [branches[0].copy() for _ in range(node.num - 1)]
    if isinstance(node, (spec.FanInSum, spec.FanInProd, spec.FanInConcat)):
        return [_fan_in(node, branches, block, where)]
    if len(branches) != 1:
        raise ValueError(f"{where} receives {len(branches)} branches; merge them with a FanIn layer first")
    (b,) = branches
    if isinstance(node, spec.Identity) or (isinstance(node, spec.Dropout) and node.mode == "test"):
        return branches
    if isinstance(node, spec.Dropout):
        raise NotImplementedError(f"{where}: Dropout in mode 'train' is not supported in networks with spatial "
                                  "layers")
    if isinstance(node, (spec.Conv, spec.Pool)):
        window = node.filter_shape if isinstance(node, spec.Conv) else node.window_shape
        if len(window) != len(b.shape):
            raise ValueError(f"{where} has a {len(window)}-D window but follows {b.last} with "
                             f"{len(b.shape)} spatial axes: it needs inputs of shape (N, "
                             f"{', '.join(['S'] * len(window)) if window else ''}, C) (channels last)"
                             + ("; Flatten and global pooling remove the spatial axes, so a Conv or pool "
                                "cannot follow them" if not b.shape else ""))
        try:
            plan = spec.window_plan(b.shape, window, node.strides, node.padding)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        out_shape = tuple(n for n, _ in plan)
        if isinstance(node, spec.Conv):
            if block is not None:
                block.conv(b, node, plan, node.fan_in(b.width), act)
            b.shape, b.width, b.gaussian, b.last = out_shape, node.width, True, where
            if act is not None:  # a Gaussian input: always a valid place for it
                b.gaussian, b.last = False, _where(counter[0], act)
                counter[0] += 1
        else:
            if block is not None:
                block.pool(b, node, plan)
            b.shape, b.last = out_shape, where
        return [b]
    if isinstance(node, spec.GlobalPool):
        if not b.shape:
            raise ValueError(f"{where} needs inputs with spatial axes; it follows {b.last}, which has none")
        if block is not None:
            block.global_pool(b, node.kind)
        b.shape, b.last = (), where
        return [b]
    if isinstance(node, spec.Flatten):
        if block is not None and b.shape:
            block.flatten(b)
        b.width, b.shape, b.gaussian, b.last = b.width * math.prod(b.shape), (), False, where
        return [b]
    if isinstance(node, spec.Dense):
        _affine(node, b, node.n_in(b.width), block)
        b.width, b.gaussian, b.last = node.width, True, where
        return [b]
    if isinstance(node, spec.LayerNorm):
        nd = len(b.shape) + 2
        axes = [a % nd for a in node.axis if -nd <= a < nd]
        if len(axes) != len(node.axis) or 0 in axes or nd - 1 not in axes:
            raise ValueError(f"{where}: axis={node.axis} must name non-batch axes of the {nd}-D inputs it receives, "
                             "the channel axis (-1) among them")
        if not b.gaussian:
            raise ValueError(f"{where} needs a Gaussian input (after a Conv or Dense layer), as in neural-tangents; "
                             f"it follows {b.last}")
        if block is not None:
            block.layer_norm(b, tuple(a - 1 for a in axes if a != nd - 1), node.eps)
        b.last = where
        return [b]
    if isinstance(node, spec.Act):
        if not b.gaussian:
            raise ValueError(f"unsupported layer order: {where}, activation {node.activation.name!r}, follows "
                             f"{b.last}; the dual kernels need Gaussian pre-activations (as in neural-tangents): an "
                             "activation must follow a Conv, Dense, LayerNorm or pooling of one, or a FanInSum of "
                             "such branches")
        if block is not None:
            block.activation(b, node)
        b.gaussian, b.last = False, where
        return [b]
    raise NotImplementedError(f"{where} has no kernel rule in networks with spatial layers")


def _fan_in(node, branches, block, where):
    if block is not None:
        for b in branches:
            block.materialize(b)
    shapes = {b.shape for b in branches}
    if len(shapes) > 1:
        raise ValueError(f"{where} needs branches of one spatial shape; got {sorted(shapes)}")
    first = branches[0]
    if isinstance(node, spec.FanInConcat):
        nd = len(first.shape) + 2
        if node.axis % nd != nd - 1:
            raise NotImplementedError(f"{where}: FanInConcat(axis={node.axis}) along a non-channel axis is not "
                                      "supported; concatenate the channels (axis=-1)")
        weights = [b.width for b in branches]
        if block is not None:
            block.combine(branches, "mean", weights)
        first.width, first.gaussian = sum(weights), False
    elif isinstance(node, spec.FanInSum):
        if len(branches) > 1 and not all(b.gaussian for b in branches):
            raise ValueError(f"{where}: FanInSum needs Gaussian branches (as in neural-tangents): every branch must "
                             f"end in a Conv or Dense layer or pass one through; got {[b.last for b in branches]}")
        widths = {b.width for b in branches}
        if len(widths) > 1:
            raise ValueError(f"{where}: FanInSum needs branches of one channel count; got {sorted(widths)}")
        if block is not None:
            block.combine(branches, "sum", None)
    else:
        if block is not None:
            block.combine(branches, "prod", None)
        first.gaussian = len(branches) == 1 and first.gaussian
    first.last, first.t_zero = where, all(b.t_zero for b in branches)
    return first


def _affine(layer, b, fan_in, block):
    """The Dense rule on every array of the branch: 'ntk' K' = W²K + b², T' = K' + W²T; 'standard'
    T' = fan_in·K + W²T + [bias], K' = W²K + b²."""
    if block is None:
        return
    block.materialize(b)
    w2, b2 = layer.W_std**2, (0.0 if layer.b_std is None else layer.b_std**2)

    def rule(k, t):
        if k is None:
            return None, None
        k_new = w2 * k + b2
        if layer.parameterization == "ntk":
            return k_new, k_new + w2 * t
        return k_new, fan_in * k + w2 * t + (0.0 if layer.b_std is None else 1.0)

    b.k, b.t = rule(b.k, b.t)
    b.sides = [rule(*side) for side in b.sides]
    b.t_zero = False


def _window_counts(shape, plan, window, strides, padding):
    """Positions of each output window inside the input (SAME windows overlap the padding): shape S_out."""
    counts = []
    for n, (n_out, lo), f, s in zip(shape, plan, window, strides):
        start = np.arange(n_out) * s - lo
        inside = np.clip(np.minimum(start + f, n) - np.maximum(start, 0), 0, None)
        counts.append(np.full(n_out, f) if padding == "CIRCULAR" else inside)
    return math.prod(np.ix_(*counts)).astype(np.float64)


@functools.lru_cache(maxsize=256)
def _joint_index(shape, plan, window, strides, padding):
    """index[o, t] (P_out, |F|): the flattened input position (row-major over ``shape``) that the
    flattened output position o reads at the flattened tap t, −1 where any axis reads SAME padding
    (read-only: one array per geometry, shared by every block and call)."""
    d = len(shape)
    pos, valid = np.zeros((1,) * 2 * d, dtype=np.int64), np.ones((1,) * 2 * d, dtype=bool)
    for k, (n, (n_out, lo), f, s) in enumerate(zip(shape, plan, window, strides)):
        at = [1] * 2 * d
        at[k], at[d + k] = n_out, f
        ix = _axis_index(n, n_out, lo, f, s, padding).reshape(at)
        pos, valid = pos * n + ix, valid & (ix >= 0)
    index = np.ascontiguousarray(np.where(valid, pos, -1).reshape(math.prod(n for n, _ in plan), math.prod(window)))
    index.flags.writeable = False
    return index


def _positions_replaced(shape, s_in, s_out, full, n_batch):
    """The shape of a block array (full: (b, *S, *S[, b2]); diagonal: (*S, ...)) with S_out for S_in."""
    d = len(s_in)
    if full:
        return (n_batch, *s_out, *s_out, *shape[1 + 2 * d:])
    return (*s_out, *shape[d:])


def _axis_index(n, n_out, lo, f, s, padding):
    """index[o, t] (n_out, f): the input position that output o reads at tap t along one axis of n
    positions, o·s + t − lo, wrapped for CIRCULAR, −1 in SAME padding (spec.window_plan's rule)."""
    pos = np.arange(n_out)[:, None] * s + np.arange(f)[None, :] - lo
    if padding == "CIRCULAR":
        return np.ascontiguousarray(pos % n, dtype=np.int64)
    return np.ascontiguousarray(np.where((pos >= 0) & (pos < n), pos, -1), dtype=np.int64)


class _Block:
    """The array work of the walks in one layout (``full``), on a backend, in one of two passes.

    A self pass (``tapes`` None) walks blocks of inputs with themselves (one side per branch) and
    records, in ``record``, the variances Σ(x_p, x_p) that each activation and LayerNorm of the walk
    reads, in walk order. A pair pass walks blocks of pairs (rows ``rows`` of x1 against columns
    ``cols`` of x2, no sides) and reads those variances from ``tapes`` = (x1's, x2's): the records
    of the self passes over all inputs, one array per step. So each input's self-covariances are
    walked once, not once per block, and a coincident pair gets exactly its own variances."""

    def __init__(self, full, backend, rho_tol, tapes=None):
        self.full, self.backend, self.rho_tol, self.tapes = full, backend, rho_tol, tapes
        self.deferred = tapes is not None and not full  # pair arrays' Conv steps in one pass (materialize)
        self._owned = {}  # id -> every buffer _take made (flat float64)
        self._free = {}  # id -> those of them no longer referenced, reused by the window passes
        self.record, self.step, self.rows, self.cols, self.upper = [], 0, None, None, False

    def start(self, rows=None, cols=None, upper=False):
        """A new walk: of a block of inputs (self pass) or of the pairs rows × cols (pair pass); ``upper``:
        only the pairs (i, j ≥ i) of a block on the diagonal of a symmetric kernel are needed (those below
        it may be left 0 where a readout comes right after the deferred steps)."""
        self.record, self.step, self.rows, self.cols, self.upper = [], 0, rows, cols, upper

    def _input_axis(self, shape):
        """The axis of the inputs in the variances :meth:`_variances` returns for spatial shape ``shape``."""
        return 0 if self.full and shape else 1

    def _side_variances(self, b, shape):
        """The variances entering this step of the walk (spatial shape ``shape``), of the rows' and the
        columns' inputs: (b, P) (full layout with spatial axes) or (P, b), C-contiguous, from the side
        (recorded, with the axis of its inputs) or the tapes."""
        self.step += 1
        axis = self._input_axis(shape)
        if self.tapes is None:
            ((k_self, _),) = b.sides
            v = self._variances(k_self, shape).copy()  # (a view of the side, which the walk overwrites)
            self.record.append((v, axis))
            return v, v
        tape1, tape2 = (t[self.step - 1] for t in self.tapes)
        if axis == 0:
            return tape1[self.rows], tape2[self.cols]
        return np.ascontiguousarray(tape1[:, self.rows]), np.ascontiguousarray(tape2[:, self.cols])

    def _take(self, shape):
        """A float64 array of ``shape``: a view of the smallest recycled buffer that holds it (this block's,
        else the pool's), else of a new one. Reusing the block-sized buffers (blocks differ in
        shape) saves the page faults (and the kernel's zeroing) of fresh ones."""
        n = math.prod(shape)
        fits = [buf for buf in self._free.values() if buf.size >= n]
        if fits:
            buf = min(fits, key=lambda b: b.size)
            del self._free[id(buf)]
        else:
            buf = POOL.get(n)
            if buf is None:
                buf = np.empty(max(n, 1))
            self._owned[id(buf)] = buf
        return buf[:n].reshape(shape)

    def close(self):
        """Every buffer of this block to the pool (the walks are over: the results are copies)."""
        POOL.put(self._owned.values())
        self._owned, self._free = {}, {}

    def _give(self, a):
        """Recycle the buffer of ``a`` (an array from :meth:`_take`), which nothing references any more."""
        buf = None if a is None else a.base
        if buf is not None and self._owned.get(id(buf)) is buf:
            self._free[id(buf)] = buf

    def _map(self, b, fn_pair, fn_self, consume=False):
        """fn_pair on the pair arrays, fn_self on the sides; ``consume``: their buffers are then recycled
        (fn makes new arrays)."""
        def on(fn, a):
            r = fn(a)
            if consume:
                self._give(a)
            return r

        if b.k is not None:
            b.k, b.t = on(fn_pair, b.k), on(fn_pair, b.t)
        b.sides = [(on(fn_self, k), on(fn_self, t)) for k, t in b.sides]

    def conv(self, b, layer, plan, fan_in, act=None):
        """Σ_taps K̃ / |F| (one tap moving both positions) with the Dense rule and ``fan_in``, all taps in
        one pass: 'ntk' K' = W²A[K] + b², T' = W²A[T] + K'; 'standard' K' = W²A[K] + b²,
        T' = fan_in·A[K] + W²A[T] + [bias]. ``act``: the activation layer that follows, run in the same
        pass over the pair arrays where its rule is one compiled segment (otherwise after it)."""
        size = math.prod(layer.filter_shape)
        w2, b2 = layer.W_std**2 / size, (0.0 if layer.b_std is None else layer.b_std**2)
        if layer.parameterization == "ntk":
            rule = (w2, b2, w2, w2, b2)
        else:
            rule = (w2, b2, fan_in / size, w2, 0.0 if layer.b_std is None else 1.0)
        index = _joint_index(b.shape, plan, layer.filter_shape, layer.strides, layer.padding)
        out_shape = tuple(n for n, _ in plan)
        p_in, p_out = math.prod(b.shape), index.shape[0]

        def run(k, t, n_batch, ops=None, var1=None, var2=None):
            """k, t of a batch axis (n_batch) before the positions: their conv, t (and k) recycled."""
            c = k.size // (n_batch * p_in ** (2 if self.full else 1))
            view_in = (n_batch, p_in, p_in, c) if self.full else (n_batch, p_in, c)
            view_out = (n_batch, p_out, p_out, c) if self.full else (n_batch, p_out, c)
            shape = _positions_replaced(k.shape, b.shape, out_shape, self.full, n_batch)
            k_new, t_new = self._take(shape), self._take(shape)
            self.backend.conv_window(k.reshape(view_in), None if b.t_zero else t.reshape(view_in), index, rule,
                                     k_new.reshape(view_out), t_new.reshape(view_out), ops, var1, var2,
                                     self.rho_tol)
            self._give(k)
            self._give(t)
            return k_new, t_new

        def n_batch(a):  # the diagonal layout (*S, ...): one batch of all pairs
            return a.shape[0] if self.full else 1

        b.sides = [run(k, t, n_batch(k)) for k, t in b.sides]
        fused = None
        if act is not None and b.k is not None:
            ops = self._one_op(act)
            if ops is not None:
                v1, v2 = self._side_variances(b, out_shape)
                fused = (ops, v1, np.ascontiguousarray(v2.T).reshape(1, -1)) if self.full else (ops, v1, v2)
        if self.deferred and b.k is not None:
            b.steps.append([index, rule, *(fused or (None, None, None))])
        else:
            if b.k is not None:
                b.k, b.t = run(b.k, b.t, n_batch(b.k), *(fused or ()))
            b.t_zero = False
        b.shape, b.width = out_shape, layer.width  # what the activation reads (the walk sets them too)
        if act is not None and fused is None:
            self.activation(b, act)

    def _one_op(self, act):
        """The ops of activation layer ``act`` where its rule is one compiled op (a closed form), else None."""
        seg = self.backend.plan([act], 1, first=False)
        return seg[0].ops if len(seg) == 1 and seg[0].ops is not None and seg[0].n_act == 1 else None

    def materialize(self, b):
        """Run the deferred Conv steps of ``b`` (one ``conv_chain`` pass), or form its Gram: k, t of its
        spatial shape."""
        if b.steps:
            k, t = self._chain(b, flatten=False)
            b.k, b.t = k.reshape(*b.shape, *k.shape[1:]), t.reshape(*b.shape, *t.shape[1:])
        elif isinstance(b.k, _Gram):
            k = b.k.array(self._take)
            b.k, b.t = k.reshape(*b.shape, *k.shape[1:]), np.zeros(k.shape).reshape(*b.shape, *k.shape[1:])

    def _chain(self, b, flatten):
        """The deferred steps of ``b`` on its pair arrays (*S, b1, b2) or its _Gram: k, t (P', b1, b2), or
        with ``flatten`` their mean over the positions (b1, b2); the inputs' buffers recycled."""
        gram = b.k if isinstance(b.k, _Gram) else None
        n1, n2 = gram.pairs if gram else b.k.shape[-2:]
        shape = (n1, n2) if flatten else (b.steps[-1][0].shape[0], n1, n2)
        k_new, t_new = self._take(shape), self._take(shape)
        out_view = (n1 * n2,) if flatten else (shape[0], n1 * n2)
        if gram:
            inputs = dict(k=None, t=None, x1=gram.x1, x2t=gram.x2t)
        else:
            p_in = b.k.size // (n1 * n2)
            inputs = dict(k=b.k.reshape(p_in, -1), t=None if b.t_zero else b.t.reshape(p_in, -1))
        self.backend.conv_chain(steps=b.steps, width=n2, rho_tol=self.rho_tol, k_out=k_new.reshape(out_view),
                                t_out=t_new.reshape(out_view), upper=self.upper and flatten, **inputs)
        if not gram:
            self._give(b.k)
            self._give(b.t)
        b.steps, b.t_zero = [], False
        return k_new, t_new

    def pool(self, b, layer, plan):
        """Each position's window sum (÷ the window size for AvgPool without normalize_edges; ÷ the
        positions of each window inside the input with it), the two positions' windows independent: one
        pass per position, K and T together (the full layout: every pooling network has it)."""
        d = len(b.shape)
        index = _joint_index(b.shape, plan, layer.window_shape, layer.strides, layer.padding)
        mean = 1.0 / math.prod(layer.window_shape) if layer.kind == "avg" and not layer.normalize_edges else 1.0
        rule = (mean, 0.0, 0.0, mean, 0.0)  # K' = mean·s_K, T' = mean·s_T
        p_in, p_out = math.prod(b.shape), index.shape[0]
        out_shape = tuple(n for n, _ in plan)
        pair_size = self_size = None
        if layer.kind == "avg" and layer.normalize_edges:
            c = _window_counts(b.shape, plan, layer.window_shape, layer.strides, layer.padding)
            one = (1,) * d
            pair_size = c.reshape(1, *c.shape, *one, 1) * c.reshape(1, *one, *c.shape, 1)
            self_size = c.reshape(1, *c.shape, *one) * c.reshape(1, *one, *c.shape)

        def pooled(k, t, size):
            n_batch = k.shape[0]
            c = k.size // (n_batch * p_in * p_in)
            views = [((n_batch, p_in, p_in * c), (n_batch, p_out, p_in, c)),  # the first position's windows
                     ((n_batch * p_out, p_in, c), _positions_replaced(k.shape, b.shape, out_shape, True, n_batch))]
            for view, shape in views:
                k_new, t_new = self._take(shape), self._take(shape)
                out_view = (view[0], p_out, view[2])
                self.backend.conv_window(k.reshape(view), None if b.t_zero else t.reshape(view), index, rule,
                                         k_new.reshape(out_view), t_new.reshape(out_view))
                self._give(k)
                self._give(t)
                k, t = k_new, t_new
            if size is not None:
                k /= size
                t /= size
            return k, t

        if b.k is not None:
            b.k, b.t = pooled(b.k, b.t, pair_size)
        b.sides = [pooled(k, t, self_size) for k, t in b.sides]

    def global_pool(self, b, kind):
        d = len(b.shape)
        p = math.prod(b.shape)
        scale = 1.0 / (p * p) if kind == "avg" else 1.0
        axes = tuple(range(1, 1 + 2 * d))  # both positions of (b1, *S, *S, b2) / (b, *S, *S): pools are full

        def pooled(a):
            return a.sum(axis=axes) * scale

        self._map(b, pooled, pooled, consume=True)

    def flatten(self, b):
        p = math.prod(b.shape)
        if b.steps:  # the deferred steps and the mean over the positions in one pass
            b.k, b.t = self._chain(b, flatten=True)
            return
        self.materialize(b)
        if self.full:
            self._map(b, lambda a: np.einsum("ippj->ij", a.reshape(a.shape[0], p, p, a.shape[-1])) / p,
                      lambda a: np.einsum("ipp->i", a.reshape(-1, p, p)) / p, consume=True)
        else:
            self._map(b, lambda a: a.reshape(p, *a.shape[len(b.shape):]).sum(0) / p,
                      lambda a: a.reshape(p, -1).sum(0) / p, consume=True)

    def _variances(self, k_self, shape):
        """Σ(x_p, x_p) of a side's inputs: (b, P) (full) or (P, b) (diagonal)."""
        p = math.prod(shape)
        if self.full and shape:
            return np.ascontiguousarray(np.einsum("ipp->ip", k_self.reshape(-1, p, p)))
        return k_self.reshape(p, -1)

    def layer_norm(self, b, spatial_axes, eps):
        """K / √(V₁ V₂), V = Σ(x_p, x_p) + eps averaged over ``spatial_axes`` (0-based in S)."""
        self.materialize(b)
        p = math.prod(b.shape)
        shape = b.shape
        full = self._input_axis(shape) == 0

        def normalised(v):
            v = v + eps
            if not spatial_axes:
                return v
            if full:
                v = v.reshape(-1, *shape)
                return np.broadcast_to(v.mean(axis=tuple(1 + a for a in spatial_axes), keepdims=True),
                                       v.shape).reshape(-1, p)
            v = v.reshape(*shape, -1)
            return np.broadcast_to(v.mean(axis=spatial_axes, keepdims=True), v.shape).reshape(p, -1)

        v1, v2 = (normalised(v) for v in self._side_variances(b, shape))
        if b.k is not None:
            if full:
                n1, n2 = v1.shape[0], v2.shape[0]
                scale = np.sqrt(v1.reshape(n1, p, 1, 1) * v2.T.reshape(1, 1, p, n2)).reshape(n1, *shape, *shape, n2)
            else:
                scale = np.sqrt(v1[:, :, None] * v2[:, None, :]).reshape(*shape, v1.shape[1], v2.shape[1])
            b.k, b.t = b.k / scale, b.t / scale
        if b.sides:  # a self pass: its one side, with its own variances v1
            scale = (np.sqrt(v1[:, :, None] * v1[:, None, :]).reshape(-1, *shape, *shape) if full
                     else np.sqrt(v1 * v1).reshape(*shape, -1))
            b.sides = [(k / scale, t / scale) for k, t in b.sides]

    def activation(self, b, layer):
        """The layer's dual kernels on every array: the pair arrays as one (b1·P, P·b2) tile (full
        layout) or P tiles (b1, b2) (one per position), a self pass's side as one (P, P) tile per input
        (full) or per input and position by the per-point pass (diagonal), each entry with the variances
        of its two positions."""
        ops = self._one_op(layer) if self.deferred and b.k is not None and b.shape else None
        if ops is not None:  # a deferred step
            v1, v2 = self._side_variances(b, b.shape)
            act = [ops, v1, v2]
            if b.steps and b.steps[-1][2] is None:  # the activation of a Conv step, apart from it in the network
                b.steps[-1][2:] = act
            else:  # a step of its own: the identity window
                p = math.prod(b.shape)
                b.steps.append([np.arange(p, dtype=np.int64).reshape(p, 1), (1.0, 0.0, 0.0, 1.0, 0.0), *act])
            return
        self.materialize(b)
        plan = self.backend.plan([layer], b.width, first=False)
        p = math.prod(b.shape)
        self._map(b, np.ascontiguousarray, np.ascontiguousarray)  # worked on in place through reshaped views
        v1, v2 = self._side_variances(b, b.shape)
        tiles = self.backend.tiles
        if self._input_axis(b.shape) == 0:
            if b.k is not None:
                n1, n2 = v1.shape[0], v2.shape[0]
                tiles(plan, b.k.reshape(1, n1 * p, p * n2), b.t.reshape(1, n1 * p, p * n2), v1.reshape(1, 1, -1),
                      np.ascontiguousarray(v2.T).reshape(1, 1, -1), self.rho_tol)
            for k_self, t_self in b.sides:  # a self pass's one side: variances v1
                tiles(plan, k_self.reshape(-1, p, p), t_self.reshape(-1, p, p), v1[:, None, :], v1[:, None, :],
                      self.rho_tol)
        else:
            if b.k is not None:
                tiles(plan, b.k.reshape(p, *b.k.shape[-2:]), b.t.reshape(p, *b.t.shape[-2:]), v1[:, None, :],
                      v2[:, None, :], self.rho_tol)
            # each (input, position) with itself: the per-point pass (k = Σ₁₁ = Σ₂₂ exactly, so the duals
            # take their coincident-point branch, as the pair pass does on a coincident pair)
            b.sides = [tuple(a.reshape(k_self.shape) for a in self.backend.diagonal(plan, k_self.ravel(), True,
                                                                                     t_self.ravel())[:2])
                       for k_self, t_self in b.sides]

    def combine(self, branches, kind, weights):
        """A FanIn of the branches into the first, on every array: 'sum' Σᵢ Kᵢ; 'mean' Σᵢ wᵢKᵢ / Σᵢ wᵢ
        (the same for Θ); 'prod' Σ = Πᵢ Σᵢ, Θ = Σᵢ Θᵢ Πⱼ≠ᵢ Σⱼ."""
        def merge(ks, ts):
            if kind == "sum":
                return sum(ks[1:], ks[0]), sum(ts[1:], ts[0])
            if kind == "mean":
                return tuple(sum(w * a for w, a in zip(weights, xs)) / sum(weights) for xs in (ks, ts))
            return math.prod(ks), sum(t * math.prod(k for j, k in enumerate(ks) if j != i) for i, t in enumerate(ts))

        first = branches[0]
        if first.k is not None:
            first.k, first.t = merge([b.k for b in branches], [b.t for b in branches])
        first.sides = [merge([b.sides[s][0] for b in branches], [b.sides[s][1] for b in branches])
                       for s in range(len(first.sides))]

def conv_kernels(x1, x2, layer_spec, get, dtype, backend, *, diagonal=False, out=None, progress=False,
                 diagonal_spatial=False, block_rows=None):
    """Σ and/or Θ of ``layer_spec`` between the inputs of x1 and x2, block by block.

    Parameters
    ----------
    x1 : ndarray (N1, *S, C), C-contiguous float32 or float64 (validated by the caller)
    x2 : ndarray (N2, *S, C) or None (x2 = x1: after a readout only the blocks on and above the
        diagonal are computed, then mirrored)
    get : tuple of 'nngp' / 'ntk'
    dtype : the results' dtype (every entry is computed in float64 and rounded once)
    backend : the backend of ``fastntk._backend.select`` (its ``plan``, ``tiles``, ``conv_window``,
        ``mirror_upper``)
    diagonal : only each input with itself: results (N1,) (or (N1, *S', *S') with spatial axes left)
    out : dict name -> preallocated (N1, N2) result (checked by the caller), or None
    diagonal_spatial : a network that ends with spatial axes S' returns only the same-position
        covariances (N1, N2, *S') instead of (N1, N2, S'₀, S'₀, S'₁, S'₁, ...)
    block_rows : inputs of x1 per block (None: blocks of about BLOCK_ENTRIES pair entries)

    Returns
    -------
    dict: the kernels of ``get``; ``cov1`` (Σ of each x1 with itself) and ``cov2`` (None when x2 is
    None); ``ntk_diag1`` (Θ of each x1 with itself); ``width``, ``shape`` (the output's channels and
    spatial shape), ``is_gaussian``, ``x1_is_x2``.
    """
    s, c = x1.shape[1:-1], x1.shape[-1]
    walk = walk_shape(layer_spec, s, c)
    full = walk.mixes_positions or (bool(walk.shape) and not diagonal_spatial)
    rho_tol = rho_tolerance(c, np.float64)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    per_pair = _result_shape(walk.shape, full)
    p_in = math.prod(s)
    pair_entries = p_in * p_in if full else p_in
    res = {"width": walk.width, "shape": walk.shape, "is_gaussian": walk.is_gaussian, "x1_is_x2": x2 is None}
    if diagonal:
        check_memory(n1 * math.prod(per_pair) * 8 * 3, "the per-input kernels", "fewer inputs per call")
        res["nngp"], res["ntk"], _ = _self_pass(x1, layer_spec, _Block(full, backend, rho_tol), pair_entries)
        res["cov1"], res["ntk_diag1"], res["cov2"] = res["nngp"], res["ntk"], None
        return res
    results, out = {}, out or {}
    for name in get:
        if name in out:
            results[name] = out[name]
        else:
            check_memory(n1 * n2 * math.prod(per_pair) * np.dtype(dtype).itemsize * len(get), "the kernels",
                         "out=np.memmap for kernels larger than RAM, fewer inputs per call")
            results[name] = np.empty((n1, n2, *per_pair), dtype=dtype)
    symmetric = x2 is None
    mirror = symmetric and not per_pair
    # Square blocks, except for a mirrored result, computed on and above the diagonal: there thin row
    # blocks with their columns from their first row on compute the fewest pairs below it (N·rows/2).
    side = max(1, int(math.sqrt(BLOCK_ENTRIES / pair_entries)))
    rows = min(n1, block_rows or (max(1, side // 4) if mirror else side))
    cols = min(n2, max(rows, BLOCK_ENTRIES // (pair_entries * rows)))
    # Every input with itself first (the self-kernels, and the variances each pair block reads).
    cov1, ntk1, tape1 = _self_pass(x1, layer_spec, _Block(full, backend, rho_tol), pair_entries)
    cov2, _, tape2 = (None, None, tape1) if symmetric else _self_pass(x2, layer_spec, _Block(full, backend, rho_tol),
                                                                       pair_entries)
    block = _Block(full, backend, rho_tol, tapes=(tape1, tape2))
    blocks = [(i0, j0) for i0 in range(0, n1, rows) for j0 in range(i0 if mirror else 0, n2, cols)]
    # The inputs' Gram matrices on one BLAS thread: the compiled passes after them would share the cores
    # with BLAS threads still spinning (perf showed OpenBLAS's thread server busy in a GAP kernel's passes).
    with _progress(len(blocks), progress, unit="block") as bar, one_blas_thread():
        for i0, j0 in blocks:
            i1, j1 = min(n1, i0 + rows), min(n2, j0 + cols)
            xa = x1[i0:i1]
            xb = (x1 if symmetric else x2)[j0:j1]
            block.start(slice(i0, i1), slice(j0, j1), upper=mirror and i0 == j0)
            (b,) = _walk(layer_spec, [_pairs(xa, xb, full, block._take)], block, [0])
            block.materialize(b)
            for name, key in (("nngp", "k"), ("ntk", "t")):
                if name in results:
                    results[name][i0:i1, j0:j1] = _arrange_pairs(getattr(b, key), walk.shape, full)
            bar.update(1)
    block.close()
    if mirror:  # exactly symmetric: the upper triangle onto the lower
        for r in results.values():
            backend.mirror_upper(r)
    for r in results.values():
        if isinstance(r, np.memmap):
            r.flush()
    res.update(results)
    res.update(cov1=cov1, ntk_diag1=ntk1, cov2=cov2)
    return res


def _self_pass(x, layer_spec, block, pair_entries):
    """Σ(x, x) and Θ(x, x) of every input (N, *per-pair shape), float64, and the tape of the
    variances the walk reads (one array per step, over all inputs: see :class:`_Block`): the walk of
    each block of inputs with itself, without pairs."""
    rows = max(1, BLOCK_ENTRIES // pair_entries)
    k_all, t_all, records = [], [], []
    with one_blas_thread():
        for i0 in range(0, x.shape[0], rows):
            block.start()
            (b,) = _walk(layer_spec, [_self_inputs(x[i0:i0 + rows], block.full)], block, [0])
            k_all.append(_arrange_self(b.sides[0][0], b.shape, block.full))
            t_all.append(_arrange_self(b.sides[0][1], b.shape, block.full))
            records.append(block.record)
    tape = [np.concatenate([v for v, _ in step], axis=step[0][1]) for step in zip(*records)]
    k, t = np.concatenate(k_all), np.concatenate(t_all)  # copies: the block's buffers are free after them
    block.close()
    return k, t, tape


def _self_inputs(x, full):
    """The input branch of a self pass: Σ = x·x/C per pair of positions of each input (b, *S, C) with
    itself, T = 0."""
    s, c = x.shape[1:-1], x.shape[-1]
    p = math.prod(s)
    h = x.reshape(x.shape[0], p, c).astype(np.float64)
    if full:
        k = (h @ h.transpose(0, 2, 1) / c).reshape(x.shape[0], *s, *s)
    else:
        k = np.ascontiguousarray((np.einsum("ipc,ipc->pi", h, h) / c).reshape(*s, x.shape[0]))
    return _Branch(None, None, [(k, np.zeros_like(k))], tuple(s), c, False, "the inputs", t_zero=True)


def _pairs(xa, xb, full, take):
    """The input branch of a pair block: Σ = x·x'/C per pair of positions (T = 0), for rows xa
    (b1, *S, C) against columns xb (b2, *S, C): in arrays from ``take(shape)`` (full layout), or as a
    :class:`_Gram` of the inputs (diagonal layout)."""
    s, c = xa.shape[1:-1], xa.shape[-1]
    p = math.prod(s)
    ha, hb = (x.reshape(x.shape[0], p, c).astype(np.float64) for x in (xa, xb))
    n1, n2 = ha.shape[0], hb.shape[0]
    if full:  # K[i, p, q, j] = Σ_c x1[i, p, c] x2[j, q, c]: one GEMM
        k = take((n1, *s, *s, n2))
        np.matmul(ha.reshape(-1, c), hb.transpose(2, 1, 0).reshape(c, p * n2), out=k.reshape(n1 * p, p * n2))
    else:  # formed by the first deferred pass (conv_chain), chunk by chunk, or by materialize
        gram = _Gram(np.ascontiguousarray(ha), np.ascontiguousarray(hb.transpose(1, 2, 0)))
        return _Branch(gram, None, [], tuple(s), c, False, "the inputs", t_zero=True)
    k /= c
    # Zero pages from the OS, not a serial fill: a Conv or pool first (the usual case) never reads them.
    t = np.zeros(k.shape)
    return _Branch(k, t, [], tuple(s), c, False, "the inputs", t_zero=True)


def _result_shape(shape, full):
    """Per-pair shape of the results: () after a readout; (S₀, S₀, S₁, S₁, ...) or S with spatial axes."""
    return tuple(n for n in shape for _ in range(2)) if full else tuple(shape)


def _arrange_pairs(a, shape, full):
    """Pair arrays (b1, *S, *S, b2) / (*S, b1, b2) as (b1, b2, S₀, S₀', S₁, S₁', ...) / (b1, b2, *S)."""
    d = len(shape)
    if full:
        return a.transpose(0, 2 * d + 1, *[ax for i in range(d) for ax in (1 + i, 1 + d + i)])
    return np.moveaxis(a, (d, d + 1), (0, 1))


def _arrange_self(a, shape, full):
    """Self arrays (b, *S, *S) / (*S, b) as (b, S₀, S₀', ...) / (b, *S)."""
    d = len(shape)
    if full:
        return a.transpose(0, *[ax for i in range(d) for ax in (1 + i, 1 + d + i)])
    return np.moveaxis(a, d, 0)
