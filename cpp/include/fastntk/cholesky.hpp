// Blocked Cholesky factorization U^T U = A out of three BLAS/LAPACK calls that are safe to thread.
//
// OpenBLAS's threaded ?potrf (dpotrf_U_parallel, which threads its trailing updates with ?syrk)
// crashes with a segmentation fault on large matrices: seen with the OpenBLAS 0.3.30/0.3.31 of
// NumPy's and SciPy's wheels, SkylakeX kernels, 2 threads, from n ≈ 16,000 (?potrf) and n ≈ 24,000
// (a blocked loop over threaded ?syrk). Its threaded ?gemm and ?trsm are the most exercised paths of
// the library and do not; this right-looking loop uses only them for the O(n^3) work, with ?potrf
// on one diagonal block at a time (order ≤ `block`), and runs at the speed of threaded ?potrf where
// that one works. The BLAS are Fortran functions passed as pointers (SciPy's cython_blas/
// cython_lapack capsules), so the caller decides which library and how many threads.
#pragma once

#include <algorithm>
#include <cstddef>

#include "fastntk/fc.hpp"  // idx

namespace fastntk {

// Fortran BLAS/LAPACK routines as scipy.linalg.cython_blas/cython_lapack export them (32-bit integers).
template <class T>
using Gemm = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k, const T* alpha,
                      const T* a, const int* lda, const T* b, const int* ldb, const T* beta, T* c, const int* ldc);
template <class T>
using Trsm = void (*)(const char* side, const char* uplo, const char* transa, const char* diag, const int* m,
                      const int* n, const T* alpha, const T* a, const int* lda, T* b, const int* ldb);
template <class T>
using Potrf = void (*)(const char* uplo, const int* n, T* a, const int* lda, int* info);

template <class T>
struct CholeskyBlas {
    Potrf<T> potrf;
    Trsm<T> trsm;
    Gemm<T> gemm;
};

// A (n, n) column-major with leading dimension lda ≥ n: its upper triangle (read) becomes U, its
// strict lower triangle is set to 0 (as LAPACK's callers expect of a clean factor). Step k:
//   U11 = potrf(A11);  U12 = U11^{-T} A12 (trsm);  A22 -= U12^T U12 (gemm, upper triangle only,
// `block` columns of A22 at a time, each from its first row to the diagonal block).
// Returns LAPACK's info: 0, or j ≥ 1 when the leading minor of order j is not positive definite
// (then U is partial, as ?potrf leaves it).
template <class T>
int cholesky_upper(T* a, idx n, idx lda, idx block, const CholeskyBlas<T>& blas) {
    const T one = 1, minus_one = -1;
    const int ld = static_cast<int>(lda);
    auto at = [=](idx i, idx j) { return a + i + j * lda; };
    for (idx k0 = 0; k0 < n; k0 += block) {
        const idx kb = std::min(block, n - k0), m = n - k0 - kb;
        const int ikb = static_cast<int>(kb), im = static_cast<int>(m);
        int info = 0;
        blas.potrf("U", &ikb, at(k0, k0), &ld, &info);
        if (info != 0) return static_cast<int>(k0) + info;
        if (m == 0) break;
        blas.trsm("L", "U", "T", "N", &ikb, &im, &one, at(k0, k0), &ld, at(k0, k0 + kb), &ld);
        for (idx j0 = k0 + kb; j0 < n; j0 += block) {
            const idx j1 = std::min(n, j0 + block);
            const int rows = static_cast<int>(j1 - k0 - kb), cols = static_cast<int>(j1 - j0);
            blas.gemm("T", "N", &rows, &cols, &ikb, &minus_one, at(k0, k0 + kb), &ld, at(k0, j0), &ld, &one,
                      at(k0 + kb, j0), &ld);
        }
    }
    for (idx j = 0; j < n; ++j) std::fill(at(j + 1, j), at(n, j), T(0));
    return 0;
}

}  // namespace fastntk
