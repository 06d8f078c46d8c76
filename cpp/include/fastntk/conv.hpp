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

// conv_window's one-position mode on entries [c0, c0 + len) of every output position of batch a: a
// chunk of each input position is read from memory once and from cache by every tap that reads it.
// act: the C entries of a position are a (C / width, width) tile (rows i of the rows' inputs, columns
// of the columns'), the chunk inside its row i, through ops with var1[o n1 + i], var2[o width + j]
// and scales2 at 2 o width (var2_step = width).
FASTNTK_SIMD_CLONES void conv_one_chunk(const double* k, const double* t, double* k_out, double* t_out, idx a,
                                        idx c0, idx len, idx n, idx C, idx m, const std::int64_t* index, idx taps,
                                        const ConvRule& r, const RowOps* act) noexcept {
    const idx width = act ? act->var2_step : C, n1 = C / width, i = c0 / width, j0 = c0 % width;
    const Strides ld{width, width, width, n1, width};
    for (idx o = 0; o < m; ++o) {
        double* __restrict ok = k_out + (a * m + o) * C + c0;
        double* __restrict ot = t_out + (a * m + o) * C + c0;
        std::fill(ok, ok + len, 0.0);
        if (t) std::fill(ot, ot + len, 0.0);
        for (idx tap = 0; tap < taps; ++tap) {
            const std::int64_t q = index[o * taps + tap];
            if (q < 0) continue;
            const double* __restrict ik = k + (a * n + q) * C + c0;
            for (idx e = 0; e < len; ++e) ok[e] += ik[e];
            if (t) {
                const double* __restrict it = t + (a * n + q) * C + c0;
                for (idx e = 0; e < len; ++e) ot[e] += it[e];
            }
        }
        conv_finish(ok, ot, len, t != nullptr, r);
        if (act) {
            double* tk = k_out + (a * m + o) * C;
            fc_rows<double>(tk, tk, t_out + (a * m + o) * C, i, i + 1, j0, j0 + len, width, ld, act->var1 + o * n1,
                            act->var2 + o * width, act->scales2 + 2 * o * width, act->ops, act->n_ops, act->rho_tol);
        }
    }
}

inline void conv_window(const double* k, const double* t, double* k_out, double* t_out, idx A, idx n, idx C, idx m,
                        bool pair, const std::int64_t* index, idx taps, const ConvRule& r, const RowOps* act) {
    if (!pair) {  // chunks of at most kChunk entries inside one row of width entries (act's tile rows)
        constexpr idx kChunk = 256;  // entries per position in one chunk: n of them stay in L2
        const idx width = act ? act->var2_step : C, per_row = (width + kChunk - 1) / kChunk;
        const idx chunks = C / std::max<idx>(width, 1) * per_row;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
        for (idx a = 0; a < A; ++a)
            for (idx u = 0; u < chunks; ++u) {
                const idx j0 = (u % per_row) * kChunk, c0 = (u / per_row) * width + j0;
                conv_one_chunk(k, t, k_out, t_out, a, c0, std::min(kChunk, width - j0), n, C, m, index, taps, r,
                               act);
            }
        return;
    }
    const idx group = std::max<idx>(1, 256 / C);  // output positions per group: about 256 entries
    std::vector<Piece> pieces;
    std::vector<idx> start;
    tap_pieces(index, m, taps, group, pieces, start);
    const idx row = m * C;
    const Strides ld{row, row, row, A * m, row};
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
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
#pragma omp parallel for schedule(dynamic, 4)
    for (idx r = 0; r < B * n1; ++r) {
        const idx b = r / n1, i = r % n1, off = b * n1 * n2;
        fc_rows<double>(nngp + off, nngp + off, ntk ? ntk + off : nullptr, i, i + 1, 0, n2, n2, ld,
                        var1 + b * n_act * n1, var2 + b * n_act * n2, scales2 + 2 * b * n_act * n2, ops, n_ops,
                        rho_tol);
    }
}

}  // namespace fastntk
