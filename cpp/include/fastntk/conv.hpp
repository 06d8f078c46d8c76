// Block walks of the convolutional kernels: window sums over covariances and batched tiles.
//
// A covariance over pairs of positions is stored with the flattened spatial positions of its two
// inputs apart: (b1, P, P, b2) for a block of pairs of images (the full layout), (P, b1 b2) for the
// same-position covariances (the diagonal layout). A Conv's kernel rule averages over the filter taps
// with one tap shifting both positions (a shared weight); a pool sums each position's window on its
// own. Both are one pass (conv_window): an index table index[o * taps + t] gives the flattened input
// position that output o reads at tap t (strides, padding offsets and CIRCULAR wrap applied by the
// caller; < 0: the zero of SAME padding), so one kernel serves every padding, stride and dimension,
// and the activation after a Conv runs on each output chunk while it is in cache.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastntk/fc.hpp"

namespace fastntk {

// A Conv's kernel rule over a covariance, every filter tap in one pass. With the sums over the taps t
// (one tap moving both positions: index[o1, t] and index[o2, t] both >= 0)
//   s_K[a, o1, o2, c] = Σ_t K[a, index[o1, t], index[o2, t], c]   (pair: in (A, n, n, C), out (A, m, m, C)),
//   s_K[a, o, c]      = Σ_t K[a, index[o, t], c]                  (one position: in (A, n, C), out (A, m, C)),
// and s_T alike, the outputs are K' = k_scale s_K + k_offset and T' = t_from_k s_K + t_scale s_T + t_offset
// (T nullptr: T = 0, the inputs'). Positions are the flattened spatial positions, index (m, taps) the input
// position of output o at tap t (< 0: SAME padding's zero), so every padding, stride and dimension is one loop.
struct ConvRule {
    double k_scale, k_offset, t_from_k, t_scale, t_offset;
};

// At one tap, output positions [out, out + len) read input positions [in, in + len) (of the second position).
struct Piece {
    idx tap, out, in, len;
};

// The pieces of every tap's column of index (maximal runs of consecutive valid entries), cut at multiples
// of `group` output positions and listed group by group: group g's pieces are pieces[start[g], start[g + 1]).
inline void tap_pieces(const std::int64_t* index, idx m, idx taps, idx group, std::vector<Piece>& pieces,
                       std::vector<idx>& start) {
    const idx n_groups = (m + group - 1) / group;
    pieces.clear();
    start.assign(static_cast<std::size_t>(n_groups + 1), 0);
    for (idx g = 0; g < n_groups; ++g) {
        start[g] = static_cast<idx>(pieces.size());
        const idx o_end = std::min(m, (g + 1) * group);
        for (idx t = 0; t < taps; ++t) {
            bool open = false;
            for (idx o = g * group; o < o_end; ++o) {
                const std::int64_t q = index[o * taps + t];
                if (q < 0) {
                    open = false;
                    continue;
                }
                if (open && pieces.back().in + pieces.back().len == q) ++pieces.back().len;
                else pieces.push_back({t, o, static_cast<idx>(q), 1});
                open = true;
            }
        }
    }
    start[n_groups] = static_cast<idx>(pieces.size());
}

// The activation fused after conv_window, one activation (fc_rows). Pair mode: each output row r = (a, o1)
// of the (A m, m C) tile with var1[r] and var2[a var2_step + j], scales2 (column_scales of var2) at
// scales2 + 2 a var2_step: var2_step 0 when all a share the columns' variances. One-position mode
// (conv_one_chunk): var2_step is the width of each position's tile.
struct RowOps {
    const Op* ops;
    int n_ops;
    const double* var1;
    const double* var2;
    const double* scales2;
    idx var2_step;
    double rho_tol;
};

// The rule on n entries: dk, dt hold s_K, s_T (dt's s_T unread without T).
FASTNTK_ALWAYS_INLINE void conv_finish(double* __restrict dk, double* __restrict dt, idx n, bool with_t,
                                       const ConvRule& r) noexcept {
    if (with_t)
        for (idx e = 0; e < n; ++e) {
            const double sk = dk[e];
            dk[e] = r.k_scale * sk + r.k_offset;
            dt[e] = r.t_from_k * sk + r.t_scale * dt[e] + r.t_offset;
        }
    else
        for (idx e = 0; e < n; ++e) {
            const double sk = dk[e];
            dk[e] = r.k_scale * sk + r.k_offset;
            dt[e] = r.t_from_k * sk + r.t_offset;
        }
}

// Everything conv_window does to output row (a, o1) of a pair array, one group of output positions of
// the second position at a time (a group's sums stay in L1 while the taps add into it), then the rule
// and the fused activation on the group.
FASTNTK_SIMD_CLONES void conv_pair_row(const double* k, const double* t, double* k_out, double* t_out, idx a, idx o1,
                                       idx n, idx C, idx m, const std::int64_t* index, idx taps, const Piece* pieces,
                                       const idx* start, idx group, const ConvRule& r, const RowOps* act,
                                       const Strides& ld) noexcept {
    const idx row = m * C, r_out = a * m + o1;
    double* dk = k_out + r_out * row;
    double* dt = t_out + r_out * row;
    const double* k_rows = k + a * n * n * C;
    const double* t_rows = t ? t + a * n * n * C : nullptr;
    const std::int64_t* q1 = index + o1 * taps;
    for (idx g = 0; g * group < m; ++g) {
        const idx e0 = g * group * C, e1 = std::min(m, (g + 1) * group) * C;
        std::fill(dk + e0, dk + e1, 0.0);
        if (t) std::fill(dt + e0, dt + e1, 0.0);
        for (idx u = start[g]; u < start[g + 1]; ++u) {
            const Piece& pc = pieces[u];
            if (q1[pc.tap] < 0) continue;
            const idx len = pc.len * C, src = (q1[pc.tap] * n + pc.in) * C;
            double* __restrict ok = dk + pc.out * C;
            const double* __restrict ik = k_rows + src;
            for (idx e = 0; e < len; ++e) ok[e] += ik[e];
            if (t) {
                double* __restrict ot = dt + pc.out * C;
                const double* __restrict it = t_rows + src;
                for (idx e = 0; e < len; ++e) ot[e] += it[e];
            }
        }
        conv_finish(dk + e0, dt + e0, e1 - e0, t != nullptr, r);
        if (act)
            fc_rows<double>(k_out, k_out, t_out, r_out, r_out + 1, e0, e1, row, ld, act->var1,
                            act->var2 + a * act->var2_step, act->scales2 + 2 * a * act->var2_step, act->ops,
                            act->n_ops, act->rho_tol);
    }
}

// A chunk of one-position arrays: rows [i0, i1) x columns [j0, j1) of every position's (n1, width) tile (rows i
// of the rows' inputs, columns j of the columns'; n1 = 1, width = C without an activation), len =
// (i1 - i0) (j1 - j0) entries per position. zero_left: columns [0, j0) of its rows are not computed (written 0).
struct Chunk {
    idx i0, i1, j0, j1, n1, width;
    bool zero_left;
    idx row() const noexcept { return j1 - j0; }
    idx len() const noexcept { return (i1 - i0) * row(); }
    idx start() const noexcept { return i0 * width + j0; }
};

// Copies the chunk of each of n positions (stride C) into `pack` (stride len, rows of row()): then the taps
// read it from cache at a stride of len, not C (a power of two C maps every position's chunk onto the
// same few cache sets).
inline void pack_positions(const double* a, idx n, idx C, const Chunk& ch, double* __restrict pack) noexcept {
    const idx row = ch.row(), len = ch.len();
    for (idx q = 0; q < n; ++q)
        for (idx i = ch.i0; i < ch.i1; ++i)
            std::copy_n(a + q * C + i * ch.width + ch.j0, row, pack + q * len + (i - ch.i0) * row);
}

// pack_positions' inverse: the packed chunk of n positions back into `a` (stride C).
inline void unpack_positions(const double* __restrict pack, idx n, idx C, const Chunk& ch, double* a) noexcept {
    const idx row = ch.row(), len = ch.len();
    for (idx q = 0; q < n; ++q)
        for (idx i = ch.i0; i < ch.i1; ++i)
            std::copy_n(pack + q * len + (i - ch.i0) * row, row, a + q * C + i * ch.width + ch.j0);
}

// One Conv step on a chunk: for each of the m output positions o, the sums over the taps of the chunk's
// input positions index[o, tap] (ik, it at a stride of in_stride; it nullptr: T = 0), the rule, and act
// (or nullptr) with var1[o n1 + i], var2[o width + j], scales2 at 2 o width; into ok, ot at out_stride.
FASTNTK_ALWAYS_INLINE void conv_step(const double* ik, const double* it, idx in_stride, double* ok, double* ot,
                                     idx out_stride, idx m, const std::int64_t* index, idx taps, const ConvRule& r,
                                     const RowOps* act, const Chunk& ch) noexcept {
    const idx len = ch.len(), row = ch.row();
    const Strides ld{row, row, row, ch.n1, ch.width};
    for (idx o = 0; o < m; ++o) {
        double* __restrict dk = ok + o * out_stride;
        double* __restrict dt = ot + o * out_stride;
        std::fill(dk, dk + len, 0.0);
        if (it) std::fill(dt, dt + len, 0.0);
        for (idx tap = 0; tap < taps; ++tap) {
            const std::int64_t q = index[o * taps + tap];
            if (q < 0) continue;
            const double* __restrict sk = ik + q * in_stride;
            for (idx e = 0; e < len; ++e) dk[e] += sk[e];
            if (it) {
                const double* __restrict st = it + q * in_stride;
                for (idx e = 0; e < len; ++e) dt[e] += st[e];
            }
        }
        conv_finish(dk, dt, len, it != nullptr, r);
        if (act)  // (fc_rows, on copies in its own arrays: apply_op in place on the chunk ran 1.8x slower)
            fc_rows<double>(dk, dk, dt, 0, ch.i1 - ch.i0, 0, row, ch.width, ld, act->var1 + o * ch.n1 + ch.i0,
                            act->var2 + o * ch.width + ch.j0, act->scales2 + 2 * o * ch.width + ch.j0, act->ops,
                            act->n_ops, act->rho_tol);
    }
}

// conv_window's one-position mode on one chunk of batch a.
FASTNTK_SIMD_CLONES void conv_one_chunk(const double* k, const double* t, double* k_out, double* t_out, idx a,
                                        const Chunk& ch, idx n, idx C, idx m, const std::int64_t* index, idx taps,
                                        const ConvRule& r, const RowOps* act, double* __restrict pack) noexcept {
    const idx c0 = ch.start(), len = ch.len();  // (the chunks of conv_window are contiguous)
    pack_positions(k + a * n * C, n, C, ch, pack);
    if (t) pack_positions(t + a * n * C, n, C, ch, pack + n * len);
    conv_step(pack, t ? pack + n * len : nullptr, len, k_out + a * m * C + c0, t_out + a * m * C + c0, C, m, index,
              taps, r, act, ch);
}

// The chunks of C = n1 width entries per position (n1 rows of width, those of act's tiles, or one of C):
// about kChunk entries each, whole rows or part of one. upper: row i needs only columns j >= i (a tile on the
// diagonal of a symmetric kernel), so a chunk from row i0 on starts at column i0 (zero_left).
struct Chunks {
    static constexpr idx kChunk = 256;  // entries per position; packed, n positions of it stay in L2
    std::vector<Chunk> list;
    idx max_len = 0;
    Chunks(idx C, idx width, bool upper = false) {
        width = std::max<idx>(width, 1);
        const idx n1 = C / width;
        for (idx i0 = 0; i0 < n1;) {
            const idx j_start = upper ? std::min(i0, width - 1) : 0, row = width - j_start;
            if (row > kChunk) {
                for (idx j0 = j_start; j0 < width; j0 += kChunk)
                    add({i0, i0 + 1, j0, std::min(width, j0 + kChunk), n1, width, upper && j0 == j_start});
                ++i0;
            } else {
                const idx i1 = std::min(n1, i0 + std::max<idx>(1, kChunk / row));
                add({i0, i1, j_start, width, n1, width, upper});
                i0 = i1;
            }
        }
    }
    void add(const Chunk& ch) {
        list.push_back(ch);
        max_len = std::max(max_len, ch.len());
    }
};

// What conv_chain starts from: arrays k (n, C) and t (n, C) or nullptr (T = 0), or (k nullptr) the Gram of the
// block's inputs, K[q, i, j] = sum_c x1[i, q, c] x2t[q, c, j] / channels (x1 (n1, n, channels), x2t (n, channels,
// width)), formed chunk by chunk in cache (T = 0).
struct ChainInput {
    const double* k;
    const double* t;
    const double* x1;
    const double* x2t;
    idx channels;
};

// The Gram of ChainInput on the chunk, for each of n positions, into `pack` (stride len, rows of row()). Always
// inlined: compiled into each SIMD variant of conv_chain_chunk.
FASTNTK_ALWAYS_INLINE void gram_positions(const ChainInput& in, idx n, const Chunk& ch, double* __restrict pack) noexcept {
    const idx row = ch.row(), len = ch.len(), c = in.channels;
    const double scale = static_cast<double>(c);
    for (idx q = 0; q < n; ++q)
        for (idx i = ch.i0; i < ch.i1; ++i) {
            double* __restrict o = pack + q * len + (i - ch.i0) * row;
            const double* a = in.x1 + (i * n + q) * c;
            const double* __restrict b = in.x2t + q * c * ch.width + ch.j0;
            for (idx j = 0; j < row; ++j) o[j] = a[0] * b[j];
            for (idx u = 1; u < c; ++u)
                for (idx j = 0; j < row; ++j) o[j] += a[u] * b[u * ch.width + j];
            for (idx j = 0; j < row; ++j) o[j] /= scale;
        }
}

// One step of conv_chain: a Conv (or an activation apart from one, as a 1-tap identity window) from n to m
// positions, its rule and optionally its activation (RowOps as in the one-position mode).
struct ChainStep {
    const std::int64_t* index;
    idx n, m, taps;
    ConvRule rule;
    const RowOps* act;
};

// conv_chain on one chunk, buf 4 n_max len entries (two buffers of k and t).
FASTNTK_SIMD_CLONES void conv_chain_chunk(const ChainInput& src, const ChainStep* steps, idx n_steps, idx C,
                                          const Chunk& ch, idx n_max, bool flatten, double* k_out, double* t_out,
                                          double* buf) noexcept {
    const idx len = ch.len(), row = ch.row(), plane = n_max * len;
    double* in = buf;
    double* out = buf + 2 * plane;  // each: k in [0, plane), t in [plane, 2 plane)
    if (src.k) pack_positions(src.k, steps[0].n, C, ch, in);
    else gram_positions(src, steps[0].n, ch, in);
    if (src.t) pack_positions(src.t, steps[0].n, C, ch, in + plane);
    bool with_t = src.t != nullptr;
    for (idx s = 0; s < n_steps; ++s) {
        const ChainStep& st = steps[s];
        conv_step(in, with_t ? in + plane : nullptr, len, out, out + plane, len, st.m, st.index, st.taps, st.rule,
                  st.act, ch);
        with_t = true;
        std::swap(in, out);
    }
    const idx m = steps[n_steps - 1].m;
    if (flatten) {  // the mean over the positions: their sum, then divided by m (Flatten's rule)
        for (idx e = 1; e < m; ++e) {
            double* __restrict sk = in;
            double* __restrict st = in + plane;
            for (idx q = 0; q < len; ++q) {
                sk[q] += in[e * len + q];
                st[q] += in[plane + e * len + q];
            }
        }
        const double p = static_cast<double>(m);
        for (idx i = ch.i0; i < ch.i1; ++i) {
            double* __restrict ok = k_out + i * ch.width;
            double* __restrict ot = t_out + i * ch.width;
            const double* sk = in + (i - ch.i0) * row;
            const double* st = in + plane + (i - ch.i0) * row;
            if (ch.zero_left) {
                std::fill(ok, ok + ch.j0, 0.0);
                std::fill(ot, ot + ch.j0, 0.0);
            }
            for (idx j = 0; j < row; ++j) {
                ok[ch.j0 + j] = sk[j] / p;
                ot[ch.j0 + j] = st[j] / p;
            }
        }
        return;
    }
    unpack_positions(in, m, C, ch, k_out);
    unpack_positions(in + plane, m, C, ch, t_out);
}

// The steps one after another on one-position arrays of C = n1 width entries per position, a chunk of
// entries at a time through all of them in cache (ping-pong buffers): memory traffic is the input (src) and
// the output alone, whatever the depth. The outputs: with flatten, the mean
// over the last step's m positions, k_out, t_out (C,); else every position, (m, C). upper (with flatten): only
// the entries (i, j >= i) of the (n1, width) tile are computed, and those below them are 0 or computed.
inline void conv_chain(const ChainInput& src, const ChainStep* steps, idx n_steps, idx C, idx width, bool flatten,
                       bool upper, double* k_out, double* t_out) {
    const Chunks chunks(C, width, upper && flatten);
    idx n_max = 0;
    for (idx s = 0; s < n_steps; ++s) n_max = std::max({n_max, steps[s].n, steps[s].m});
    const idx count = static_cast<idx>(chunks.list.size());
#pragma omp parallel if (count > 1)
    {
        std::vector<double> buf(static_cast<std::size_t>(4 * n_max * chunks.max_len));
#pragma omp for schedule(dynamic, 1)
        for (idx u = 0; u < count; ++u)
            conv_chain_chunk(src, steps, n_steps, C, chunks.list[u], n_max, flatten, k_out, t_out, buf.data());
    }
}

inline void conv_window(const double* k, const double* t, double* k_out, double* t_out, idx A, idx n, idx C, idx m,
                        bool pair, const std::int64_t* index, idx taps, const ConvRule& r, const RowOps* act) {
    if (!pair) {
        const Chunks chunks(C, act ? act->var2_step : C);
        const idx count = static_cast<idx>(chunks.list.size());
#pragma omp parallel if (A * count > 1)
        {
            std::vector<double> pack(static_cast<std::size_t>(2 * n * chunks.max_len));
#pragma omp for collapse(2) schedule(dynamic, 1)
            for (idx a = 0; a < A; ++a)
                for (idx u = 0; u < count; ++u)
                    conv_one_chunk(k, t, k_out, t_out, a, chunks.list[u], n, C, m, index, taps, r, act, pack.data());
        }
        return;
    }
    const idx group = std::max<idx>(1, 256 / C);  // output positions per group: about 256 entries
    std::vector<Piece> pieces;
    std::vector<idx> start;
    tap_pieces(index, m, taps, group, pieces, start);
    const idx row = m * C;
    const Strides ld{row, row, row, A * m, row};
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (A * m > 1)
    for (idx a = 0; a < A; ++a)
        for (idx o1 = 0; o1 < m; ++o1)
            conv_pair_row(k, t, k_out, t_out, a, o1, n, C, m, index, taps, pieces.data(), start.data(), group, r, act,
                          ld);
}

// B tiles of n1 x n2 stored one after the other, each through all ops in place (fc_rows), the rows
// of all tiles in parallel: tile b reads its variances at var1 + b n_act n1 (rows of n1, one per
// activation), var2 + b n_act n2 and its column scales at scales2 + 2 b n_act n2 (column_scales).
// ntk: Theta12 on entry and exit, or nullptr for the NNGP alone.
inline void fc_tiles(double* nngp, double* ntk, idx B, idx n1, idx n2, const double* var1, const double* var2,
                     const double* scales2, idx n_act, const Op* ops, int n_ops, double rho_tol) noexcept {
    const Strides ld{n2, n2, n2, n1, n2};
#pragma omp parallel for schedule(dynamic, 4) if (B * n1 * n2 >= 4096)  // (one thread for a few entries)
    for (idx r = 0; r < B * n1; ++r) {
        const idx b = r / n1, i = r % n1, off = b * n1 * n2;
        fc_rows<double>(nngp + off, nngp + off, ntk ? ntk + off : nullptr, i, i + 1, 0, n2, n2, ld,
                        var1 + b * n_act * n1, var2 + b * n_act * n2, scales2 + 2 * b * n_act * n2, ops, n_ops,
                        rho_tol);
    }
}

}  // namespace fastntk
