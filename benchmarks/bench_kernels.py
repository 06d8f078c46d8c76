"""Infinite-width NNGP + NTK of fully-connected ReLU networks (fastntk.stax.kernel_fn).

Run from the repository root, in the environment where fastntk is installed::

    asv machine --yes
    asv run --python=same --quick                             # the whole grid, once each
    asv run --python=same --quick --bench "Kernels.time_kernel"   # one method
    asv run --python=same --quick --bench "\((1000|4000), "       # N <= 4000 only (CI)

Network: ``depth`` hidden layers Dense(512, W_std=√2, b_std=0.1) + Relu, then a readout
Dense(1, W_std=√2, b_std=0.1); kernels of x against itself (x2=None), get=('nngp', 'ntk').
``GemmFloor`` times the bare BLAS Gram matrix ``x @ y.T`` (y a copy of x) on the same
inputs: the floor fastntk's whole call is measured against (DESIGN §2).
"""

import numpy as np

from fastntk import stax

W_STD, B_STD = np.sqrt(2.0), 0.1
GET = ("nngp", "ntk")


def relu_kernel_fn(depth):
    """kernel_fn of ``depth`` hidden Dense(512) + Relu layers and a Dense(1) readout."""
    return stax.fc_network(depth, "relu", W_STD, B_STD, width=512)[2]


def inputs(n, d, dtype, seed=0):
    """Standard-normal inputs of shape (n, d), seeded."""
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


class Kernels:
    """kernel_fn(x, None, ('nngp', 'ntk')) over the full grid."""

    params = ([1000, 4000, 8000], [64, 784], [1, 3, 10], ["float32", "float64"])
    param_names = ["N", "d", "depth", "dtype"]
    timeout = 300

    def setup(self, N, d, depth, dtype):
        self.x = inputs(N, d, dtype)
        self.kernel_fn = relu_kernel_fn(depth)

    def time_kernel(self, N, d, depth, dtype):
        self.kernel_fn(self.x, None, GET)

    def peakmem_kernel(self, N, d, depth, dtype):
        self.kernel_fn(self.x, None, GET)


class GemmFloor:
    """x @ y.T with y a copy of x: the BLAS gemm that fastntk's call is compared with."""

    params = ([1000, 4000, 8000], [64, 784], ["float32", "float64"])
    param_names = ["N", "d", "dtype"]

    def setup(self, N, d, dtype):
        self.x = inputs(N, d, dtype)
        self.y = self.x.copy()

    def time_gemm(self, N, d, dtype):
        self.x @ self.y.T
