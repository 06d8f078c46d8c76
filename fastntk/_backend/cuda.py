"""The GPU backend: CuPy arrays in, CuPy arrays out.

:class:`DeviceBackend` is the CPU backend's plan and driver logic over device arrays: the Gram by
cuBLAS (``xp.matmul``), each fused run of layers by one kernel launch per tile (one thread per
entry, :func:`fastntk::fc_tile_entry` of ``cpp/include/fastntk/dual.hpp``, compiled by NVRTC from
``cpp/cuda/kernels.cu``), the per-point pass (O(N·depth)) on the host, and a layer whose dual
kernels are Python functions (quadrature, user duals) on the host too (its tile copied there and
back). What it runs on is given: :func:`cupy_backend` builds it on CuPy and the GPU kernels;
:func:`host_backend` builds the same object on NumPy and the same per-entry code compiled for the
CPU (``_core.fc_tile_entries``), so the CPU suite tests all of it but the launches themselves.

Not on the GPU yet: convolutional, pooling and LayerNorm layers (a clear NotImplementedError).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .cpu import CpuBackend, _core

__all__ = ["NO_SPATIAL", "DeviceBackend", "OP_DTYPE", "cupy_backend", "host_backend", "kernel_source", "pack_ops"]

#: The layout of ``fastntk::Op`` (dual.hpp): an int kind, padding, four double parameters.
OP_DTYPE = np.dtype([("kind", "<i4"), ("pad", "<i4"), ("p", "<f8", (4,))])

#: Threads per block of the tile kernels: 128 columns by 2 rows (coalesced rows of the tile).
BLOCK = (128, 2, 1)

#: Blocks along the rows of one launch at most (each thread strides over the rest).
MAX_ROW_BLOCKS = 32768


def pack_ops(ops):
    """The plan's float64 op rows (n_ops, 5) [kind, p0..p3] as an array of ``fastntk::Op`` structs."""
    packed = np.zeros(len(ops), OP_DTYPE)
    packed["kind"] = ops[:, 0].astype(np.int32)
    packed["p"] = ops[:, 1:]
    return packed


def kernel_source():
    """(source of the CUDA kernels, the include directory of the C++ headers they use): installed
    beside the compiled module ``fastntk._core`` by the build (CMakeLists.txt)."""
    home = Path(_core.__file__).parent
    return (home / "cuda" / "kernels.cu").read_text(), home / "include"


class DeviceBackend(CpuBackend):
    """The backend of arrays in the namespace ``xp``, with ``kernels`` computing fused runs and mirrors.

    kernels : an object with ``fc_tile(sigma, nngp, ntk, var1, var2, ops, rho_tol)`` (the arguments of
    ``_core.fc_tile``, arrays of ``xp``; ops the plan's float64 rows) and ``mirror_upper(a)``.
    to_host, from_host : array conversions between ``xp`` and NumPy.
    available_memory : a function returning the bytes new arrays of ``xp`` can take (None: unknown).
    """

    name = "cuda"

    def __init__(self, xp, kernels, to_host, from_host, available_memory):
        self.xp, self.kernels = xp, kernels
        self.to_host, self.from_host = to_host, from_host
        self.available_memory = available_memory

    def fusable(self, plan, d, symmetric):
        """Never: the Gram is one cuBLAS GEMM per row block, then the tile kernels read it."""
        return False

    def gram(self, x1, x2, sigma, blocks):
        """sigma = x1·x2ᵀ by row blocks ``sigma[i0:i1, c0:]`` (the upper triangle's when x2 is None)."""
        for i0, i1, c0 in blocks:
            self.xp.matmul(x1[i0:i1], (x1 if x2 is None else x2)[c0:].T, out=sigma[i0:i1, c0:])

    def diagonal(self, plan, sq_norms, with_ntk, ntk=None):
        """The per-point pass on the host (O(N·depth)): NumPy results, as the CPU backend's."""
        return super().diagonal(plan, self.to_host(sq_norms), with_ntk,
                                None if ntk is None else self.to_host(ntk))

    def mirror_upper(self, a):
        self.kernels.mirror_upper(a)

    def _fused(self, sigma, nngp, ntk, var1, var2, ops, rho_tol):
        xp = self.xp
        self.kernels.fc_tile(sigma, nngp, ntk, xp.ascontiguousarray(self.from_host(var1)),
                             xp.ascontiguousarray(self.from_host(var2)), ops, rho_tol)

    def _rule(self, rule, k, t, v1, v2):
        """A Python-level layer on the host: the tile copied there, computed, and copied back."""
        hk, ht = self.to_host(k).copy(), None if t is None else self.to_host(t).copy()
        super()._rule(rule, hk, ht, v1, v2)
        k[...] = self.from_host(hk)
        if t is not None:
            t[...] = self.from_host(ht)

    def tiles(self, *args, **kwargs):
        raise NotImplementedError(NO_SPATIAL)

    def conv_window(self, *args, **kwargs):
        raise NotImplementedError(NO_SPATIAL)

    def conv_chain(self, *args, **kwargs):
        raise NotImplementedError(NO_SPATIAL)


