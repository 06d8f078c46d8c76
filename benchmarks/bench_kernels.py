r"""Infinite-width NNGP + NTK of fully-connected ReLU networks (fastntk.stax.kernel_fn).

Run from the repository root, in the environment where fastntk is installed::

    asv machine --yes
    asv run --python=same --quick                             # the whole grid, once each
    asv run --python=same --quick --bench "Kernels.time_kernel"   # one method
    asv run --python=same --quick --bench "\((1000|4000), "       # N <= 4000 only (CI)

Network: ``depth`` hidden layers Dense(512, W_std=√2, b_std=0.1) + Relu, then a readout
Dense(1, W_std=√2, b_std=0.1); kernels of x against itself (x2=None), get=('nngp', 'ntk').
``GemmFloor`` times the bare BLAS Gram matrix ``x @ y.T`` (y a copy of x) on the same
inputs: the floor fastntk's whole call is measured against (DESIGN §2). ``CrossBlock`` times a
block K(X, C) into preallocated ``out=`` arrays, the unit cost of the large-N solvers, and its
memory floor (``benchmarks/compare_blocks.py`` prints their ratio from one run).
"""

import numpy as np

from fastntk import solvers, stax

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


def cross_block_calls(n1, n2, d, depth, dtype, operator=False):
    """(block, floor): zero-argument callables on shared inputs X (n1, d), C (n2, d) (seed 0) and outputs.

    block: the NNGP + NTK of ``relu_kernel_fn(depth)`` between X and C into preallocated
    ``out=`` arrays (``operator``: through two :class:`fastntk.solvers.KernelOperator` blocks, whose
    per-point passes are computed here, once, as a solver does). floor: the BLAS Gram into one
    output plus one pass writing the other (``np.matmul(X, C.T, out=a)``, ``np.copyto(b, a)``).
    """
    rng = np.random.default_rng(0)
    x, c = rng.standard_normal((n1, d)).astype(dtype), rng.standard_normal((n2, d)).astype(dtype)
    a, b = np.empty((n1, n2), dtype), np.empty((n1, n2), dtype)
    kernel_fn = relu_kernel_fn(depth)
    if operator:
        op_nngp, op_ntk = (solvers.KernelOperator(kernel_fn, x, c, get, dtype=dtype) for get in GET)

        def block():
            op_nngp.block(out=a)
            op_ntk.block(out=b)
    else:
        def block():
            kernel_fn(x, c, GET, out={"nngp": a, "ntk": b})

    def floor():
        np.matmul(x, c.T, out=a)
        np.copyto(b, a)

    return block, floor


class CrossBlock:
    """K(X, C) of X (8000, 32) and C (2000, 32) into out=, depth 3: the call and its memory floor."""

    params = (["float32", "float64"],)
    param_names = ["dtype"]

    def setup(self, dtype):
        self.block, self.floor = cross_block_calls(8000, 2000, 32, 3, dtype)

    def time_block(self, dtype):
        self.block()

    def time_floor(self, dtype):
        self.floor()
