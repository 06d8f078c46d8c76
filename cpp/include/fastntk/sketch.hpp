// Random features and sketches: the fast Walsh–Hadamard transform and TensorSRHT.
//
// H_n (n = 2^k) is the unnormalised Hadamard matrix in Sylvester's order,
//   H_1 = [1],  H_2n = [[H_n, H_n], [H_n, -H_n]],
// symmetric with entries +-1 (scipy.linalg.hadamard(n)); x H_n = H_n x costs n log2(n)
// additions as log2(n) stages of butterflies (u, v) -> (u + v, u - v).
//
// TensorSRHT (Ahle, Kapralov, Knudsen, Pagh, Velingker, Woodruff & Zandieh, SODA 2020, §4;
// Zandieh et al., NeurIPS 2021, Alg. 1) sketches x ⊗ y (p q entries) into m entries without
// forming it: with x~ (P,) and y~ (Q,) x and y zero-padded to powers of 2,
//   a = H_P (s_x ∘ x~),  b = H_Q (s_y ∘ y~),  out[j] = a[ix[j]] b[iy[j]] / sqrt(m),  j < m,
// for independent signs s_x, s_y (+-1, drawn by the caller) and any indices ix, iy. Since
// E[s_k s_l] = δ_kl and H_kl^2 = 1, E[a_k a'_k] = Σ_l x_l x'_l = <x, x'> for every k, so
//   E <out(x, y), out(x', y')> = Σ_j (1/m) <x, x'> <y, y'> = <x ⊗ y, x' ⊗ y'>   exactly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "fastntk/fc.hpp"  // idx, FASTNTK_ALWAYS_INLINE
#include "fastntk/math.hpp"  // FASTNTK_SIMD_CLONES

