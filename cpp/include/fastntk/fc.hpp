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

#include "fastntk/math.hpp"

namespace fastntk {

using idx = std::ptrdiff_t;

enum class OpKind : int { Input = 0, DenseNtk = 1, DenseStandard = 2, ABRelu = 3, Erf = 4, Sin = 5, Gelu = 6 };

// One layer. Parameters by kind:
//   Input          p = {1/d}
//   DenseNtk       p = {W_std^2, b_std^2}
//   DenseStandard  p = {W_std^2, b_std^2, n_in, c}  (c = 1 with a bias, 0 without)
//   ABRelu         p = {a, b}     phi(x) = a min(x, 0) + b max(x, 0)
//   Erf            p = {a, b, c}  phi(x) = a erf(b x) + c
//   Sin            p = {a, b, c}  phi(x) = a sin(b x + c)
//   Gelu           p = {}         phi(x) = x Phi(x)
struct Op {
    OpKind kind;
    double p[4];
};

inline bool is_activation(OpKind k) noexcept { return k >= OpKind::ABRelu; }

constexpr double kPi = 3.14159265358979323846;

// Dual kernels: given Sigma12 = k and the variances k11, k22, return
// E[phi(u) phi(v)] in k and E[phi'(u) phi'(v)] in t_dot.
//
// Exact over the whole float range (DESIGN §2): no formula forms the product
// k11 k22, which overflows (or underflows) long before the kernels do. What depends
// on k11 alone is hoisted out of a row of a tile (k11 fixed) by the compiler, so per
// entry each dual kernel costs about the square roots and divisions of the product form.

// ABRelu (Cho & Saul 2009, arc-cosine kernel of degree 0 and 1):
//   s = sqrt(k11 k22 - k^2), theta = atan2(s, k),
//   Sigma' = (a-b)^2/(2 pi) s + [(a^2+b^2)/2 - (a-b)^2 theta/(2 pi)] k,
//   T_dot  = (a^2+b^2)/2 - (a-b)^2 theta/(2 pi).
// s and theta are homogeneous, so they are computed on k11 4^-h1, k22 4^-h2 (both in
// [1/2, 2)) and k 2^-(h1+h2), and s is scaled back: powers of two, exact, so the product
// form rounds as it would without the scaling and never overflows or underflows.
// theta = pi/2 where s = k = 0 (a zero-variance point), as neural-tangents. rho = 1
// exactly where k = k11 = k22 (coincident points; a fused multiply-add would leave
// its rounding error in s^2).
// 1 - rho^2 <= rho_tol is taken as rho = +-1 exactly: T_dot is first order in
// theta, and theta ~ sqrt(1 - rho^2) turns the rounding error of the Gram
// entries into an error of sqrt(eps) at coincident points, whose exact theta
// is 0. Sigma' is third order in theta there and does not change.
inline void abrelu_dual(double& k, double k11, double k22, double half_sq_sum, double diff_sq_2pi,
                        double rho_tol, double& t_dot) noexcept {
    double down1, up1, down2, up2;
    quarter_scale(k11, down1, up1);
    quarter_scale(k22, down2, up2);
    const double prod = (k11 * down1 * down1) * (k22 * down2 * down2);  // k11 k22 4^-(h1+h2)
    const double kn = k * (down1 * down2);                               // k 2^-(h1+h2)
    double s2 = prod - kn * kn;
    s2 = (s2 > rho_tol * prod && !(k == k11 && k == k22)) ? s2 : 0.0;
    const double sn = std::sqrt(s2);
    double theta = atan2_v(sn, kn);
    theta = (s2 == 0.0 && kn == 0.0) ? 0.5 * kPi : theta;
    t_dot = half_sq_sum - diff_sq_2pi * theta;
    k = diff_sq_2pi * (sn * up1 * up2) + t_dot * k;
}

// 1/k11, or 0 for a zero-variance point (whose Sigma12 is 0).
inline double inv_or_zero(double v) noexcept { return v > 0.0 ? 1.0 / v : 0.0; }

// Erf and GELU are written with r = k22 (1 - rho^2) = k22 - k^2/k11, rho =
// k/sqrt(k11 k22) (>= 0 up to rounding; <= k22, so it does not overflow), given
// inv11 = 1/k11, and with quantities normalised by the first point's variance k11.
// r = 0 exactly at coincident points (k = k11 = k22), whose rho is exactly 1.
inline double residual(double k, double k11, double k22, double inv11) noexcept {
    const double r = k22 - k * (k * inv11);
    return (k == k11 && k == k22) ? 0.0 : r;
}

// Erf (Williams 1997): with A = b^2 Sigma and den = sqrt((1 + 2 A11)(1 + 2 A22) - 4 A12^2),
//   Sigma' = a^2 (2/pi) atan2(2 A12, den) + c^2,  T_dot = a^2 b^2 (4/pi) / den.
// With e1 = 1/(1 + 2 A11), t1^2 = 2 A11 e1 and q1 = sqrt(1 + 2 A11):
//   den^2 = 1 + 2 A11 + 2 A22 + 4 b^4 k11 r = q1^2 w^2,  w^2 = 1 + 2 b^2 e1 k22 + 2 b^2 t1^2 r,
//   atan2(2 A12, den) = atan2(2 b^2 k/q1, w).
// Every term of w^2 is >= 0 (r is clamped at 0): no cancellation at coincident
// points (there den = sqrt(1 + 4 A)), where the product form loses ~log10(K) digits
// for inputs of large norm; and nothing overflows.
inline void erf_dual(double& k, double k11, double k22, double a, double b, double c,
                     double& t_dot) noexcept {
    const double b2 = b * b;
    const double a11 = 2.0 * b2 * k11, e1 = 1.0 / (1.0 + a11), inv_q1 = std::sqrt(e1);
    double r = residual(k, k11, k22, inv_or_zero(k11));
    r = r < 0.0 ? 0.0 : r;
    const double w = std::sqrt(1.0 + 2.0 * b2 * e1 * k22 + 2.0 * b2 * (a11 * e1) * r);  // den/q1
    t_dot = a * a * b2 * (4.0 / kPi) * inv_q1 / w;
    k = a * a * (2.0 / kPi) * atan2_v(2.0 * b2 * inv_q1 * k, w) + c * c;
}

// Sin: with S = k11 + k22,
//   Sigma' = a^2/2 [exp(b^2(-S/2 + k)) - cos(2c) exp(b^2(-S/2 - k))],
//   T_dot  = a^2 b^2/2 [exp(b^2(-S/2 + k)) + cos(2c) exp(b^2(-S/2 - k))].
// Both exponents are <= 0 (|k| <= sqrt(k11 k22) <= S/2); rounding above 0 is
// clamped (a select, so NaN passes). S/2 = k11/2 + k22/2 does not overflow.
inline void sin_dual(double& k, double k11, double k22, double a, double b, double cos2c,
                     double& t_dot) noexcept {
    const double b2 = b * b;
    const double half_s = 0.5 * k11 + 0.5 * k22;
    const double xp = b2 * (k - half_s), xm = -b2 * (k + half_s);
    const double ep = std::exp(xp > 0.0 ? 0.0 : xp), em = std::exp(xm > 0.0 ? 0.0 : xm);
    t_dot = 0.5 * a * a * b2 * (ep + cos2c * em);
    k = 0.5 * a * a * (ep - cos2c * em);
}

// Gelu, exact x Phi(x) (neural-tangents stax.Gelu(approximate=False)): with
// P = k11 k22, P1 = (k11 + 1)(k22 + 1), D^2 = P1 - k^2, A = atan2(k, D),
//   Sigma' = [(k^2 + P D^2)/(P1 D) + k A]/(2 pi) + k/4,
//   T_dot  = k/(2 pi D) [1/D^2 + (1 - P)/P1 + 1] + 1/4 + A/(2 pi).
// With e = 1/(1 + k), t1^2 = k11 e1, q1 = sqrt(1 + k11), kappa = k/q1, as for erf:
//   D^2 = 1 + k11 + k22 + k11 r = q1^2 w^2,  w^2 = 1 + e1 k22 + t1^2 r  (>= 1),
//   k^2/(P1 D) = kappa^2 e2/(q1 w),  P D/P1 = t1^2 q1 w k22 e2,  (1 - P)/P1 + 1 = e1 + e2,
//   k/D = kappa/w,  1/D^2 = e1/w^2,  A = atan2(kappa, w).
inline void gelu_dual(double& k, double k11, double k22, double& t_dot) noexcept {
    const double e1 = 1.0 / (1.0 + k11), inv_q1 = std::sqrt(e1), t1_sq = k11 * e1;
    double r = residual(k, k11, k22, inv_or_zero(k11));
    r = r < 0.0 ? 0.0 : r;
    const double e2 = 1.0 / (1.0 + k22);
    const double w = std::sqrt(1.0 + e1 * k22 + t1_sq * r), inv_w = 1.0 / w;
    const double kappa = k * inv_q1;
    const double ang = atan2_v(kappa, w);
    t_dot = kappa * inv_w / (2.0 * kPi) * (e1 * inv_w * inv_w + e1 + e2) + 0.25 + ang / (2.0 * kPi);
    k = (kappa * (kappa * inv_q1) * e2 * inv_w + t1_sq / inv_q1 * w * (k22 * e2) + k * ang) / (2.0 * kPi) +
        0.25 * k;
}

// Apply op to n entries: k[j] (Sigma12) and t[j] (Theta12, skipped when
// WithNtk is false), with variances v1[PerEntry ? j : 0] and v2[j]. A row of
// a tile (one x1 point against n x2 points) has PerEntry = false.
template <bool WithNtk, bool PerEntry>
inline void apply_op(const Op& op, double* __restrict k, double* __restrict t, idx n,
                     const double* __restrict v1, const double* __restrict v2, double rho_tol) noexcept {
    const double* p = op.p;
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
            const double half_sq_sum = 0.5 * (p[0] * p[0] + p[1] * p[1]);
            const double diff_sq_2pi = (p[0] - p[1]) * (p[0] - p[1]) / (2.0 * kPi);
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                abrelu_dual(k[j], v1[PerEntry ? j : 0], v2[j], half_sq_sum, diff_sq_2pi, rho_tol, t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
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
            if (t) apply_op<true, true>(ops[l], k, t, n, v, v, 0.0);
            else apply_op<false, true>(ops[l], k, t, n, v, v, 0.0);
        } else {
            if (t) apply_op<true, true>(ops[l], k, t, n, nullptr, nullptr, 0.0);
            else apply_op<false, true>(ops[l], k, t, n, nullptr, nullptr, 0.0);
        }
    }
}

