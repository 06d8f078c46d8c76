// Branch-free elementary functions that compilers vectorise inside loops.
//
// std::atan2 is a library call: a loop that calls it runs one element at a
// time (~8 ns each). The ReLU-family, erf and GELU dual kernels need an angle
// per kernel entry and per layer, so the angle is computed here with
// selects instead of branches and a rational core, which GCC and Clang turn
// into SIMD code. Accuracy: within 2 ulp of std::atan2 for finite, normal-range
// arguments (tests/test_core.py).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fastntk {

namespace detail {
// Cephes atan: arctan(x) = x + x^3 P(x^2)/Q(x^2) on 0 <= x <= 0.66,
// peak relative error 2.6e-18 (S. L. Moshier, Cephes Math Library, atan.c).
constexpr double kAtanP[5] = {-8.750608600031904122785e-1, -1.615753718733365076637e1,
                              -7.500855792314704667340e1, -1.228866684490136173410e2,
                              -6.485021904942025371773e1};
constexpr double kAtanQ[5] = {2.485846490142306297962e1, 1.650270098316988542046e2,
                              4.328810604912902668951e2, 4.853903996359136964868e2,
                              1.945506571482613964425e2};
// pi/4, pi/2, pi split into a double and the rounding error of that double.
constexpr double kPio4Hi = 7.85398163397448309616e-1, kPio4Lo = 3.061616997868382943065e-17;
constexpr double kPio2Hi = 1.57079632679489661923, kPio2Lo = 6.123233995736765886130e-17;
constexpr double kPiHi = 3.14159265358979323846, kPiLo = 1.224646799147353177226e-16;
}  // namespace detail

// Loops that call these are compiled for x86-64-v3 (AVX2, FMA) and x86-64-v4 (AVX-512) as
// well as the baseline, and the best one is picked once at load time (GCC function
// multiversioning). The variants agree to rounding (FMA contraction).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FASTNTK_NATIVE)
#define FASTNTK_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTNTK_SIMD_CLONES
#endif

// atan(lo/hi) for 0 <= lo <= hi, hi > 0, with one division.
inline double atan_ratio(double lo, double hi) noexcept {
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
inline double atan2_v(double y, double x) noexcept {
    using namespace detail;
    const double ay = std::fabs(y), ax = std::fabs(x);
    const bool steep = ay > ax;
    const double hi = steep ? ay : ax, lo = steep ? ax : ay;
    double a = atan_ratio(lo, hi == 0.0 ? 1.0 : hi);  // NaN in, NaN out
    a = steep ? kPio2Hi - (a - kPio2Lo) : a;
    a = x < 0.0 ? kPiHi - (a - kPiLo) : a;
    return y < 0.0 ? -a : a;
}

// Powers of two 2^-h and 2^h with h = floor((e + 1)/2), e the binary exponent of v >= 0
// (v = 1.f 2^e), so that v 4^-h lies in [1/2, 2); h = -511 for v = 0 or subnormal.
// Scaling by a power of two is exact (short of underflow), so a product form
// evaluated on the scaled values rounds exactly as on the unscaled ones, without
// overflowing. Integer operations on the bits, which vectorise (no frexp/ldexp calls).
inline double pow2_from_exponent_field(std::uint64_t field) noexcept {
    const std::uint64_t bits = field << 52;
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
}

inline void quarter_scale(double v, double& down, double& up) noexcept {
    std::uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    const std::uint64_t h = (bits >> 53) & 0x3ff;  // floor((e + 1)/2) + 511, in [0, 1023]
    down = pow2_from_exponent_field(1534 - h);     // biased exponent 1023 - (h - 511)
    up = pow2_from_exponent_field(512 + h);        // biased exponent 1023 + (h - 511)
}

}  // namespace fastntk
