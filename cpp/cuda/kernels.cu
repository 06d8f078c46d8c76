// CUDA kernels of the GPU backend (fastntk/_backend/cuda.py), compiled at run time by NVRTC with
// cpp/include on the include path. Only the thread-to-entry mapping is written here: every formula
// is dual.hpp's, which the CPU build compiles and the CPU suite tests (_core.fc_tile_entries runs
// fc_tile_entry, the function each thread below calls).
#include "fastntk/dual.hpp"

namespace {

// One thread per entry: columns along x (coalesced rows), rows along y, grid-stride over rows. ops: the
// launch's Op structs in device memory (every thread reads the same one at a time: a broadcast).
template <class T>
__device__ void fc_tile(const T* sigma, long long ld_sigma, T* nngp, long long ld_nngp, T* ntk, long long ld_ntk,
                        long long n1, long long n2, const double* var1, long long ld_var1, const double* var2,
                        long long ld_var2, const fastntk::Op* ops, int n_ops, double rho_tol) {
    const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (j >= n2) return;
    for (long long i = static_cast<long long>(blockIdx.y) * blockDim.y + threadIdx.y; i < n1;
         i += static_cast<long long>(gridDim.y) * blockDim.y)
        fastntk::fc_tile_entry<T>(i, j, sigma, ld_sigma, nngp, ld_nngp, ntk, ld_ntk, var1, ld_var1, var2, ld_var2, ops,
                                  n_ops, rho_tol);
}

// a[j, i] = a[i, j] below the diagonal of an n x n array of row stride ld.
template <class T>
__device__ void mirror_upper(T* a, long long n, long long ld) {
    const long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    for (long long i = static_cast<long long>(blockIdx.y) * blockDim.y + threadIdx.y; i < n;
         i += static_cast<long long>(gridDim.y) * blockDim.y)
        if (j < i) a[i * ld + j] = a[j * ld + i];
}

}  // namespace

#define FASTNTK_FC_TILE(T, NAME)                                                                                  \
    extern "C" __global__ void NAME(const T* sigma, long long ld_sigma, T* nngp, long long ld_nngp, T* ntk,      \
                                    long long ld_ntk, long long n1, long long n2, const double* var1,            \
                                    long long ld_var1, const double* var2, long long ld_var2,                    \
                                    const fastntk::Op* ops, int n_ops, double rho_tol) {                           \
        fc_tile<T>(sigma, ld_sigma, nngp, ld_nngp, ntk, ld_ntk, n1, n2, var1, ld_var1, var2, ld_var2, ops,        \
                   n_ops, rho_tol);                                                                              \
    }
FASTNTK_FC_TILE(float, fc_tile_float32)
FASTNTK_FC_TILE(double, fc_tile_float64)

extern "C" __global__ void mirror_upper_float32(float* a, long long n, long long ld) { mirror_upper(a, n, ld); }
extern "C" __global__ void mirror_upper_float64(double* a, long long n, long long ld) { mirror_upper(a, n, ld); }
