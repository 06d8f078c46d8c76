// Branch-free elementary functions that compilers vectorise inside loops.
//
// std::atan2 is a library call: a loop that calls it runs one element at a
// time (~8 ns each). The ReLU-family, erf and GELU dual kernels need an angle
// per kernel entry and per layer, so the angle is computed here with
// selects instead of branches and a rational core, which GCC and Clang turn
// into SIMD code. Accuracy: within 2 ulp of std::atan2 for finite, normal-range
// arguments (tests/test_core.py). The ReLU family, given the cosine and sine of
// its angle, needs no division at all (angle_from_cos_sin: a polynomial).
//
// Shared with the CUDA kernels (see dual.hpp): under NVRTC (__CUDACC_RTC__) there is no <cmath>
// (sqrt, exp, fabs, ... are built in) and FASTNTK_HD makes a function callable on the device.
#pragma once

#if defined(__CUDACC__)
#define FASTNTK_HD __host__ __device__
#define FASTNTK_CONST_ARRAY __device__ constexpr
#define FASTNTK_INF __longlong_as_double(0x7ff0000000000000LL)
#else
#include <cmath>
#define FASTNTK_HD
#define FASTNTK_CONST_ARRAY constexpr
#define FASTNTK_INF HUGE_VAL
#endif

namespace fastntk {

namespace detail {
// Cephes atan: arctan(x) = x + x^3 P(x^2)/Q(x^2) on 0 <= x <= 0.66,
// peak relative error 2.6e-18 (S. L. Moshier, Cephes Math Library, atan.c).
FASTNTK_CONST_ARRAY double kAtanP[5] = {-8.750608600031904122785e-1, -1.615753718733365076637e1,
                              -7.500855792314704667340e1, -1.228866684490136173410e2,
                              -6.485021904942025371773e1};
FASTNTK_CONST_ARRAY double kAtanQ[5] = {2.485846490142306297962e1, 1.650270098316988542046e2,
                              4.328810604912902668951e2, 4.853903996359136964868e2,
                              1.945506571482613964425e2};
// pi/4, pi/2, pi split into a double and the rounding error of that double.
constexpr double kPio4Hi = 7.85398163397448309616e-1, kPio4Lo = 3.061616997868382943065e-17;
constexpr double kPio2Hi = 1.57079632679489661923, kPio2Lo = 6.123233995736765886130e-17;
constexpr double kPiHi = 3.14159265358979323846, kPiLo = 1.224646799147353177226e-16;
// asin(w) = w + w^3 P(w^2) on |w| <= sin(pi/8): P the degree-9 Chebyshev fit of
// (asin(sqrt(u))/sqrt(u) - 1)/u on [0, sin^2(pi/8)] (mpmath, 60 digits; its own absolute error
// 8e-18 on asin). pi/8 and its sine and cosine for the rotation into that interval.
FASTNTK_CONST_ARRAY double kAsinP[10] = {0.16666666666666655, 0.07500000000017083, 0.04464285710448711,
                               0.030381947777332136, 0.022372012607820138, 0.017356444100706213,
                               0.0139089858872261, 0.012070112265966172, 0.006925299097334116,
                               0.016467470525355094};
constexpr double kPio8Hi = 0.39269908169872414, kPio8Lo = 1.5308084989341915e-17;
constexpr double kCosPio8 = 0.9238795325112867, kSinPio8 = 0.3826834323650898;
}  // namespace detail

// Loops that call these are compiled for x86-64-v3 (AVX2, FMA) and x86-64-v4 (AVX-512) as
// well as the baseline, and the best one is picked once at load time (GCC function
// multiversioning). The variants agree to rounding (FMA contraction).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FASTNTK_NATIVE) && !defined(__CUDACC__)
#define FASTNTK_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTNTK_SIMD_CLONES
#endif

// atan(lo/hi) for 0 <= lo <= hi, hi > 0, with one division.
FASTNTK_HD inline double atan_ratio(double lo, double hi) noexcept {
    using namespace detail;
    // Above lo/hi = 0.66: atan(lo/hi) = pi/4 + atan(x), x = (lo - hi)/(lo + hi) in (-0.21, 0].
    const bool upper = lo > 0.66 * hi;
    const double x = (upper ? lo - hi : lo) / (upper ? lo + hi : hi);
    const double z = x * x;
    const double p = (((kAtanP[0] * z + kAtanP[1]) * z + kAtanP[2]) * z + kAtanP[3]) * z + kAtanP[4];
    const double r = ((((z + kAtanQ[0]) * z + kAtanQ[1]) * z + kAtanQ[2]) * z + kAtanQ[3]) * z + kAtanQ[4];
    const double a = x + x * (z * p / r);
    return upper ? kPio4Hi + (a + kPio4Lo) : a;
}

// atan2(y, x) in [-pi, pi] for finite arguments that are zero or of normal magnitude
// (the kernels see no other), within 2 ulp of std::atan2. Zeros count as +0 (atan2(0, 0)
// = 0); a NaN argument gives NaN; infinite and subnormal arguments are out of contract.
FASTNTK_HD inline double atan2_v(double y, double x) noexcept {
    using namespace detail;
    const double ay = fabs(y), ax = fabs(x);
    const bool steep = ay > ax;
    const double hi = steep ? ay : ax, lo = steep ? ax : ay;
    double a = atan_ratio(lo, hi == 0.0 ? 1.0 : hi);  // NaN in, NaN out
    a = steep ? kPio2Hi - (a - kPio2Lo) : a;
    a = x < 0.0 ? kPiHi - (a - kPiLo) : a;
    return y < 0.0 ? -a : a;
}

// asin(w) for 0 <= w <= sqrt(1/2) (NaN in, NaN out), within 0.6 ulp.
// Horner's scheme c[0] + c[1] u + ... + c[N-1] u^(N-1), unrolled at compile time (a loop of more
// than 16 steps is not unrolled by GCC, and a loop inside a loop body keeps it from vectorising).
template <int N, int I = 0>
FASTNTK_HD inline double horner(const double* c, double u) noexcept {
    if constexpr (I == N - 1) {
        return c[I];
    } else {
        return horner<N, I + 1>(c, u) * u + c[I];
    }
}

// The angle theta in [0, pi] with cos(theta) = rho and sin(theta) = s >= 0 (rho^2 + s^2 = 1 up to
// rounding), without a division: phi = asin(w) in [0, pi/4] of w = min(|rho|, s), whose cosine is
// c = max(|rho|, s), as phi = pi/8 + asin(w cos(pi/8) - c sin(pi/8)) (the argument within
// sin(pi/8), where 10 terms of asin's series suffice), then theta from phi by symmetry. Within
// 2 ulp of atan2(s, rho) (absolute 2^-51 below 1/2; tests/test_core.py); NaN in, NaN out.
FASTNTK_HD inline double angle_from_cos_sin(double rho, double s) noexcept {
    using namespace detail;
    const double arho = fabs(rho);
    const bool steep = arho <= s;  // theta in [pi/4, 3 pi/4]: pi/2 - asin(rho)
    const double w = steep ? arho : s, c = steep ? s : arho;
    const double r = w * kCosPio8 - c * kSinPio8;
    const double phi = kPio8Hi + ((r + (r * (r * r)) * horner<10>(kAsinP, r * r)) + kPio8Lo);
    const double signed_phi = rho < 0.0 ? -phi : phi;
    const double flat = rho < 0.0 ? kPiHi - (phi - kPiLo) : phi;
    return steep ? kPio2Hi - (signed_phi - kPio2Lo) : flat;
}

// min(1, max(-1, x)) with std::min/std::max's rule for NaN: NaN gives -1.
FASTNTK_HD inline double clamp_unit(double x) noexcept {
    const double y = -1.0 < x ? x : -1.0;
    return y < 1.0 ? y : 1.0;
}

}  // namespace fastntk