namespace fastntk {

namespace detail {

// x <- x H_n in place, n = 2^k >= 1. The first two stages (h = 1, 2), whose butterflies are
// shorter than a SIMD register, are fused into one radix-4 pass over each quadruple with the
// same additions in the same order; every later stage h = 4, 8, ... is a unit-stride loop over
// the two halves of each block of 2h, which do not overlap (restrict), so it vectorises.
// Always inlined: compiled into each SIMD variant of its callers.
template <class T>
FASTNTK_ALWAYS_INLINE void fwht_inplace(T* x, idx n) noexcept {
    if (n >= 4) {
        for (idx i = 0; i < n; i += 4) {
            const T b0 = x[i] + x[i + 1], b1 = x[i] - x[i + 1];          // h = 1
            const T b2 = x[i + 2] + x[i + 3], b3 = x[i + 2] - x[i + 3];
            x[i] = b0 + b2, x[i + 1] = b1 + b3, x[i + 2] = b0 - b2, x[i + 3] = b1 - b3;  // h = 2
        }
    } else if (n == 2) {
        const T u = x[0], v = x[1];
        x[0] = u + v, x[1] = u - v;
    }
    for (idx h = 4; h < n; h *= 2) {
        for (idx i = 0; i < n; i += 2 * h) {
            T* __restrict lo = x + i;
            T* __restrict hi = x + i + h;
            for (idx j = 0; j < h; ++j) {
                const T u = lo[j], v = hi[j];
                lo[j] = u + v;
                hi[j] = u - v;
            }
        }
    }
}

}  // namespace detail

// One row x (n,) <- x H_n in place, n a power of 2.
template <class T>
FASTNTK_SIMD_CLONES void fwht_row(T* x, idx n) noexcept {
    detail::fwht_inplace(x, n);
}

// Rows of an n_rows x n matrix (row stride ld) through fwht_row, in parallel.
template <class T>
void fwht_rows(T* a, idx n_rows, idx n, idx ld) noexcept {
#pragma omp parallel for schedule(static)
    for (idx i = 0; i < n_rows; ++i) fwht_row<T>(a + i * ld, n);
}

// TensorSRHT of one pair (x (p,), y (q,)) into out (m,), scratch (P + Q,) (see the header):
// a = H_P (s_x ∘ x~) in scratch[0, P), b = H_Q (s_y ∘ y~) in scratch[P, P + Q),
// out[j] = a[ix[j]] b[iy[j]] scale with scale = 1/sqrt(m). Indices must lie in [0, P), [0, Q).
template <class T>
FASTNTK_SIMD_CLONES void tensor_srht_row(const T* x, idx p, const T* y, idx q, const T* signs_x, idx P,
                                         const T* signs_y, idx Q, const std::int64_t* index_x,
                                         const std::int64_t* index_y, idx m, T scale, T* out, T* scratch) noexcept {
    T* a = scratch;
    T* b = scratch + P;
    for (idx k = 0; k < p; ++k) a[k] = signs_x[k] * x[k];
    std::fill(a + p, a + P, T(0));  // x~: x zero-padded to P
    for (idx k = 0; k < q; ++k) b[k] = signs_y[k] * y[k];
    std::fill(b + q, b + Q, T(0));
    detail::fwht_inplace(a, P);
    detail::fwht_inplace(b, Q);
    for (idx j = 0; j < m; ++j) out[j] = a[index_x[j]] * b[index_y[j]] * scale;
}

// TensorSRHT of the n row pairs (x[i] (p,), y[i] (q,)) into out[i] (m,); row strides ldx, ldy,
// ldo. The rows are split into n_chunks contiguous blocks run in parallel, block c using
// scratch[c (P + Q), (c + 1)(P + Q)) (the caller allocates n_chunks (P + Q) elements).
template <class T>
void tensor_srht_rows(const T* x, idx ldx, idx p, const T* y, idx ldy, idx q, idx n, const T* signs_x, idx P,
                      const T* signs_y, idx Q, const std::int64_t* index_x, const std::int64_t* index_y, idx m,
                      T* out, idx ldo, T* scratch, idx n_chunks) noexcept {
    const T scale = m > 0 ? static_cast<T>(1.0 / std::sqrt(static_cast<double>(m))) : T(0);
#pragma omp parallel for schedule(static)
    for (idx c = 0; c < n_chunks; ++c) {
        const idx i0 = n * c / n_chunks, i1 = n * (c + 1) / n_chunks;
        for (idx i = i0; i < i1; ++i)
            tensor_srht_row<T>(x + i * ldx, p, y + i * ldy, q, signs_x, P, signs_y, Q, index_x, index_y, m, scale,
                               out + i * ldo, scratch + c * (P + Q));
    }
}

// The products of a Fourier TensorSRHT (fastntk/features.py, _FourierSketch) from the two sides'
// half spectra: for rows i < n and pairs j < n_pairs, with â = ha[i, ia[j]] and b̂ = hb[i, ib[j]]
// (interleaved re, im; row strides lda, ldb in complex entries) each conjugated where its sign
// sa[j], sb[j] is -1 (the sign multiplies the imaginary part),
//   z = scale â b̂,  out[i, j] = Re z,  out[i, n_pairs + j] = Im z,
// and, when n_real is 1, out[i, 2 n_pairs] = real_scale Re(ha[i, 0] hb[i, 0]) (the zero
// frequencies' product). One pass over the output on the calling thread, no complex temporaries
// (the pass is bound by memory; in OpenMP threads it shared the cores with the BLAS threads
// still spinning after the projection before it, and was slower end to end).
template <class T>
FASTNTK_SIMD_CLONES void fourier_products(const T* ha, idx lda, const T* hb, idx ldb, idx n, const std::int64_t* ia,
                                          const std::int64_t* ib, const T* sa, const T* sb, idx n_pairs, int n_real,
                                          T scale, T real_scale, T* out, idx ldo) noexcept {
    for (idx i = 0; i < n; ++i) {
        const T* a = ha + 2 * i * lda;
        const T* b = hb + 2 * i * ldb;
        T* __restrict re = out + i * ldo;
        T* __restrict im = re + n_pairs;
        for (idx j = 0; j < n_pairs; ++j) {
            const T ar = a[2 * ia[j]], ai = sa[j] * a[2 * ia[j] + 1];
            const T br = b[2 * ib[j]], bi = sb[j] * b[2 * ib[j] + 1];
            re[j] = scale * (ar * br - ai * bi);
            im[j] = scale * (ar * bi + ai * br);
        }
        if (n_real) re[2 * n_pairs] = real_scale * (a[0] * b[0] - a[1] * b[1]);
    }
}

}  // namespace fastntk
