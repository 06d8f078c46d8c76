"""Structured derivatives: the fast empirical NTK of fastntk networks (implementation 3).

A Dense layer z = c·h W + β·b contributes (c² A Aʹᵀ + β²) ∘ (G Gʹᵀ) to the empirical NTK, with
A the layer inputs and G = ∂f/∂z the back-propagated output sensitivities (Novak et al. 2022,
arXiv:2206.08720, §3). The forward and backward passes run once per input set; the N1×N2
products are then formed tile by tile (upper-triangle tiles only when x2 is None). G is kept
factored where it can be: the identity at the readout, V ∘ D one activation below it.
"""

from __future__ import annotations

import numpy as np

from . import _memory
from ._net import Dense


# --------------------------------------------------------------------------- backward
# G-states of ∂f_a/∂z (N, O, w): ("eye",) G[i,a,k] = δ_ak; ("fact", V, D) G[i,a,k] = V[a,k]·D[i,k]
# (D None = ones); ("dense", G). The readout is "eye", one activation below it "fact".
def _back_dense(state, cW):
    if state[0] == "eye":
        return ("fact", cW.T, None)
    if state[0] == "fact":
        V, D = state[1], state[2]
        if D is None:
            return ("fact", V @ cW.T, None)
        state = ("dense", _materialize(state, D.shape[0]))
    G = state[1]
    n, o, w = G.shape
    return ("dense", (G.reshape(n * o, w) @ cW.T).reshape(n, o, cW.shape[0]))


def _back_act(state, dphi, n_out):
    if state[0] == "eye":
        return ("fact", np.eye(n_out, dtype=dphi.dtype), dphi)
    if state[0] == "fact":
        return ("fact", state[1], dphi if state[2] is None else state[2] * dphi)
    G = state[1]  # a fresh array from _back_dense: scale in place
    G *= dphi[:, None, :]
    return ("dense", G)


def _materialize(state, n):
    V, D = state[1], state[2]
    if D is None:
        return np.broadcast_to(V, (n, *V.shape)).copy()
    return V[None, :, :] * D[:, None, :]


def _features(net, params, x, readout=None):
    """Per Dense layer: (A inputs (N, fan_in), c², β² or None, G-state); and f (N, O)."""
    if net.branched:
        return net.features(params, x, readout)
    f, inputs = net.forward(params, x)
    layers = net.bind(params)
    first = next(k for k, L in enumerate(layers) if isinstance(L, Dense))
    state = ("eye",) if readout is None else ("fact", readout, None)
    n_out = f.shape[1]
    feats = []
    for k in range(len(layers) - 1, first - 1, -1):
        L, h = layers[k], inputs[k]
        if isinstance(L, Dense):
            feats.append((h, L.c * L.c, None if L.b is None else L.beta * L.beta, state))
            if k > first:
                state = _back_dense(state, L.c * L.W)
        else:
            state = _back_act(state, L.dphi(h), n_out)
    return feats[::-1], f


def _feature_bytes(layers, n, n_out, mode, readout, itemsize):
    """Bytes that _features holds for n points: f, every layer input (N, width), and per Dense layer
    its G-state by kind (identity: none; V ∘ D: D (N, w); dense: (N, O, w); 'full' densifies all).
    A branched network's are ``Net.feature_bytes``."""
    width = next(L.W.shape[0] for L in layers if isinstance(L, Dense))
    in_widths = []
    for L in layers:
        in_widths.append(width)
        width = L.W.shape[1] if isinstance(L, Dense) else width
    per_row, kind = n_out, "eye" if readout is None else "fact0"  # fact0: V ∘ D with D = ones
    for L, w_in in zip(layers[::-1], in_widths[::-1]):
        per_row += w_in
        if isinstance(L, Dense):
            w = L.W.shape[1]
            g = {"eye": 0, "fact0": 0, "fact": w, "dense": n_out * w}[kind]
            per_row += n_out * w if mode == "full" and kind != "eye" else g
            kind = "dense" if kind in ("fact", "dense") else "fact0"
        else:
            kind = "dense" if kind == "dense" else "fact"
    return n * per_row * itemsize


def _slice_state(state, rows):
    if state[0] == "eye":
        return state
    if state[0] == "fact":
        return ("fact", state[1], None if state[2] is None else state[2][rows])
    return ("dense", state[1][rows])


# --------------------------------------------------------------------------- structured contraction
def _ones_if_none(D, n, w, dtype):
    return np.ones((n, w), dtype) if D is None else D


