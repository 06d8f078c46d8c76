"""The layer recursion with spatial axes, as explicit position-by-position covariances.

Inputs (N, *S, C), channels last. The state of a branch is the kernel of the joint batch
x = [x1; x2] at every pair of positions, K[i, j, p, q] and T[i, j, p, q] of shape (N, N, P, P)
(positions p of the spatial shape S flattened in C order), and the channel count C of the
finite layer. Every layer is written out as in ``tests/data/cnn/README.md`` (neural-tangents
0.6.5's conventions), with explicit index maps for the windows:

* input: K = Σ_c x[i, p, c] x[j, q, c] / C, T = 0;
* Conv: A[K](p', q') = (1/|F|) Σ_a K̃(idx(p', a), idx(q', a)), one tap a shifting both
  positions (K̃: 0 in SAME padding, wrapped for CIRCULAR), then the Dense rule with fan in C·|F|;
* Pool: K' = M K Mᵀ with M the window matrix (independent taps for the two positions);
  GlobalPool: M a row of ones (÷P for the mean); Flatten: the mean of K(p, p) over p;
* activations: the dual kernels of :func:`.fc.dual` at every (i, j, p, q) with the variances
  K[i, i, p, p] and K[j, j, q, q]; LayerNorm: K / √(V_i(p) V_j(q)), V the variance + eps,
  averaged over the normalised spatial axes.

O(N²·P²) memory: for small cases only (the tests' oracle).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..spec import (Act, Conv, Dense, FanInConcat, FanInProd, FanInSum, FanOut, Flatten, GlobalPool, Identity,
                    LayerNorm, Parallel, Pool, Repeat, Serial, window_plan)
from .fc import dual, rho_tolerance

__all__ = ["conv_kernels", "tap_index"]


def tap_index(sizes, window, strides, padding):
    """idx[p', a]: the flat input position that output position p' reads at window tap a, or P
    (one past the last position: the zero of SAME padding). Shape (P_out, |window|)."""
    plan = window_plan(sizes, window, strides, padding)
    out_shape = tuple(n for n, _ in plan)
    idx = np.empty((math.prod(out_shape), math.prod(window)), dtype=np.int64)
    for po, o in enumerate(itertools.product(*map(range, out_shape))):
        for a, tap in enumerate(itertools.product(*map(range, window))):
            pos = [oi * s + ai - lo for oi, ai, s, (_, lo) in zip(o, tap, strides, plan)]
            if padding == "CIRCULAR":
                pos = [q % n for q, n in zip(pos, sizes)]
            inside = all(0 <= q < n for q, n in zip(pos, sizes))
            idx[po, a] = np.ravel_multi_index(pos, sizes) if inside else math.prod(sizes)
    return idx, out_shape


class _State:
    """K, T (N, N, P, P) of one branch, its spatial shape and channel count."""

    def __init__(self, nngp, ntk, shape, width):
        self.nngp, self.ntk, self.shape, self.width = nngp, ntk, shape, width


def conv_kernels(x1, x2, network):
    """NNGP Σ and NTK Θ of ``network`` for inputs x1 (N1, *S, C) and x2 (N2, *S', C) or None (x1).

    Returns ``(nngp, ntk)`` of shape (N1, N2) when the network ends without spatial axes, else
    (N1, N2, S₀, S₀', S₁, S₁', ...) (positions of x1 and x2 interleaved), float64.
    """
    x1 = np.asarray(x1, dtype=np.float64)
    x = x1 if x2 is None else np.concatenate([x1, np.asarray(x2, dtype=np.float64)])
    n, shape, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    h = x.reshape(n, -1, c)
    k = np.einsum("ipc,jqc->ijpq", h, h) / c
    (state,) = _kernels(network, [_State(k, np.zeros_like(k), shape, c)], rho_tolerance(c, np.float64))
    n1 = x1.shape[0]
    cols = slice(0, n1) if x2 is None else slice(n1, n)
    nngp, ntk = state.nngp[:n1, cols], state.ntk[:n1, cols]
    if not state.shape:
        return nngp[..., 0, 0], ntk[..., 0, 0]
    d = len(state.shape)
    order = (0, 1, *[a for i in range(d) for a in (2 + i, 2 + d + i)])
    return tuple(a.reshape(*a.shape[:2], *state.shape, *state.shape).transpose(order) for a in (nngp, ntk))


def _variances(k):
    """K[i, i, p, p]: (N, P)."""
    return np.einsum("iipp->ip", k)


def _kernels(node, states, rho_tol):
    if isinstance(node, Serial):
        for child in node.layers:
            states = _kernels(child, states, rho_tol)
        return states
    if isinstance(node, Parallel):
        return [_kernels(child, [s], rho_tol)[0] for child, s in zip(node.layers, states)]
    if isinstance(node, Repeat):
        for _ in range(node.n):
            states = _kernels(node.layer, states, rho_tol)
        return states
    if isinstance(node, FanOut):
        return states * node.num
    if isinstance(node, FanInSum):  # independent branches: covariances add
        return [_State(sum(s.nngp for s in states), sum(s.ntk for s in states), states[0].shape, states[0].width)]
    if isinstance(node, FanInProd):  # Σ = Πᵢ Σᵢ, Θ = Σᵢ Θᵢ Πⱼ≠ᵢ Σⱼ
        nngp = math.prod(s.nngp for s in states)
        ntk = sum(s.ntk * math.prod(r.nngp for j, r in enumerate(states) if j != i) for i, s in enumerate(states))
        return [_State(nngp, ntk, states[0].shape, states[0].width)]
    if isinstance(node, FanInConcat):  # channels: a neuron is one of branch b's n_b
        w = [s.width for s in states]
        return [_State(sum(wb * s.nngp for wb, s in zip(w, states)) / sum(w),
                       sum(wb * s.ntk for wb, s in zip(w, states)) / sum(w), states[0].shape, sum(w))]
    (s,) = states
    if isinstance(node, Dense):
        return [_dense(node, s.nngp, s.ntk, s.width, s.shape, node.width)]
    if isinstance(node, Conv):
        idx, out_shape = tap_index(s.shape, node.filter_shape, node.strides, node.padding)

        def average(k):  # (1/|F|) Σ_a K̃(idx(p', a), idx(q', a))
            k = np.pad(k, [(0, 0), (0, 0), (0, 1), (0, 1)])  # index P: the zero padding
            return sum(k[:, :, idx[:, a][:, None], idx[:, a][None, :]] for a in range(idx.shape[1])) / idx.shape[1]

        return [_dense(node, average(s.nngp), average(s.ntk), node.fan_in(s.width), out_shape, node.width)]
    if isinstance(node, (Pool, GlobalPool)):
        m, out_shape = _pool_matrix(node, s.shape)
        return [_State(*(np.einsum("ap,ijpq,bq->ijab", m, k, m) for k in (s.nngp, s.ntk)), out_shape, s.width)]
    if isinstance(node, Flatten):
        return [_State(*(np.einsum("ijpp->ij", k)[..., None, None] / k.shape[2] for k in (s.nngp, s.ntk)), (),
                       s.width * math.prod(s.shape))]
    if isinstance(node, Act):
        v = _variances(s.nngp)
        sigma, t_dot = dual(node.activation.dual, s.nngp, v[:, None, :, None], v[None, :, None, :], rho_tol)
        return [_State(sigma, s.ntk * t_dot, s.shape, s.width)]
    if isinstance(node, LayerNorm):
        d = len(s.shape)
        spatial = tuple(a % (d + 2) for a in node.axis if a % (d + 2) not in (0, d + 1))  # axes of (N, *S)
        v = (_variances(s.nngp) + node.eps).reshape(-1, *s.shape)
        v = np.broadcast_to(v.mean(axis=spatial, keepdims=True), v.shape).reshape(v.shape[0], -1)
        scale = np.sqrt(v[:, None, :, None] * v[None, :, None, :])
        return [_State(s.nngp / scale, s.ntk / scale, s.shape, s.width)]
    if isinstance(node, Identity):
        return states
    raise NotImplementedError(f"no convolutional kernel rule for {type(node).__name__}")


def _dense(layer, k, t, fan_in, shape, width):
    """The Dense rule on (averaged) covariances: 'ntk' K' = W²K + b², T' = K' + W²T; 'standard'
    T' = fan_in·K + W²T + [bias], K' = W²K + b²."""
    b2 = 0.0 if layer.b_std is None else layer.b_std**2
    nngp = layer.W_std**2 * k + b2
    if layer.parameterization == "ntk":
        ntk = nngp + layer.W_std**2 * t
    else:
        n_in = layer.n_in(fan_in) if isinstance(layer, Dense) else fan_in
        ntk = n_in * k + layer.W_std**2 * t + (0.0 if layer.b_std is None else 1.0)
    return _State(nngp, ntk, shape, width)


def _pool_matrix(layer, shape):
    """M (P_out, P): output position p' = Σ over its window (÷ window size or in-input count for
    'avg'); a GlobalPool's single row. Returns (M, output spatial shape)."""
    p = math.prod(shape)
    if isinstance(layer, GlobalPool):
        return np.full((1, p), 1.0 / p if layer.kind == "avg" else 1.0), ()
    idx, out_shape = tap_index(shape, layer.window_shape, layer.strides, layer.padding)
    m = np.zeros((idx.shape[0], p + 1))
    for a in range(idx.shape[1]):
        np.add.at(m, (np.arange(idx.shape[0]), idx[:, a]), 1.0)
    m = m[:, :p]
    if layer.kind == "avg":
        m /= m.sum(1, keepdims=True) if layer.normalize_edges else idx.shape[1]
    return m, out_shape
