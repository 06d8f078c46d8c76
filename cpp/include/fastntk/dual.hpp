// Dual kernels of fully-connected layers, one kernel entry at a time: the formula set that the
// CPU passes (fc.hpp) and the CUDA kernels (fastntk/_backend/cuda_kernels.cu, compiled by NVRTC)
// share, so the CPU tests of every formula also cover the GPU's.
//
// Only what NVRTC compiles may appear here: functions marked FASTNTK_HD, no library headers
// beyond <cmath> (which NVRTC does not need: its math functions are built in), no exceptions.
#pragma once

#include "fastntk/math.hpp"

namespace fastntk {

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

FASTNTK_HD inline bool is_activation(OpKind k) noexcept { return k >= OpKind::ABRelu; }

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
FASTNTK_HD inline void abrelu_dual(double& k, double k11, double k22, double sd11, double inv11, double sd22, double inv22,
                        double half_sq_sum, double diff_sq_2pi, double rho_tol, double& t_dot) noexcept {
    const double rho = (k * inv11) * inv22;
    double s2 = (1.0 - rho) * (1.0 + rho);
    s2 = (s2 <= rho_tol || (k == k11 && k == k22)) ? 0.0 : s2;  // NaN passes
    const double sin_theta = sqrt(s2);
    double theta = angle_from_cos_sin(rho, sin_theta);
    theta = (s2 == 0.0 && rho == 0.0) ? 0.5 * kPi : theta;  // two zero-variance points
    t_dot = half_sq_sum - diff_sq_2pi * theta;
    k = diff_sq_2pi * (sin_theta * (sd11 * sd22)) + t_dot * k;
}

// 1/k11, or 0 for a zero-variance point (whose Sigma12 is 0).
FASTNTK_HD inline double inv_or_zero(double v) noexcept { return v > 0.0 ? 1.0 / v : 0.0; }

// Erf and GELU are written with r = k22 (1 - rho^2) = k22 - k^2/k11, rho =
// k/sqrt(k11 k22) (>= 0 up to rounding; <= k22, so it does not overflow), given
// inv11 = 1/k11, and with quantities normalised by the first point's variance k11.
// r = 0 exactly at coincident points (k = k11 = k22), whose rho is exactly 1.
FASTNTK_HD inline double residual(double k, double k11, double k22, double inv11) noexcept {
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
FASTNTK_HD inline void erf_dual(double& k, double k11, double k22, double a, double b, double c,
                     double& t_dot) noexcept {
    const double b2 = b * b;
    const double a11 = 2.0 * b2 * k11, e1 = 1.0 / (1.0 + a11), inv_q1 = sqrt(e1);
    double r = residual(k, k11, k22, inv_or_zero(k11));
    r = r < 0.0 ? 0.0 : r;
    const double w = sqrt(1.0 + 2.0 * b2 * e1 * k22 + 2.0 * b2 * (a11 * e1) * r);  // den/q1
    t_dot = a * a * b2 * (4.0 / kPi) * inv_q1 / w;
    k = a * a * (2.0 / kPi) * atan2_v(2.0 * b2 * inv_q1 * k, w) + c * c;
}

// Sin: with S = k11 + k22,
//   Sigma' = a^2/2 [exp(b^2(-S/2 + k)) - cos(2c) exp(b^2(-S/2 - k))],
//   T_dot  = a^2 b^2/2 [exp(b^2(-S/2 + k)) + cos(2c) exp(b^2(-S/2 - k))].
// Both exponents are <= 0 (|k| <= sqrt(k11 k22) <= S/2); rounding above 0 is
// clamped (a select, so NaN passes). S/2 = k11/2 + k22/2 does not overflow.
FASTNTK_HD inline void sin_dual(double& k, double k11, double k22, double a, double b, double cos2c,
                     double& t_dot) noexcept {
    const double b2 = b * b;
    const double half_s = 0.5 * k11 + 0.5 * k22;
    const double xp = b2 * (k - half_s), xm = -b2 * (k + half_s);
    const double ep = exp(xp > 0.0 ? 0.0 : xp), em = exp(xm > 0.0 ? 0.0 : xm);
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
FASTNTK_HD inline void gelu_dual(double& k, double k11, double k22, double& t_dot) noexcept {
    const double e1 = 1.0 / (1.0 + k11), inv_q1 = sqrt(e1), t1_sq = k11 * e1;
    double r = residual(k, k11, k22, inv_or_zero(k11));
    r = r < 0.0 ? 0.0 : r;
    const double e2 = 1.0 / (1.0 + k22);
    const double w = sqrt(1.0 + e1 * k22 + t1_sq * r), inv_w = 1.0 / w;
    const double kappa = k * inv_q1;
    const double ang = atan2_v(kappa, w);
    t_dot = kappa * inv_w / (2.0 * kPi) * (e1 * inv_w * inv_w + e1 + e2) + 0.25 + ang / (2.0 * kPi);
    k = (kappa * (kappa * inv_q1) * e2 * inv_w + t1_sq / inv_q1 * w * (k22 * e2) + k * ang) / (2.0 * kPi) +
        0.25 * k;
}

// --- neural-tangents 0.6.5's other closed-form activations (stax/elementwise.py) ---

// s = sqrt(k11) sqrt(k22) (k11 itself where k11 = k22, so rho = 1 exactly at coincident points),
// never the product k11 k22; rho = k/s, 0 where s = 0 (a zero-variance point, whose k is 0).
FASTNTK_HD inline double sqrt_prod(double k11, double k22) noexcept { return k11 == k22 ? k11 : sqrt(k11) * sqrt(k22); }
FASTNTK_HD inline double correlation(double k, double s) noexcept { return s > 0.0 ? k / s : 0.0; }

// v s^n, one factor at a time: the partial products move monotonically towards the result, so
// none overflows or underflows before the result does (s^n alone may).
FASTNTK_HD inline double times_power(double v, double s, int n) noexcept {
    for (int i = 0; i < n; ++i) v *= s;
    return v;
}

// Exp: Sigma' = a^2 exp(b^2 (k11/2 + k22/2 + k)), T_dot = b^2 Sigma'.
FASTNTK_HD inline void exp_dual(double& k, double k11, double k22, double a2, double b2, double& t_dot) noexcept {
    const double e = a2 * exp(b2 * (0.5 * k11 + 0.5 * k22 + k));
    t_dot = b2 * e;
    k = e;
}

// Gaussian: with c = -2b, det^2 = det(I + cK) = (1 + c k11)(1 + c k22) - c^2 k^2,
//   Sigma' = a^2/det,  T_dot = 4 a^2 b^2 k/det^3  (= dSigma'/dk, Price's theorem).
// As for erf, det^2 = q1^2 w^2 with q1^2 = 1 + c k11, e1 = 1/q1^2 and
//   w^2 = 1 + c e1 k22 + c^2 k11 e1 r  (every term >= 0 for b <= 0),
// so 1/det = sqrt(e1)/w and k/det^3 = (k sqrt(e1)/w)(e1/w^2). For b > 0 the expectation is
// finite only where I - 2bK is positive definite (q1^2 > 0 and w^2 > 0); +inf elsewhere.
FASTNTK_HD inline void gaussian_dual(double& k, double k11, double k22, double a2, double b, double& t_dot) noexcept {
    const double c = -2.0 * b;
    const double q1_sq = 1.0 + c * k11, e1 = 1.0 / q1_sq;
    double r = residual(k, k11, k22, inv_or_zero(k11));
    r = r < 0.0 ? 0.0 : r;
    const double w_sq = 1.0 + c * e1 * k22 + c * (c * k11 * e1) * r;
    const bool finite = q1_sq > 0.0 && w_sq > 0.0;
    const double inv_w = 1.0 / sqrt(w_sq), inv_q1 = sqrt(e1);
    const double inf = FASTNTK_INF;
    t_dot = finite ? 4.0 * a2 * b * b * (k * inv_q1 * inv_w) * (e1 * inv_w * inv_w) : inf;
    k = finite ? a2 * inv_q1 * inv_w : inf;
}

// ExpNormalized (the "Gaussian normalised kernel" of Shankar et al. 2020; a kernel, no phi):
//   Sigma' = s exp(gamma (rho + shift)),  T_dot = gamma exp(gamma (rho + shift)),
// rho clipped to [-1, 1] when clip.
FASTNTK_HD inline void exp_normalized_dual(double& k, double k11, double k22, double gamma, double shift, bool clip,
                                double& t_dot) noexcept {
    const double s = sqrt_prod(k11, k22);
    double rho = correlation(k, s);
    rho = clip ? clamp_unit(rho) : rho;
    const double e = exp(gamma * (rho + shift));
    t_dot = gamma * e;
    k = s * e;
}

// Rbf: Sigma' = exp(-gamma (k11 + k22 - 2k)), T_dot = 2 gamma Sigma'. The exponent is <= 0
// (|k| <= k11/2 + k22/2; rounding above 0 is clamped, as for Sin) and exactly 0 where
// k = k11 = k22.
FASTNTK_HD inline void rbf_dual(double& k, double k11, double k22, double gamma, double& t_dot) noexcept {
    const double x = 2.0 * gamma * (k - (0.5 * k11 + 0.5 * k22));
    const double e = exp(x > 0.0 ? 0.0 : x);
    t_dot = 2.0 * gamma * e;
    k = e;
}

// Sign: Sigma' = E[sign(u) sign(v)] = 1 - 2 theta/pi, the T_dot of Abs = ABRelu(-1, 1) (the
// same angle path, rho_tol and zero-variance rule: 0 there, sign(0) = 0). T_dot = 0: sign' = 0
// wherever it is defined, as in the finite network's gradient.
FASTNTK_HD inline void sign_dual(double& k, double k11, double k22, double sd11, double inv11, double sd22, double inv22,
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
FASTNTK_HD inline void gabor_dual(double& k, double k11, double k22, double& t_dot) noexcept {
    const double e1 = 1.0 / (1.0 + 2.0 * k11);
    double r = residual(k, k11, k22, inv_or_zero(k11));
    r = r < 0.0 ? 0.0 : r;
    const double w = sqrt(1.0 + 2.0 * e1 * k22 + 4.0 * (k11 * e1) * r);
    const double g = sqrt(e1) / w, g2 = g * g, kg = k * g;
    const double one_s = (1.0 + k11 + k22) * g2;
    const double em1 = expm1(kg * g), ey = em1 + 1.0;
    const double sh = em1 * (em1 + 2.0) / (2.0 * ey), ch = 1.0 + em1 * em1 / (2.0 * ey);
    const double ex = exp(-0.5 * (1.0 - one_s));
    t_dot = ex * g * (ch * (g2 + 8.0 * kg * kg * g2) + sh * 4.0 * kg * g * (1.0 + one_s));
    k = ex * sh * g;
}

// H_n(x, q) = sum_(j <= n/2) n!/((n - 2j)! j!^2 4^j) x^(n-2j) q^j. By Price's theorem (the
// Taylor series of E[phi(u) phi(v)] in k), E[u^n v^n] = n! H_n(k, k11 k22) and, for the
// normalised Hermite polynomial h_n = He_n/sqrt(n!), E[h_n(u) h_n(v)] = H_n(k, (k11 - 1)(k22 - 1)).
// Horner in x^2 from the j = 0 term; coefficients by their ratio
// d_(j+1)/d_j = (n - 2j)(n - 2j - 1)/(4 (j + 1)^2).
FASTNTK_HD inline double hermite_sum(int n, double x, double q) noexcept {
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
FASTNTK_HD inline void monomial_dual(double& k, double k11, double k22, int n, double n_fact, double& t_dot) noexcept {
    const double s = sqrt_prod(k11, k22), rho = correlation(k, s);
    t_dot = n == 0 ? 0.0 : times_power(n * n_fact * hermite_sum(n - 1, rho, 1.0), s, n - 1);
    k = times_power(n_fact * hermite_sum(n, rho, 1.0), s, n);
}

// Hermite h_n = He_n/sqrt(n!): Sigma' = H_n(k, q), T_dot = n H_(n-1)(k, q) (h_n' = sqrt(n) h_(n-1)),
// q = (k11 - 1)(k22 - 1). neural-tangents' k^n and n k^(n-1) are these at k11 = k22 = 1.
// Every term of Sigma' for n >= 2 carries q or k^2 with a coefficient >= 1/2: q overflows only
// where Sigma' does.
FASTNTK_HD inline void hermite_dual(double& k, double k11, double k22, int n, double& t_dot) noexcept {
    const double q = (k11 - 1.0) * (k22 - 1.0);
    t_dot = n == 0 ? 0.0 : n * hermite_sum(n - 1, k, q);
    k = hermite_sum(n, k, q);
}

// Polynomial c0 + c1 x + c2 x^2 + c3 x^3 (Price's theorem): E[phi(u) phi(v)] =
// sum_l mu_l(k11) mu_l(k22) k^l/l!, mu_l(v) = E[phi^(l)(u)] for u ~ N(0, v): mu_0 = c0 + c2 v,
// mu_1 = c1 + 3 c3 v, mu_2 = 2 c2, mu_3 = 6 c3; T_dot = sum_(l >= 1) mu_l mu_l k^(l-1)/(l-1)!.
// m2 = mu_2^2/2, m3 = mu_3^2/6.
FASTNTK_HD inline void polynomial_dual(double& k, double k11, double k22, const double* c, double m2, double m3,
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

    FASTNTK_HD void step() noexcept {  // n -> n + 1
        double np[kMaxRectifiedDegree + 2] = {0.0}, nq[kMaxRectifiedDegree + 2] = {0.0};
        for (int i = 0; i <= n; ++i) {
            if (i > 0) np[i - 1] += i * p[i], nq[i - 1] += i * q[i];
            np[i + 1] += (2 * n + 1 - i) * p[i];
            nq[i + 1] += (2 * n - i) * q[i];
            nq[i] += p[i];
        }
        ++n;
        for (int i = 0; i <= n; ++i) p[i] = np[i], q[i] = nq[i];
    }

    // s^n J_n/(2 pi); at a zero-variance point (s = 0): 0 for n >= 1, and for n = 0 the kernel
    // of phi(0) = [0 >= 0] = 1: 1 where both variances are 0 (zero_both), 1/2 where one is.
    FASTNTK_HD double kernel(double rho, double pi_minus_theta, double sin_theta, double s, bool zero_both) const noexcept {
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
FASTNTK_HD inline void rectified_monomial_dual(double& k, double k11, double k22, const ArcCosine& jn, const ArcCosine& jm,
                                    double rho_tol, double& t_dot) noexcept {
    const double s = sqrt_prod(k11, k22);
    const double rho = clamp_unit(correlation(k, s));
    double sin2 = (1.0 - rho) * (1.0 + rho);
    sin2 = sin2 > rho_tol ? sin2 : 0.0;
    const double sin_theta = sqrt(sin2), pi_minus_theta = atan2_v(sin_theta, -rho);
    const bool zero_both = k11 == 0.0 && k22 == 0.0;
    t_dot = jn.n == 0 ? 0.0 : jn.n * jn.n * jm.kernel(rho, pi_minus_theta, sin_theta, s, zero_both);
    k = jn.kernel(rho, pi_minus_theta, sin_theta, s, zero_both);
}

// Constants of an op's dual that a pass computes once per op, not per entry.
FASTNTK_HD inline double abrelu_half_sq_sum(const double* p) noexcept { return 0.5 * (p[0] * p[0] + p[1] * p[1]); }
FASTNTK_HD inline double abrelu_diff_sq_2pi(const double* p) noexcept {
    return (p[0] - p[1]) * (p[0] - p[1]) / (2.0 * kPi);
}
FASTNTK_HD inline double factorial(int n) noexcept {
    double f = 1.0;
    for (int i = 2; i <= n; ++i) f *= i;
    return f;
}
// jn of degree deg and jm of degree deg - 1 (deg itself for deg = 0), for rectified_monomial_dual.
FASTNTK_HD inline void arc_cosine_pair(int deg, ArcCosine& jn, ArcCosine& jm) noexcept {
    for (int i = 1; i < deg; ++i) jm.step();
    jn = jm;
    if (deg > 0) jn.step();
}

// One kernel entry through all n_ops ops: the GPU's thread-to-entry mapping (one thread per entry),
// compiled for the host too so that the CPU suite tests it (_core.fc_entries). fc_rows computes the
// same values a row at a time, hoisting what depends on one point out of the row.
// k: Sigma12 on entry (the Gram x1.x2 when ops[0] is Input) and after all ops; t: Theta12 likewise
// (Input sets it to 0; untouched without WithNtk); v1[a * s1], v2[a * s2]: the variances of the two
// points entering the a-th activation.
template <bool WithNtk>
FASTNTK_HD inline void fc_entry(const Op* ops, int n_ops, double& k, double& t, const double* v1, long long s1,
                                const double* v2, long long s2, double rho_tol) noexcept {
    int a = 0;
    for (int l = 0; l < n_ops; ++l) {
        const Op& op = ops[l];
        const double* p = op.p;
        double k11 = 0.0, k22 = 0.0, t_dot = 1.0;
        if (is_activation(op.kind)) {
            k11 = v1[a * s1];
            k22 = v2[a * s2];
            ++a;
        }
        switch (op.kind) {
            case OpKind::Input:
                k *= p[0];
                t = 0.0;
                continue;
            case OpKind::DenseNtk:
                k = p[0] * k + p[1];
                t = k + p[0] * t;
                continue;
            case OpKind::DenseStandard:
                t = p[2] * k + p[0] * t + p[3];
                k = p[0] * k + p[1];
                continue;
            case OpKind::ABRelu:
            case OpKind::Sign: {
                const double sd11 = sqrt(k11), sd22 = sqrt(k22);
                if (op.kind == OpKind::Sign)
                    sign_dual(k, k11, k22, sd11, inv_or_zero(sd11), sd22, inv_or_zero(sd22), rho_tol, t_dot);
                else
                    abrelu_dual(k, k11, k22, sd11, inv_or_zero(sd11), sd22, inv_or_zero(sd22), abrelu_half_sq_sum(p),
                                abrelu_diff_sq_2pi(p), rho_tol, t_dot);
                break;
            }
            case OpKind::Erf: erf_dual(k, k11, k22, p[0], p[1], p[2], t_dot); break;
            case OpKind::Sin: sin_dual(k, k11, k22, p[0], p[1], cos(2.0 * p[2]), t_dot); break;
            case OpKind::Gelu: gelu_dual(k, k11, k22, t_dot); break;
            case OpKind::Exp: exp_dual(k, k11, k22, p[0] * p[0], p[1] * p[1], t_dot); break;
            case OpKind::Gaussian: gaussian_dual(k, k11, k22, p[0] * p[0], p[1], t_dot); break;
            case OpKind::ExpNormalized: exp_normalized_dual(k, k11, k22, p[0], p[1], p[2] != 0.0, t_dot); break;
            case OpKind::Rbf: rbf_dual(k, k11, k22, p[0], t_dot); break;
            case OpKind::Gabor: gabor_dual(k, k11, k22, t_dot); break;
            case OpKind::Monomial: {
                const int deg = static_cast<int>(p[0]);
                monomial_dual(k, k11, k22, deg, factorial(deg), t_dot);
                break;
            }
            case OpKind::RectifiedMonomial: {
                ArcCosine jn, jm;
                arc_cosine_pair(static_cast<int>(p[0]), jn, jm);
                rectified_monomial_dual(k, k11, k22, jn, jm, rho_tol, t_dot);
                break;
            }
            case OpKind::Polynomial:
                polynomial_dual(k, k11, k22, p, 2.0 * p[2] * p[2], 6.0 * p[3] * p[3], t_dot);
                break;
            case OpKind::Hermite: hermite_dual(k, k11, k22, static_cast<int>(p[0]), t_dot); break;
        }
        if (WithNtk) t *= t_dot;
    }
}

// Entry (i, j) of a tile: read Sigma12 (and Theta12 unless ops[0] is Input), walk all ops (fc_entry),
// write the results. sigma, nngp, ntk: row strides ld_sigma, ld_nngp, ld_ntk (nngp nullptr: discard Sigma;
// ntk nullptr: the NNGP alone; sigma may be nngp, or ntk when ops[0] is Input); var1 (n_act, ld_var1) and
// var2 (n_act, ld_var2): the variances of the tile's rows and columns entering each activation.
template <class T>
FASTNTK_HD inline void fc_tile_entry(long long i, long long j, const T* sigma, long long ld_sigma, T* nngp,
                                     long long ld_nngp, T* ntk, long long ld_ntk, const double* var1,
                                     long long ld_var1, const double* var2, long long ld_var2, const Op* ops,
                                     int n_ops, double rho_tol) noexcept {
    double k = static_cast<double>(sigma[i * ld_sigma + j]);
    if (ntk) {
        double t = n_ops > 0 && ops[0].kind == OpKind::Input ? 0.0 : static_cast<double>(ntk[i * ld_ntk + j]);
        fc_entry<true>(ops, n_ops, k, t, var1 + i, ld_var1, var2 + j, ld_var2, rho_tol);
        ntk[i * ld_ntk + j] = static_cast<T>(t);
    } else {
        double t = 0.0;
        fc_entry<false>(ops, n_ops, k, t, var1 + i, ld_var1, var2 + j, ld_var2, rho_tol);
    }
    if (nngp) nngp[i * ld_nngp + j] = static_cast<T>(k);
}

}  // namespace fastntk
