// Infinite-width NNGP (Sigma) and NTK (Theta) of fully-connected networks.
//
// A network is a list of Ops (its "spec"): Dense layers in 'ntk' or
// 'standard' parameterization and pointwise activations with closed-form dual
// kernels. Conventions are neural-tangents' (stax/linear.py, elementwise.py):
//   input          Sigma = x.x'/d,                      Theta = 0
//   Dense, ntk     Sigma <- W^2 Sigma + b^2,            Theta <- Sigma_new + W^2 Theta
//   Dense, std     Theta <- n_in Sigma + W^2 Theta + c, Sigma <- W^2 Sigma + b^2
//   activation     Sigma <- E[phi(u) phi(v)],           Theta <- Theta E[phi'(u) phi'(v)]
// with (u, v) ~ N(0, [[Sigma11, Sigma12], [Sigma12, Sigma22]]). Sigma11 and
// Sigma22 (the per-point variances at each activation) come from fc_diagonal
// and are passed to fc_tile, which walks all layers for one tile in one pass.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "fastntk/dual.hpp"

#if defined(__GNUC__)
#define FASTNTK_NOINLINE __attribute__((noinline))
#define FASTNTK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FASTNTK_NOINLINE
#define FASTNTK_ALWAYS_INLINE inline
#endif

