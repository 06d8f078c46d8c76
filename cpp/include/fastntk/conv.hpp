// Block walks of the convolutional kernels: window sums over covariances and batched tiles.
//
// A covariance over pairs of positions is stored with the spatial axes of its two positions
// apart, e.g. (b1, H, W, b2, H, W) for pairs of images. A Conv's kernel rule averages over the
// filter taps with one tap shifting both positions (a shared weight), and over a product of
// axes the taps factor, Σ_(dh, dw) = Σ_dh Σ_dw, so the window sum is one pass per spatial axis:
// window_pair sums along the same axis of both positions with the same tap, window_one along
// one axis (a pool's independent windows, or the same-position layout (H, W, b1, b2)). An
// index table index[o * taps + t] gives the input position that output o reads at tap t
// (stride, padding offset and CIRCULAR wrap applied by the caller; < 0: the zero of SAME
// padding), so one kernel serves every padding and stride.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fastntk/fc.hpp"

namespace fastntk {

// What a window pass does to each sum s at output entry e: scale s + offset + add_scale add[e]
// (add nullptr: no third term) — a Conv's Dense rule fused into its last pass.
struct Affine {
    double scale, offset;
    const double* add;
    double add_scale;

    void finish(double* __restrict dst, idx e, idx n) const noexcept {
        if (add) {
            const double* __restrict a = add + e;
            for (idx c = 0; c < n; ++c) dst[c] = scale * dst[c] + offset + add_scale * a[c];
        } else if (scale != 1.0 || offset != 0.0) {
            for (idx c = 0; c < n; ++c) dst[c] = scale * dst[c] + offset;
        }
    }
};

// out[a, o1, b, o2, c] = f(Σ_t in[a, index[o1, t], b, index[o2, t], c]) over the taps t whose two
// indices are >= 0, taps in order. in (A, n, B, n, C) and out (A, m, B, m, C), contiguous.
inline void window_pair(const double* in, double* out, idx A, idx n, idx B, idx C, idx m,
                        const std::int64_t* index, idx taps, const Affine& f) {
    if (C == 1) {  // the innermost axis itself: a gather along it, taps outermost (index transposed)
        std::vector<std::int64_t> by_tap(static_cast<std::size_t>(taps * m));
        for (idx o = 0; o < m; ++o)
            for (idx t = 0; t < taps; ++t) by_tap[t * m + o] = index[o * taps + t];
        const std::int64_t* tix = by_tap.data();
#pragma omp parallel for collapse(2) schedule(static)
        for (idx a = 0; a < A; ++a) {
            for (idx o1 = 0; o1 < m; ++o1) {
                const std::int64_t* row1 = index + o1 * taps;
                for (idx b = 0; b < B; ++b) {
                    double* __restrict dst = out + ((a * m + o1) * B + b) * m;
                    std::fill(dst, dst + m, 0.0);
                    for (idx t = 0; t < taps; ++t) {
                        if (row1[t] < 0) continue;
                        const double* __restrict base = in + ((a * n + row1[t]) * B + b) * n;
                        const std::int64_t* q = tix + t * m;
                        for (idx o2 = 0; o2 < m; ++o2) dst[o2] += q[o2] >= 0 ? base[q[o2] >= 0 ? q[o2] : 0] : 0.0;
                    }
                    f.finish(dst, ((a * m + o1) * B + b) * m, m);
                }
            }
        }
        return;
    }
#pragma omp parallel for collapse(2) schedule(static)
    for (idx a = 0; a < A; ++a) {
        for (idx o1 = 0; o1 < m; ++o1) {
            const std::int64_t* row1 = index + o1 * taps;
            for (idx b = 0; b < B; ++b) {
                for (idx o2 = 0; o2 < m; ++o2) {
                    const std::int64_t* row2 = index + o2 * taps;
                    double* __restrict dst = out + (((a * m + o1) * B + b) * m + o2) * C;
                    std::fill(dst, dst + C, 0.0);
                    for (idx t = 0; t < taps; ++t) {
                        if (row1[t] < 0 || row2[t] < 0) continue;
                        const double* __restrict src = in + (((a * n + row1[t]) * B + b) * n + row2[t]) * C;
                        for (idx c = 0; c < C; ++c) dst[c] += src[c];
                    }
                    f.finish(dst, (((a * m + o1) * B + b) * m + o2) * C, C);
                }
            }
        }
    }
}

// out[a, o, c] = f(Σ_t in[a, index[o, t], c]) over the taps t with index >= 0. in (A, n, C), out (A, m, C).
inline void window_one(const double* in, double* out, idx A, idx n, idx C, idx m, const std::int64_t* index,
                       idx taps, const Affine& f) noexcept {
#pragma omp parallel for collapse(2) schedule(static)
    for (idx a = 0; a < A; ++a) {
        for (idx o = 0; o < m; ++o) {
            const std::int64_t* row = index + o * taps;
            double* __restrict dst = out + (a * m + o) * C;
            std::fill(dst, dst + C, 0.0);
            for (idx t = 0; t < taps; ++t) {
                if (row[t] < 0) continue;
                const double* __restrict src = in + (a * n + row[t]) * C;
                for (idx c = 0; c < C; ++c) dst[c] += src[c];
            }
            f.finish(dst, (a * m + o) * C, C);
        }
    }
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
