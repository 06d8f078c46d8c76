// Branch-free elementary functions that compilers vectorise inside loops.
//
// std::atan2 is a library call: a loop that calls it runs one element at a
// time (~8 ns each). The ReLU-family, erf and GELU dual kernels need an angle
// per kernel entry and per layer, so the angle is computed here with
// selects instead of branches and a rational core, which GCC and Clang turn
// into SIMD code. Accuracy: within 2 ulp of std::atan2 (tests/test_core.py).
#pragma once

#include <cmath>

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

// atan(q) for 0 <= q <= 1.
inline double atan_unit(double q) noexcept {
    using namespace detail;
    const bool upper = q > 0.66;
    // atan(q) = pi/4 + atan((q - 1)/(q + 1)); the argument lands in (-0.21, 0].
    const double x = upper ? (q - 1.0) / (q + 1.0) : q;
    const double z = x * x;
    const double p = (((kAtanP[0] * z + kAtanP[1]) * z + kAtanP[2]) * z + kAtanP[3]) * z + kAtanP[4];
    const double r = ((((z + kAtanQ[0]) * z + kAtanQ[1]) * z + kAtanQ[2]) * z + kAtanQ[3]) * z + kAtanQ[4];
    const double a = x + x * (z * p / r);
    return upper ? kPio4Hi + (a + kPio4Lo) : a;
}

// atan2(y, x) in [-pi, pi], with atan2(0, 0) = 0 as std::atan2 on +0.
inline double atan2_v(double y, double x) noexcept {
    using namespace detail;
    const double ay = std::fabs(y), ax = std::fabs(x);
    const bool steep = ay > ax;
    const double hi = steep ? ay : ax, lo = steep ? ax : ay;
    const double q = lo / (hi > 0.0 ? hi : 1.0);
    double a = atan_unit(q);
    a = steep ? kPio2Hi - (a - kPio2Lo) : a;
    a = x < 0.0 ? kPiHi - (a - kPiLo) : a;
    return y < 0.0 ? -a : a;
}

}  // namespace fastntk