namespace fastntk {

using idx = std::ptrdiff_t;

// The variances entering one activation for n entries: v1[PerEntry ? j : 0] (the row's) and v2[j]
// (the columns'), and for the ReLU family the columns' scales sd2[j] = sqrt(v2[j]) and inv2[j] =
// 1/sd2[j] (0 where v2[j] = 0), which a tile computes once per column (column_scales); nullptr:
// computed per entry.
struct Variances {
    const double* v1;
    const double* v2;
    const double* sd2;
    const double* inv2;
};

// sd = sqrt(v), inv = 1/sd (0 where v = 0) of n variances.
inline void column_scales(const double* v, idx n, double* sd, double* inv) noexcept {
    for (idx j = 0; j < n; ++j) {
        sd[j] = std::sqrt(v[j]);
        inv[j] = inv_or_zero(sd[j]);
    }
}

// The ReLU family's dual (abrelu_dual's arguments after k, k11, k22) over n entries, with the
// per-point scales of the row computed once and those of the columns read (or computed per entry).
template <bool WithNtk, bool PerEntry, class Dual>
FASTNTK_ALWAYS_INLINE void scaled_pass(double* __restrict k, double* __restrict t, idx n, const Variances& var,
                        const Dual& dual) noexcept {
    const double* __restrict v1 = var.v1;
    const double* __restrict v2 = var.v2;
    if (!PerEntry && var.sd2) {
        const double* __restrict sd2 = var.sd2;
        const double* __restrict inv2 = var.inv2;
        const double sd1 = std::sqrt(v1[0]), inv1 = inv_or_zero(sd1);
        for (idx j = 0; j < n; ++j) {
            double t_dot;
            dual(k[j], v1[0], v2[j], sd1, inv1, sd2[j], inv2[j], t_dot);
            if (WithNtk) t[j] *= t_dot;
        }
        return;
    }
    for (idx j = 0; j < n; ++j) {
        const double sd1 = std::sqrt(v1[PerEntry ? j : 0]), sd2 = std::sqrt(v2[j]);
        double t_dot;
        dual(k[j], v1[PerEntry ? j : 0], v2[j], sd1, inv_or_zero(sd1), sd2, inv_or_zero(sd2), t_dot);
        if (WithNtk) t[j] *= t_dot;
    }
}

// The ops from Exp on, in a function of their own (not inlined): as cases of apply_op itself
// they made the ReLU, erf and GELU passes ~3x slower (GCC, measured), the compiler's inlining
// and vectorisation of the existing cases giving way to the larger function.
template <bool WithNtk, bool PerEntry>
FASTNTK_NOINLINE void apply_nt_op(const Op& op, double* __restrict k, double* __restrict t, idx n,
                                  const Variances& var, double rho_tol) noexcept {
    const double* p = op.p;
    const double* __restrict v1 = var.v1;
    const double* __restrict v2 = var.v2;
    switch (op.kind) {
        case OpKind::Exp: {
            const double a2 = p[0] * p[0], b2 = p[1] * p[1];
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                exp_dual(k[j], v1[PerEntry ? j : 0], v2[j], a2, b2, t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        }
        case OpKind::Gaussian:
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                gaussian_dual(k[j], v1[PerEntry ? j : 0], v2[j], p[0] * p[0], p[1], t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        case OpKind::ExpNormalized:
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                exp_normalized_dual(k[j], v1[PerEntry ? j : 0], v2[j], p[0], p[1], p[2] != 0.0, t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        case OpKind::Rbf:
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                rbf_dual(k[j], v1[PerEntry ? j : 0], v2[j], p[0], t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        case OpKind::Sign:
            scaled_pass<WithNtk, PerEntry>(k, t, n, var, [rho_tol](double& kj, double k11, double k22, double sd11,
                                                                   double inv11, double sd22, double inv22,
                                                                   double& t_dot) {
                sign_dual(kj, k11, k22, sd11, inv11, sd22, inv22, rho_tol, t_dot);
            });
            break;
        case OpKind::Gabor:
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                gabor_dual(k[j], v1[PerEntry ? j : 0], v2[j], t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        case OpKind::Monomial: {
            const int deg = static_cast<int>(p[0]);
            const double n_fact = factorial(deg);
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                monomial_dual(k[j], v1[PerEntry ? j : 0], v2[j], deg, n_fact, t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        }
        case OpKind::RectifiedMonomial: {
            ArcCosine jn, jm;
            arc_cosine_pair(static_cast<int>(p[0]), jn, jm);
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                rectified_monomial_dual(k[j], v1[PerEntry ? j : 0], v2[j], jn, jm, rho_tol, t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        }
        case OpKind::Polynomial: {
            const double m2 = 2.0 * p[2] * p[2], m3 = 6.0 * p[3] * p[3];  // (2 c2)^2/2, (6 c3)^2/6
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                polynomial_dual(k[j], v1[PerEntry ? j : 0], v2[j], p, m2, m3, t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        }
        case OpKind::Hermite: {
            const int deg = static_cast<int>(p[0]);
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                hermite_dual(k[j], v1[PerEntry ? j : 0], v2[j], deg, t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        }
        default:
            break;
    }
}

// Apply op to n entries: k[j] (Sigma12) and t[j] (Theta12, skipped when
// WithNtk is false), with the variances var (see Variances). A row of
// a tile (one x1 point against n x2 points) has PerEntry = false.
// Always inlined: compiled into each SIMD variant of fc_rows (an out-of-line copy would be the
// baseline build's, called from all of them).
template <bool WithNtk, bool PerEntry>
FASTNTK_ALWAYS_INLINE void apply_op(const Op& op, double* __restrict k, double* __restrict t, idx n, const Variances& var,
                     double rho_tol) noexcept {
    const double* p = op.p;
    const double* __restrict v1 = var.v1;
    const double* __restrict v2 = var.v2;
    switch (op.kind) {
        case OpKind::Input:
            for (idx j = 0; j < n; ++j) k[j] *= p[0];
            if (WithNtk) std::fill(t, t + n, 0.0);
            break;
        case OpKind::DenseNtk:
            for (idx j = 0; j < n; ++j) {
                k[j] = p[0] * k[j] + p[1];
                if (WithNtk) t[j] = k[j] + p[0] * t[j];
            }
            break;
        case OpKind::DenseStandard:
            for (idx j = 0; j < n; ++j) {
                if (WithNtk) t[j] = p[2] * k[j] + p[0] * t[j] + p[3];
                k[j] = p[0] * k[j] + p[1];
            }
            break;
        case OpKind::ABRelu: {
            const double half_sq_sum = abrelu_half_sq_sum(p), diff_sq_2pi = abrelu_diff_sq_2pi(p);
            scaled_pass<WithNtk, PerEntry>(k, t, n, var, [=](double& kj, double k11, double k22, double sd11,
                                                             double inv11, double sd22, double inv22,
                                                             double& t_dot) {
                abrelu_dual(kj, k11, k22, sd11, inv11, sd22, inv22, half_sq_sum, diff_sq_2pi, rho_tol, t_dot);
            });
            break;
        }
        case OpKind::Erf:
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                erf_dual(k[j], v1[PerEntry ? j : 0], v2[j], p[0], p[1], p[2], t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        case OpKind::Sin: {
            const double cos2c = std::cos(2.0 * p[2]);
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                sin_dual(k[j], v1[PerEntry ? j : 0], v2[j], p[0], p[1], cos2c, t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        }
        case OpKind::Gelu:
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                gelu_dual(k[j], v1[PerEntry ? j : 0], v2[j], t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        default:  // neural-tangents' other activations, compiled apart (see apply_nt_op)
            apply_nt_op<WithNtk, PerEntry>(op, k, t, n, var, rho_tol);
            break;
    }
}

// Per-point pass: k[i] = Sigma(x_i, x_i) and t[i] = Theta(x_i, x_i) through
// all ops, in place. var[a * ld_var + i] receives the variance entering the
// a-th activation op, which fc_tile needs.
inline void fc_diagonal(double* k, double* t, idx n, const Op* ops, int n_ops, double* var,
                        idx ld_var) noexcept {
    int a = 0;
    for (int l = 0; l < n_ops; ++l) {
        if (is_activation(ops[l].kind)) {
            double* v = var + a * ld_var;
            std::copy(k, k + n, v);
            ++a;
            const Variances var{v, v, nullptr, nullptr};
            if (t) apply_op<true, true>(ops[l], k, t, n, var, 0.0);
            else apply_op<false, true>(ops[l], k, t, n, var, 0.0);
        } else {
            const Variances none{nullptr, nullptr, nullptr, nullptr};
            if (t) apply_op<true, true>(ops[l], k, t, n, none, 0.0);
            else apply_op<false, true>(ops[l], k, t, n, none, 0.0);
        }
    }
}

// Row strides (in elements) of the arrays fc_tile reads and writes.
struct Strides {
    idx sigma, nngp, ntk, var1, var2;
};

// Rows [i0, i1) and columns [j0, j1) of an n1 x n2 tile through all ops, on one thread.
// sigma_in: Sigma12 on entry (the Gram x1.x2 when ops[0] is Input). nngp: Sigma12
// after all ops, or nullptr to discard it. ntk: Theta12 on entry (unless ops[0] is
// Input, which sets it to 0) and on exit, or nullptr for the NNGP alone. sigma_in may
// be the same buffer as nngp, or as ntk when ops[0] is Input: each chunk is read
// before it is written. var1[a * ld.var1 + i], var2[a * ld.var2 + j]: variances entering
// activation a; row strides in ld; scales2[2 a n2 + j], scales2[(2 a + 1) n2 + j]: sqrt(var2) and
// its inverse (column_scales), or nullptr (computed per entry). Each row is walked through all
// ops in cache-sized chunks, so every entry is read and written once whatever the depth.
template <class T>
FASTNTK_SIMD_CLONES void fc_rows(const T* sigma_in, T* nngp, T* ntk, idx i0, idx i1, idx j0, idx j1, idx n2,
                                 const Strides& ld, const double* var1, const double* var2, const double* scales2,
                                 const Op* ops, int n_ops, double rho_tol) noexcept {
    constexpr idx kChunk = 256;
    const bool starts_with_input = n_ops > 0 && ops[0].kind == OpKind::Input;
    double k[kChunk], t[kChunk];
    for (idx i = i0; i < i1; ++i) {
        for (idx c = j0; c < j1; c += kChunk) {
            const idx m = std::min(kChunk, j1 - c);
            const T* s_row = sigma_in + i * ld.sigma + c;
            T* k_row = nngp ? nngp + i * ld.nngp + c : nullptr;
            T* t_row = ntk ? ntk + i * ld.ntk + c : nullptr;
            for (idx j = 0; j < m; ++j) k[j] = static_cast<double>(s_row[j]);
            if (t_row && !starts_with_input)
                for (idx j = 0; j < m; ++j) t[j] = static_cast<double>(t_row[j]);
            int a = 0;
            for (int l = 0; l < n_ops; ++l) {
                Variances var{nullptr, nullptr, nullptr, nullptr};
                if (is_activation(ops[l].kind)) {
                    var.v1 = var1 + a * ld.var1 + i;
                    var.v2 = var2 + a * ld.var2 + c;
                    if (scales2) {
                        var.sd2 = scales2 + 2 * a * n2 + c;
                        var.inv2 = var.sd2 + n2;
                    }
                    ++a;
                }
                if (t_row) apply_op<true, false>(ops[l], k, t, m, var, rho_tol);
                else apply_op<false, false>(ops[l], k, t, m, var, rho_tol);
            }
            if (k_row)
                for (idx j = 0; j < m; ++j) k_row[j] = static_cast<T>(k[j]);
            if (t_row)
                for (idx j = 0; j < m; ++j) t_row[j] = static_cast<T>(t[j]);
        }
    }
}

// An n1 x n2 tile through all ops (fc_rows' arguments), rows in parallel.
template <class T>
void fc_tile(const T* sigma_in, T* nngp, T* ntk, idx n1, idx n2, const Strides& ld, const double* var1,
             const double* var2, const double* scales2, const Op* ops, int n_ops, double rho_tol) noexcept {
#pragma omp parallel for schedule(dynamic, 1)
    for (idx i = 0; i < n1; ++i) fc_rows<T>(sigma_in, nngp, ntk, i, i + 1, 0, n2, n2, ld, var1, var2, scales2, ops,
                                            n_ops, rho_tol);
}

// fc_tile one entry at a time (fc_tile_entry, rows in parallel): the GPU kernels' code compiled for the
// host, which the CPU suite checks against fc_tile (scales2 is not read: each entry computes its own).
template <class T>
void fc_tile_entries(const T* sigma_in, T* nngp, T* ntk, idx n1, idx n2, const Strides& ld, const double* var1,
                     const double* var2, const Op* ops, int n_ops, double rho_tol) noexcept {
#pragma omp parallel for schedule(static)
    for (idx i = 0; i < n1; ++i)
        for (idx j = 0; j < n2; ++j)
            fc_tile_entry<T>(i, j, sigma_in, ld.sigma, nngp, ld.nngp, ntk, ld.ntk, var1, ld.var1, var2, ld.var2, ops,
                             n_ops, rho_tol);
}

// Sides of the sub-tiles of fc_gram_tile: kGramRows rows by as many columns as fill kGramBytes
// (at least kChunk-sized), so that a sub-tile's Gram is still in the core's L2 cache when the
// ops read it, and its GEMM (kGramRows columns of x1 against them) is large enough for BLAS speed.
constexpr idx kGramRows = 64;
constexpr idx kGramBytes = 512 * 1024;

// fc_tile with the Gram computed inside the pass: sub-tile by sub-tile, gram(r0, r1, c0, c1, out,
// ld_out) writes x1[r0:r1] . x2[c0:c1] into out (the sub-tile of sigma, row stride ld_out; a
// single-threaded GEMM, called from every thread at once) and the ops walk it at once, from cache:
// each entry is written to memory once per output instead of once more by the Gram and read back.
// sigma = nngp, or ntk when nngp is nullptr (ops[0] must be Input). upper: skip the sub-tiles
// wholly below the diagonal (column < row), which a symmetric result fills by mirroring.
template <class T, class Gram>
void fc_gram_tile(const Gram& gram, T* sigma, T* nngp, T* ntk, idx n1, idx n2, const Strides& ld,
                  const double* var1, const double* var2, const double* scales2, const Op* ops, int n_ops,
                  double rho_tol, bool upper) noexcept {
    const idx cols = std::max<idx>(256, kGramBytes / static_cast<idx>(kGramRows * sizeof(T)));
    const idx n_r = (n1 + kGramRows - 1) / kGramRows, n_c = (n2 + cols - 1) / cols;
#pragma omp parallel for schedule(dynamic, 1)
    for (idx s = 0; s < n_r * n_c; ++s) {
        const idx r0 = (s / n_c) * kGramRows, r1 = std::min(n1, r0 + kGramRows);
        const idx c0 = (s % n_c) * cols, c1 = std::min(n2, c0 + cols);
        if (upper && c1 <= r0) continue;
        gram(r0, r1, c0, c1, sigma + r0 * ld.sigma + c0, ld.sigma);
        fc_rows<T>(sigma, nngp, ntk, r0, r1, c0, c1, n2, ld, var1, var2, scales2, ops, n_ops, rho_tol);
    }
}

// a[j, i] = a[i, j] for j > i: fill the lower triangle of an n x n matrix
// (row stride ld) from its upper triangle, in cache-sized square blocks.
template <class T>
void mirror_upper(T* a, idx n, idx ld) noexcept {
    constexpr idx kBlock = 64;
    const idx nb = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) if (nb > 1)
    for (idx bi = 0; bi < nb; ++bi) {
        for (idx bj = 0; bj <= bi; ++bj) {
            const idx i1 = std::min(n, (bi + 1) * kBlock), j1 = std::min(n, (bj + 1) * kBlock);
            for (idx i = bi * kBlock; i < i1; ++i)
                for (idx j = bj * kBlock; j < std::min(j1, i); ++j) a[i * ld + j] = a[j * ld + i];
        }
    }
}

}  // namespace fastntk