// Row strides (in elements) of the arrays fc_tile reads and writes.
struct Strides {
    idx sigma, nngp, ntk, var1, var2;
};

// Tile pass over an n1 x n2 tile.
// sigma_in: Sigma12 on entry (the Gram x1.x2 when ops[0] is Input). nngp: Sigma12
// after all ops, or nullptr to discard it. ntk: Theta12 on entry (unless ops[0] is
// Input, which sets it to 0) and on exit, or nullptr for the NNGP alone. sigma_in may
// be the same buffer as nngp, or as ntk when ops[0] is Input: each chunk is read
// before it is written. var1[a * ld.var1 + i], var2[a * ld.var2 + j]: variances entering
// activation a; row strides in ld. Rows run in parallel; each row is walked through all ops in
// cache-sized chunks, so every entry is read and written once whatever the depth.
template <class T>
FASTNTK_SIMD_CLONES void fc_tile(const T* sigma_in, T* nngp, T* ntk, idx n1, idx n2, const Strides& ld,
                                 const double* var1, const double* var2, const Op* ops, int n_ops,
                                 double rho_tol) noexcept {
    constexpr idx kChunk = 256;
    const bool starts_with_input = n_ops > 0 && ops[0].kind == OpKind::Input;
#pragma omp parallel for schedule(dynamic, 1)
    for (idx i = 0; i < n1; ++i) {
        double k[kChunk], t[kChunk];
        for (idx j0 = 0; j0 < n2; j0 += kChunk) {
            const idx m = std::min(kChunk, n2 - j0);
            const T* s_row = sigma_in + i * ld.sigma + j0;
            T* k_row = nngp ? nngp + i * ld.nngp + j0 : nullptr;
            T* t_row = ntk ? ntk + i * ld.ntk + j0 : nullptr;
            for (idx j = 0; j < m; ++j) k[j] = static_cast<double>(s_row[j]);
            if (t_row && !starts_with_input)
                for (idx j = 0; j < m; ++j) t[j] = static_cast<double>(t_row[j]);
            int a = 0;
            for (int l = 0; l < n_ops; ++l) {
                const double* v1 = nullptr;
                const double* v2 = nullptr;
                if (is_activation(ops[l].kind)) {
                    v1 = var1 + a * ld.var1 + i;
                    v2 = var2 + a * ld.var2 + j0;
                    ++a;
                }
                if (t_row) apply_op<true, false>(ops[l], k, t, m, v1, v2, rho_tol);
                else apply_op<false, false>(ops[l], k, t, m, v1, v2, rho_tol);
            }
            if (k_row)
                for (idx j = 0; j < m; ++j) k_row[j] = static_cast<T>(k[j]);
            if (t_row)
                for (idx j = 0; j < m; ++j) t_row[j] = static_cast<T>(t[j]);
        }
    }
}

// a[j, i] = a[i, j] for j > i: fill the lower triangle of an n x n matrix
// (row stride ld) from its upper triangle, in cache-sized square blocks.
template <class T>
void mirror_upper(T* a, idx n, idx ld) noexcept {
    constexpr idx kBlock = 64;
    const idx nb = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1)
    for (idx bi = 0; bi < nb; ++bi) {
        for (idx bj = 0; bj <= bi; ++bj) {
            const idx i1 = std::min(n, (bi + 1) * kBlock), j1 = std::min(n, (bj + 1) * kBlock);
            for (idx i = bi * kBlock; i < i1; ++i)
                for (idx j = bj * kBlock; j < std::min(j1, i); ++j) a[i * ld + j] = a[j * ld + i];
        }
    }
}

}  // namespace fastntk