#: Why a spatial network does not run on this backend (raised before any work is done).
NO_SPATIAL = ("convolutional, pooling and LayerNorm layers do not run on the GPU yet; pass NumPy arrays "
               "(cupy.asnumpy(x)) or backend='cpu'")


class _HostKernels:
    """The GPU kernels' per-entry code compiled for the host (``_core.fc_tile_entries``)."""

    fc_tile = staticmethod(_core.fc_tile_entries)
    mirror_upper = staticmethod(_core.mirror_upper)


def host_backend():
    """:class:`DeviceBackend` on NumPy arrays and the host build of the GPU kernels' code (the CPU suite's)."""
    return DeviceBackend(np, _HostKernels(), np.asarray, np.asarray, CpuBackend.available_memory)


class _CudaKernels:
    """The NVRTC-compiled kernels of ``cpp/cuda/kernels.cu``, launched on CuPy arrays."""

    def __init__(self, cupy):
        self.cp = cupy
        source, include = kernel_source()
        self.module = cupy.RawModule(code=source, options=("--std=c++17", f"-I{include}"))

    def _row_stride(self, a):
        return a.strides[0] // a.itemsize if a.shape[0] > 1 else a.shape[1]

    def _grid(self, n1, n2):
        return (-(-n2 // BLOCK[0]), min(MAX_ROW_BLOCKS, -(-n1 // BLOCK[1])), 1)

    def fc_tile(self, sigma, nngp, ntk, var1, var2, ops, rho_tol):
        cp = self.cp
        n1, n2 = sigma.shape
        if n1 == 0 or n2 == 0:
            return
        kernel = self.module.get_function(f"fc_tile_{sigma.dtype.name}")
        packed = cp.asarray(pack_ops(ops).view(np.uint8))
        null = np.uint64(0)
        kernel(self._grid(n1, n2), BLOCK, (
            sigma, np.int64(self._row_stride(sigma)),
            null if nngp is None else nngp, np.int64(0 if nngp is None else self._row_stride(nngp)),
            null if ntk is None else ntk, np.int64(0 if ntk is None else self._row_stride(ntk)),
            np.int64(n1), np.int64(n2), var1, np.int64(n1), var2, np.int64(n2),
            packed, np.int32(len(ops)), np.float64(rho_tol)))

    def mirror_upper(self, a):
        n = a.shape[0]
        if n < 2:
            return
        kernel = self.module.get_function(f"mirror_upper_{a.dtype.name}")
        kernel(self._grid(n, n), BLOCK, (a, np.int64(n), np.int64(self._row_stride(a))))


@functools.cache
def cupy_backend():
    """:class:`DeviceBackend` on CuPy and the current GPU; ImportError / RuntimeError naming what is missing."""
    try:
        import cupy
    except ImportError as e:
        raise ImportError('the GPU backend needs CuPy: pip install "fastntk[gpu]" (cupy-cuda12x)') from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as e:
        raise RuntimeError(f"the GPU backend found no usable CUDA GPU ({e}); pass NumPy arrays or backend='cpu'") from e
    if n == 0:
        raise RuntimeError("the GPU backend found no CUDA GPU; pass NumPy arrays or backend='cpu'")
    return DeviceBackend(cupy, _CudaKernels(cupy), cupy.asnumpy, cupy.asarray, functools.partial(_device_memory, cupy))


def _device_memory(cupy):
    """Bytes free on the current GPU, counting what CuPy's memory pool holds but does not use."""
    pool = cupy.get_default_memory_pool()
    return cupy.cuda.Device().mem_info[0] + pool.free_bytes()

