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

#include "fastntk/math.hpp"

#if defined(__GNUC__)
#define FASTNTK_NOINLINE __attribute__((noinline))
#define FASTNTK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FASTNTK_NOINLINE
#define FASTNTK_ALWAYS_INLINE inline
#endif

namespace fastntk {

using idx = std::ptrdiff_t;

enum class OpKind : int {
    Input = 0, DenseNtk = 1, DenseStandard = 2, ABRelu = 3, Erf = 4, Sin = 5, Gelu = 6,
    Exp = 7, Gaussian = 8, ExpNormalized = 9, Rbf = 10, Sign = 11, Gabor = 12,
    Monomial = 13, RectifiedMonomial = 14, Polynomial = 15, Hermite = 16
};
constexpr OpKind kLastOpKind = OpKind::Hermite;

// One layer. Parameters by kind:
//   Input          p = {1/d}
//   DenseNtk       p = {W_std^2, b_std^2}
//   DenseStandard  p = {W_std^2, b_std^2, n_in, c}  (c = 1 with a bias, 0 without)
//   ABRelu         p = {a, b}     phi(x) = a min(x, 0) + b max(x, 0)
//   Erf            p = {a, b, c}  phi(x) = a erf(b x) + c
//   Sin            p = {a, b, c}  phi(x) = a sin(b x + c)
//   Gelu           p = {}         phi(x) = x Phi(x)
//   Exp            p = {a, b}     phi(x) = a exp(b x)
//   Gaussian       p = {a, b}     phi(x) = a exp(b x^2)
//   ExpNormalized  p = {gamma, shift, clip}  no phi: s exp(gamma (rho + shift)), s = sqrt(k11 k22)
//   Rbf            p = {gamma}    phi(x) = sqrt(2) sin(sqrt(2 gamma) x + pi/4)
//   Sign           p = {}         phi(x) = sign(x)
//   Gabor          p = {}         phi(x) = exp(-x^2) sin(x)
//   Monomial       p = {n}        phi(x) = x^n
//   RectifiedMonomial p = {n}     phi(x) = [x >= 0] x^n  (n <= kMaxRectifiedDegree)
//   Polynomial     p = {c0, c1, c2, c3}  phi(x) = c0 + c1 x + c2 x^2 + c3 x^3
//   Hermite        p = {n}        phi(x) = He_n(x)/sqrt(n!)  (probabilists' Hermite polynomial)
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

// ABRelu (Cho & Saul 2009, arc-cosine kernel of degree 0 and 1): with rho = k/sqrt(k11 k22),
// theta = arccos(rho),
//   Sigma' = (a-b)^2/(2 pi) sqrt(k11 k22) sin(theta) + [(a^2+b^2)/2 - (a-b)^2 theta/(2 pi)] k,
//   T_dot  = (a^2+b^2)/2 - (a-b)^2 theta/(2 pi).
// Per-point scales, never the product k11 k22 (DESIGN §2): sd = sqrt(k11) and inv = 1/sqrt(k11)
// (0 for a zero-variance point) are given for both points (a tile computes them once per row
// and column), rho = (k inv11) inv22 and sqrt(k11 k22) = sd11 sd22, so nothing overflows
// before the kernel does; sin(theta) = sqrt((1 - rho)(1 + rho)) and theta from both without a
// division (angle_from_cos_sin). theta = pi/2 at a zero-variance point (rho = 0), as
// neural-tangents, also of two such points (rho = sin(theta) = 0). rho = 1 exactly where k = k11 = k22 (coincident points).
// 1 - rho^2 <= rho_tol is taken as rho = +-1 exactly: T_dot is first order in
// theta, and theta ~ sqrt(1 - rho^2) turns the rounding error of the Gram
// entries into an error of sqrt(eps) at coincident points, whose exact theta
// is 0. Sigma' is third order in theta there and does not change.
inline void abrelu_dual(double& k, double k11, double k22, double sd11, double inv11, double sd22, double inv22,
                        double half_sq_sum, double diff_sq_2pi, double rho_tol, double& t_dot) noexcept {
    const double rho = (k * inv11) * inv22;
    double s2 = (1.0 - rho) * (1.0 + rho);
    s2 = (s2 <= rho_tol || (k == k11 && k == k22)) ? 0.0 : s2;  // NaN passes
    const double sin_theta = std::sqrt(s2);
    double theta = angle_from_cos_sin(rho, sin_theta);
    theta = (s2 == 0.0 && rho == 0.0) ? 0.5 * kPi : theta;  // two zero-variance points
    t_dot = half_sq_sum - diff_sq_2pi * theta;
    k = diff_sq_2pi * (sin_theta * (sd11 * sd22)) + t_dot * k;
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

// --- neural-tangents 0.6.5's other closed-form activations (stax/elementwise.py) ---

// s = sqrt(k11) sqrt(k22) (k11 itself where k11 = k22, so rho = 1 exactly at coincident points),
// never the product k11 k22; rho = k/s, 0 where s = 0 (a zero-variance point, whose k is 0).
inline double sqrt_prod(double k11, double k22) noexcept { return k11 == k22 ? k11 : std::sqrt(k11) * std::sqrt(k22); }
inline double correlation(double k, double s) noexcept { return s > 0.0 ? k / s : 0.0; }

// v s^n, one factor at a time: the partial products move monotonically towards the result, so
// none overflows or underflows before the result does (s^n alone may).
inline double times_power(double v, double s, int n) noexcept {
    for (int i = 0; i < n; ++i) v *= s;
    return v;
}

// Exp: Sigma' = a^2 exp(b^2 (k11/2 + k22/2 + k)), T_dot = b^2 Sigma'.
inline void exp_dual(double& k, double k11, double k22, double a2, double b2, double& t_dot) noexcept {
    const double e = a2 * std::exp(b2 * (0.5 * k11 + 0.5 * k22 + k));
    t_dot = b2 * e;
    k = e;
}

// Gaussian: with c = -2b, det^2 = det(I + cK) = (1 + c k11)(1 + c k22) - c^2 k^2,
//   Sigma' = a^2/det,  T_dot = 4 a^2 b^2 k/det^3  (= dSigma'/dk, Price's theorem).
// As for erf, det^2 = q1^2 w^2 with q1^2 = 1 + c k11, e1 = 1/q1^2 and
//   w^2 = 1 + c e1 k22 + c^2 k11 e1 r  (every term >= 0 for b <= 0),
// so 1/det = sqrt(e1)/w and k/det^3 = (k sqrt(e1)/w)(e1/w^2). For b > 0 the expectation is
// finite only where I - 2bK is positive definite (q1^2 > 0 and w^2 > 0); +inf elsewhere.
inline void gaussian_dual(double& k, double k11, double k22, double a2, double b, double& t_dot) noexcept {
    const double c = -2.0 * b;
    const double q1_sq = 1.0 + c * k11, e1 = 1.0 / q1_sq;
    double r = residual(k, k11, k22, inv_or_zero(k11));
    r = r < 0.0 ? 0.0 : r;
    const double w_sq = 1.0 + c * e1 * k22 + c * (c * k11 * e1) * r;
    const bool finite = q1_sq > 0.0 && w_sq > 0.0;
    const double inv_w = 1.0 / std::sqrt(w_sq), inv_q1 = std::sqrt(e1);
    const double inf = std::numeric_limits<double>::infinity();
    t_dot = finite ? 4.0 * a2 * b * b * (k * inv_q1 * inv_w) * (e1 * inv_w * inv_w) : inf;
    k = finite ? a2 * inv_q1 * inv_w : inf;
}

// ExpNormalized (the "Gaussian normalised kernel" of Shankar et al. 2020; a kernel, no phi):
//   Sigma' = s exp(gamma (rho + shift)),  T_dot = gamma exp(gamma (rho + shift)),
// rho clipped to [-1, 1] when clip.
inline void exp_normalized_dual(double& k, double k11, double k22, double gamma, double shift, bool clip,
                                double& t_dot) noexcept {
    const double s = sqrt_prod(k11, k22);
    double rho = correlation(k, s);
    rho = clip ? std::min(1.0, std::max(-1.0, rho)) : rho;
    const double e = std::exp(gamma * (rho + shift));
    t_dot = gamma * e;
    k = s * e;
}

// Rbf: Sigma' = exp(-gamma (k11 + k22 - 2k)), T_dot = 2 gamma Sigma'. The exponent is <= 0
// (|k| <= k11/2 + k22/2; rounding above 0 is clamped, as for Sin) and exactly 0 where
// k = k11 = k22.
inline void rbf_dual(double& k, double k11, double k22, double gamma, double& t_dot) noexcept {
    const double x = 2.0 * gamma * (k - (0.5 * k11 + 0.5 * k22));
    const double e = std::exp(x > 0.0 ? 0.0 : x);
    t_dot = 2.0 * gamma * e;
    k = e;
}

// Sign: Sigma' = E[sign(u) sign(v)] = 1 - 2 theta/pi, the T_dot of Abs = ABRelu(-1, 1) (the
// same angle path, rho_tol and zero-variance rule: 0 there, sign(0) = 0). T_dot = 0: sign' = 0
// wherever it is defined, as in the finite network's gradient.
inline void sign_dual(double& k, double k11, double k22, double sd11, double inv11, double sd22, double inv22,
                      double rho_tol, double& t_dot) noexcept {
    double abs_sigma = k, abs_t_dot;
    abrelu_dual(abs_sigma, k11, k22, sd11, inv11, sd22, inv22, 1.0, 2.0 / kPi, rho_tol, abs_t_dot);
    k = abs_t_dot;
    t_dot = 0.0;
}

// Gabor, exp(-x^2) sin(x): with den = det(I + 2K) = 1 + 2(k11 + k22) + 4 k11 r,
//   Sigma' = exp(-X/2) sinh(y)/sqrt(den),  X = (k11 + k22 + 4 k11 r)/den,  y = k/den,
//   T_dot  = den^(-3/2) exp(-X/2) [cosh(y)(1 + 8k^2/den) + 4k sinh(y)(1 + (1 + k11 + k22)/den)]:
// neural-tangents' two exponentials exp(-X/2 +- y) as cosh and sinh (sinh from expm1, so no
// cancellation at small |k|). As for erf, den = q1^2 w^2, q1^2 = 1 + 2 k11, w^2 = 1 + 2 e1 k22
// + 4 k11 e1 r; with g = 1/sqrt(den), X = 1 - (1 + k11 + k22) g^2, and k g (|k g| < 1/2) and
// (1 + k11 + k22) g^2 (< 1) are bounded, so nothing overflows.
inline void gabor_dual(double& k, double k11, double k22, double& t_dot) noexcept {
    const double e1 = 1.0 / (1.0 + 2.0 * k11);
    double r = residual(k, k11, k22, inv_or_zero(k11));
    r = r < 0.0 ? 0.0 : r;
    const double w = std::sqrt(1.0 + 2.0 * e1 * k22 + 4.0 * (k11 * e1) * r);
    const double g = std::sqrt(e1) / w, g2 = g * g, kg = k * g;
    const double one_s = (1.0 + k11 + k22) * g2;
    const double em1 = std::expm1(kg * g), ey = em1 + 1.0;
    const double sh = em1 * (em1 + 2.0) / (2.0 * ey), ch = 1.0 + em1 * em1 / (2.0 * ey);
    const double ex = std::exp(-0.5 * (1.0 - one_s));
    t_dot = ex * g * (ch * (g2 + 8.0 * kg * kg * g2) + sh * 4.0 * kg * g * (1.0 + one_s));
    k = ex * sh * g;
}

// H_n(x, q) = sum_(j <= n/2) n!/((n - 2j)! j!^2 4^j) x^(n-2j) q^j. By Price's theorem (the
// Taylor series of E[phi(u) phi(v)] in k), E[u^n v^n] = n! H_n(k, k11 k22) and, for the
// normalised Hermite polynomial h_n = He_n/sqrt(n!), E[h_n(u) h_n(v)] = H_n(k, (k11 - 1)(k22 - 1)).
// Horner in x^2 from the j = 0 term; coefficients by their ratio
// d_(j+1)/d_j = (n - 2j)(n - 2j - 1)/(4 (j + 1)^2).
inline double hermite_sum(int n, double x, double q) noexcept {
    const double x2 = x * x;
    double d = 1.0, qj = 1.0, s = 1.0;
    for (int j = 0; 2 * j + 2 <= n; ++j) {
        const double l = n - 2 * j;
        d = d * (l * (l - 1.0)) / (4.0 * (j + 1.0) * (j + 1.0));
        qj *= q;
        s = s * x2 + d * qj;
    }
    return n % 2 ? s * x : s;
}

// Monomial x^n (Isserlis): Sigma' = n! s^n H_n(rho, 1), T_dot = n^2 (n-1)! s^(n-1) H_(n-1)(rho, 1).
// Homogeneous of degree n: computed on rho and scaled by s^n (times_power). n_fact = n!.
inline void monomial_dual(double& k, double k11, double k22, int n, double n_fact, double& t_dot) noexcept {
    const double s = sqrt_prod(k11, k22), rho = correlation(k, s);
    t_dot = n == 0 ? 0.0 : times_power(n * n_fact * hermite_sum(n - 1, rho, 1.0), s, n - 1);
    k = times_power(n_fact * hermite_sum(n, rho, 1.0), s, n);
}

// Hermite h_n = He_n/sqrt(n!): Sigma' = H_n(k, q), T_dot = n H_(n-1)(k, q) (h_n' = sqrt(n) h_(n-1)),
// q = (k11 - 1)(k22 - 1). neural-tangents' k^n and n k^(n-1) are these at k11 = k22 = 1.
// Every term of Sigma' for n >= 2 carries q or k^2 with a coefficient >= 1/2: q overflows only
// where Sigma' does.
inline void hermite_dual(double& k, double k11, double k22, int n, double& t_dot) noexcept {
    const double q = (k11 - 1.0) * (k22 - 1.0);
    t_dot = n == 0 ? 0.0 : n * hermite_sum(n - 1, k, q);
    k = hermite_sum(n, k, q);
}

// Polynomial c0 + c1 x + c2 x^2 + c3 x^3 (Price's theorem): E[phi(u) phi(v)] =
// sum_l mu_l(k11) mu_l(k22) k^l/l!, mu_l(v) = E[phi^(l)(u)] for u ~ N(0, v): mu_0 = c0 + c2 v,
// mu_1 = c1 + 3 c3 v, mu_2 = 2 c2, mu_3 = 6 c3; T_dot = sum_(l >= 1) mu_l mu_l k^(l-1)/(l-1)!.
// m2 = mu_2^2/2, m3 = mu_3^2/6.
inline void polynomial_dual(double& k, double k11, double k22, const double* c, double m2, double m3,
                            double& t_dot) noexcept {
    const double m0 = (c[0] + c[2] * k11) * (c[0] + c[2] * k22);
    const double m1 = (c[1] + 3.0 * c[3] * k11) * (c[1] + 3.0 * c[3] * k22);
    t_dot = m1 + k * (2.0 * m2 + k * (3.0 * m3));
    k = m0 + k * (m1 + k * (m2 + k * m3));
}

// The arc-cosine kernels of degree n (Cho & Saul 2009), E[[u >= 0] u^n [v >= 0] v^n] =
// s^n J_n(theta)/(2 pi) with
//   J_n(theta) = (-1)^n sin(theta)^(2n+1) (1/sin d/dtheta)^n ((pi - theta)/sin(theta))
//              = P_n(rho) (pi - theta) + Q_n(rho) sin(theta),  rho = cos(theta):
// (1/sin d/dtheta) = -d/drho gives P_0 = 1, Q_0 = 0 and
//   P_(n+1) = (1 - rho^2) P_n' + (2n + 1) rho P_n,  Q_(n+1) = P_n + (1 - rho^2) Q_n' + 2n rho Q_n
// (integer coefficients, exact in double up to degree ~20, then rounded once each).
constexpr int kMaxRectifiedDegree = 64;

struct ArcCosine {
    int n = 0;
    double p[kMaxRectifiedDegree + 2] = {1.0};  // P_n = sum_i p[i] rho^i
    double q[kMaxRectifiedDegree + 2] = {0.0};

    void step() noexcept {  // n -> n + 1
        double np[kMaxRectifiedDegree + 2] = {0.0}, nq[kMaxRectifiedDegree + 2] = {0.0};
        for (int i = 0; i <= n; ++i) {
            if (i > 0) np[i - 1] += i * p[i], nq[i - 1] += i * q[i];
            np[i + 1] += (2 * n + 1 - i) * p[i];
            nq[i + 1] += (2 * n - i) * q[i];
            nq[i] += p[i];
        }
        ++n;
        std::copy(np, np + n + 1, p);
        std::copy(nq, nq + n + 1, q);
    }

    // s^n J_n/(2 pi); at a zero-variance point (s = 0): 0 for n >= 1, and for n = 0 the kernel
    // of phi(0) = [0 >= 0] = 1: 1 where both variances are 0 (zero_both), 1/2 where one is.
    double kernel(double rho, double pi_minus_theta, double sin_theta, double s, bool zero_both) const noexcept {
        double pv = 0.0, qv = 0.0;
        for (int i = n; i >= 0; --i) pv = pv * rho + p[i], qv = qv * rho + q[i];
        const double v = (pv * pi_minus_theta + qv * sin_theta) / (2.0 * kPi);
        if (n > 0) return times_power(v, s, n);
        return s > 0.0 ? v : (zero_both ? 1.0 : 0.5);
    }
};

// RectifiedMonomial [x >= 0] x^n: Sigma' = s^n J_n/(2 pi), T_dot = n^2 s^(n-1) J_(n-1)/(2 pi)
// (Price's theorem). pi - theta = atan2(sin(theta), -rho) (no cancellation at rho -> -1);
// sin(theta) = sqrt((1 - rho)(1 + rho)), 0 where 1 - rho^2 <= rho_tol, as the ReLU family (the
// degree-0 kernel is first order in theta, so the Gram's rounding would otherwise become
// sqrt(eps) at coincident points).
inline void rectified_monomial_dual(double& k, double k11, double k22, const ArcCosine& jn, const ArcCosine& jm,
                                    double rho_tol, double& t_dot) noexcept {
    const double s = sqrt_prod(k11, k22);
    const double rho = std::min(1.0, std::max(-1.0, correlation(k, s)));
    double sin2 = (1.0 - rho) * (1.0 + rho);
    sin2 = sin2 > rho_tol ? sin2 : 0.0;
    const double sin_theta = std::sqrt(sin2), pi_minus_theta = atan2_v(sin_theta, -rho);
    const bool zero_both = k11 == 0.0 && k22 == 0.0;
    t_dot = jn.n == 0 ? 0.0 : jn.n * jn.n * jm.kernel(rho, pi_minus_theta, sin_theta, s, zero_both);
    k = jn.kernel(rho, pi_minus_theta, sin_theta, s, zero_both);
}

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
            double n_fact = 1.0;
            for (int i = 2; i <= deg; ++i) n_fact *= i;
            for (idx j = 0; j < n; ++j) {
                double t_dot;
                monomial_dual(k[j], v1[PerEntry ? j : 0], v2[j], deg, n_fact, t_dot);
                if (WithNtk) t[j] *= t_dot;
            }
            break;
        }
        case OpKind::RectifiedMonomial: {
            const int deg = static_cast<int>(p[0]);
            ArcCosine jm;  // degree deg - 1 (deg for deg = 0), then jn of degree deg
            for (int i = 1; i < deg; ++i) jm.step();
            ArcCosine jn = jm;
            if (deg > 0) jn.step();
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
            const double half_sq_sum = 0.5 * (p[0] * p[0] + p[1] * p[1]);
            const double diff_sq_2pi = (p[0] - p[1]) * (p[0] - p[1]) / (2.0 * kPi);
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
