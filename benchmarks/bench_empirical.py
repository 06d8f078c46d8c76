"""Empirical (finite-width) NTK of an MLP (fastntk.empirical.empirical_ntk_fn).

Run from the repository root, in the environment where fastntk is installed::

    asv run --python=same --quick --bench "EmpiricalNtk"
    asv run --python=same --quick --bench "EmpiricalNtk.time_ntk\\((256|1024), 512"   # CI-sized

Network: 784-m-m-10, ReLU, 'ntk' parameterization (W_std=√2, b_std=0.1), float32 inputs
and parameters, x2=None; ``kernel`` 'trace' is the trace NTK (N, N) (neural-tangents'
``trace_axes=(-1,)``), 'full' the whole (N, N, O, O) kernel (N ≤ 1024 only: 4 GiB at N=2048).
The side-by-side comparison with neural-tangents and torch.func is compare_empirical.py.
"""

import numpy as np

from fastntk import stax
from fastntk.empirical import empirical_ntk_fn

W_STD, B_STD, D_IN, N_OUT = np.sqrt(2.0), 0.1, 784, 10


def mlp(width):
    """(init_fn, apply_fn) of the d-width-width-10 ReLU MLP."""
    init_fn, apply_fn, _ = stax.serial(stax.Dense(width, W_STD, B_STD), stax.Relu(),
                                       stax.Dense(width, W_STD, B_STD), stax.Relu(), stax.Dense(N_OUT, W_STD, B_STD))
    return init_fn, apply_fn


def float32_params(init_fn):
    return [p if not p else (p[0].astype(np.float32), p[1].astype(np.float32)) for p in init_fn(0, (1, D_IN))[1]]


class EmpiricalNtk:
    """empirical_ntk_fn(apply_fn, trace_axes)(x, None, params) over N, width and kernel."""

    params = ([256, 1024, 4096], [512, 2048], ["trace", "full"])
    param_names = ["N", "width", "kernel"]
    timeout = 300

    def setup(self, N, width, kernel):
        if kernel == "full" and N > 1024:
            raise NotImplementedError  # asv skips: the (N, N, 10, 10) result alone is 6.3 GiB at N=4096
        init_fn, apply_fn = mlp(width)
        self.params_ = float32_params(init_fn)
        self.x = np.random.default_rng(0).standard_normal((N, D_IN)).astype(np.float32)
        self.ntk_fn = empirical_ntk_fn(apply_fn, trace_axes=(-1,) if kernel == "trace" else ())

    def time_ntk(self, N, width, kernel):
        self.ntk_fn(self.x, None, self.params_)

    def peakmem_ntk(self, N, width, kernel):
        self.ntk_fn(self.x, None, self.params_)


class EmpiricalNtkCross:
    """Trace NTK of x1 against a separate x2 (all tiles, no symmetry), N1 = N2 = N."""

    params = ([256, 1024, 4096], [512, 2048])
    param_names = ["N", "width"]
    timeout = 300

    def setup(self, N, width):
        init_fn, apply_fn = mlp(width)
        self.params_ = float32_params(init_fn)
        rng = np.random.default_rng(0)
        self.x1 = rng.standard_normal((N, D_IN)).astype(np.float32)
        self.x2 = rng.standard_normal((N, D_IN)).astype(np.float32)
        self.ntk_fn = empirical_ntk_fn(apply_fn)

    def time_ntk(self, N, width):
        self.ntk_fn(self.x1, self.x2, self.params_)