def _add_layer(acc, mode, M, s1, s2, n_out, scratch):
    """acc += M ∘ (G1 G2ᵀ) for one layer; acc layout: trace (T, N2), diag (O, T, N2), full (T, O, N2, O).

    M (T, N2) may be overwritten; ``scratch(shape)`` returns a reusable buffer for the G Gram.
    """
    T, N2 = M.shape
    if s1[0] == "eye":  # readout: G1 G2ᵀ = I_O
        if mode == "trace":
            M *= n_out
            acc += M
        elif mode == "diag":
            acc += M[None]
        else:
            r = np.arange(n_out)
            acc[:, r, :, r] += M[None]
        return
    if mode == "full":  # both states dense (materialised once by _structured)
        G1, G2 = s1[1], s2[1]
        S = np.matmul(G1.reshape(T * n_out, -1), G2.reshape(N2 * n_out, -1).T, out=scratch((T * n_out, N2 * n_out)))
        S = S.reshape(T, n_out, N2, n_out)
        S *= M[:, None, :, None]
        acc += S
        return
    S = scratch((T, N2))
    if s1[0] == "fact":  # G_a = V_a ∘ D: Σ_a G1_a G2_aᵀ = (D1 diag(Σ_a V_a²)) D2ᵀ
        V, w, dt = s1[1], s1[1].shape[1], M.dtype
        D1, D2 = _ones_if_none(s1[2], T, w, dt), _ones_if_none(s2[2], N2, w, dt)
        weights = [(V * V).sum(0)] if mode == "trace" else list(V * V)
        for a, wa in enumerate(weights):
            np.matmul(D1 * wa, D2.T, out=S)
            S *= M
            (acc if mode == "trace" else acc[a])[...] += S
        return
    G1, G2 = s1[1], s2[1]
    if mode == "trace":
        np.matmul(G1.reshape(T, -1), G2.reshape(N2, -1).T, out=S)
        S *= M
        acc += S
    else:
        for a in range(n_out):
            np.matmul(G1[:, a, :], G2[:, a, :].T, out=S)
            S *= M
            acc[a] += S


def _dense_feats(feats, n):
    return [(h, c2, b2, s if s[0] != "fact" else ("dense", _materialize(s, n))) for h, c2, b2, s in feats]


class _Scratch:
    """One flat buffer handed out as C-contiguous arrays of any shape (GEMM out= targets)."""

    def __init__(self, dtype):
        self.dtype, self.buf = dtype, np.empty(0, dtype)

    def __call__(self, shape):
        size = int(np.prod(shape))
        if self.buf.size < size:
            self.buf = np.empty(size, self.dtype)
        return self.buf[:size].reshape(shape)


def _store(out, acc, rows, cols, mode, sym):
    """Write a tile (layout of _add_layer) to out[rows, cols]; with sym also its mirror out[cols, rows]."""
    to_out = {"trace": (0, 1), "diag": (1, 2, 0), "full": (0, 2, 1, 3)}[mode]
    if sym:  # Θ(x_j, x_i)_ba = Θ(x_i, x_j)_ab
        out[cols, rows] = acc.transpose({"trace": (1, 0), "diag": (2, 1, 0), "full": (2, 0, 3, 1)}[mode])
    out[rows, cols] = acc.transpose(to_out)
    if sym:  # the diagonal block was written twice: make it exactly symmetric (lower ← upper)
        blk = out[rows, rows]
        il = np.tril_indices(rows.stop - rows.start, -1)
        blk[il] = blk.transpose({"trace": (1, 0), "diag": (1, 0, 2), "full": (1, 0, 3, 2)}[mode])[il]


def structured(net, params, x1, x2, mode, readout=None, block_rows=None):
    """Kernel of x1 vs x2 (None: x1) in mode 'trace' (N1, N2, summed over outputs), 'diag' or 'full'.

    The memory (result, features, one tile) is checked first. The forward and backward passes then
    run once per input set (A_l and the factored G_l for all rows); tiles of rows only form the
    N1×N2 products. With x2 None only upper-triangle tiles are computed and mirrored.
    """
    sym = x2 is None
    layers = net.bind(params)
    n_out = net.out_dim if readout is None else readout.shape[0]
    N1, N2, dtype = x1.shape[0], x1.shape[0] if sym else x2.shape[0], x1.dtype
    shape = _memory.result_shape(mode, N1, N2, n_out)
    T = _memory.tile_rows(N1, N2, mode, n_out, dtype.itemsize, sym, block_rows)
    n_rows = N1 if sym else N1 + N2
    features = (net.feature_bytes(params, x1, n_rows, n_out) if net.branched else
                _feature_bytes(layers, n_rows, n_out, mode, readout, dtype.itemsize))
    work = features + _memory.tile_bytes(min(T, N1), N2, mode, n_out, dtype.itemsize)
    _memory.check(f"the {mode} empirical NTK", shape, dtype, work)
    feats1, f1 = _features(net, params, x1, readout)
    feats2, f2 = (feats1, f1) if sym else _features(net, params, x2, readout)
    dtype = f1.dtype
    if mode == "full":  # dense G on both sides, formed once
        feats1 = _dense_feats(feats1, N1)
        feats2 = feats1 if sym else _dense_feats(feats2, N2)
    out = np.empty(shape, dtype=dtype)
    scratch_m, scratch_s = _Scratch(dtype), _Scratch(dtype)
    for r0 in range(0, N1, T):
        rows = slice(r0, min(N1, r0 + T))
        cols = slice(r0 if sym else 0, N2)
        t, n = rows.stop - rows.start, cols.stop - cols.start
        acc = np.zeros({"trace": (t, n), "diag": (n_out, t, n), "full": (t, n_out, n, n_out)}[mode], dtype)
        for (h1, c2, b2, s1), (h2, _, _, s2) in zip(feats1, feats2):
            M = np.matmul(h1[rows], h2[cols].T, out=scratch_m((t, n)))  # gemm, separate operands
            M *= c2
            if b2 is not None:
                M += b2
            _add_layer(acc, mode, M, _slice_state(s1, rows), _slice_state(s2, cols), n_out, scratch_s)
        _store(out, acc, rows, cols, mode, sym)
    return out
