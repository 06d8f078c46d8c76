"""Kernel regression and gradient-descent predictions (fastntk.predict, fastntk.solvers).

Run from the repository root, in the environment where fastntk is installed::

    asv machine --yes
    asv run --python=same --quick --bench bench_predict
    asv run --python=same --quick --bench "GradientDescentMSE.time_predict"

Problem (seeded): the NTK of one hidden Dense(512, W_std=√2, b_std=0.1) + Relu layer and a
Dense(1) readout on standard-normal inputs (d=64): ``k_train_train`` (N, N),
``k_test_train`` (1000, N); O=10 outputs; ``diag_reg=1e-4`` (relative). ``EighFloor`` times
``numpy.linalg.eigh`` of the same ``k_train_train``: the issue's target is predictions at 10
times in ≤ 1.2× that, with at most two N×N float64 temporaries (compare the peakmem rows
with 8·N² bytes: 512 MB at N=8000).
"""

import numpy as np

from fastntk import predict, stax

N_TEST, OUTPUTS, DIAG_REG = 1000, 10, 1e-4


def problem(n, n_test=N_TEST, outputs=OUTPUTS, seed=0):
    """(k_train_train, k_test_train, y_train, fx_train_0, fx_test_0), seeded."""
    kernel_fn = stax.serial(stax.Dense(512, W_std=2**0.5, b_std=0.1), stax.Relu(),
                            stax.Dense(1, W_std=2**0.5, b_std=0.1))[2]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_test, 64))
    k = np.asarray(kernel_fn(x[:n], None, "ntk"))
    ktd = np.asarray(kernel_fn(x[n:], x[:n], "ntk"))
    y = rng.standard_normal((n, outputs))
    return k, ktd, y, 0.1 * rng.standard_normal((n, outputs)), 0.1 * rng.standard_normal((n_test, outputs))


class GradientDescentMSE:
    """gradient_descent_mse(k, y)(t, fx_train_0, fx_test_0, k_test_train): factorization + predictions."""

    params = ([1000, 4000, 8000], [1, 10, 100])
    param_names = ["N", "n_times"]
    timeout = 900

    def setup(self, N, n_times):
        self.k, self.ktd, self.y, self.f0, self.ft0 = problem(N)
        self.t = np.logspace(0, 4, n_times) * N

    def _run(self):
        fn = predict.gradient_descent_mse(self.k, self.y, 1.0, DIAG_REG)
        return fn(self.t, self.f0, self.ft0, self.ktd)

    def time_predict(self, N, n_times):
        self._run()

    def peakmem_predict(self, N, n_times):
        self._run()


class EighFloor:
    """numpy.linalg.eigh(k_train_train): the floor GradientDescentMSE is measured against."""

    params = [1000, 4000, 8000]
    param_names = ["N"]
    timeout = 900

    def setup(self, N):
        self.k = problem(N, n_test=1)[0]

    def time_eigh(self, N):
        np.linalg.eigh(self.k)

    def peakmem_eigh(self, N):
        np.linalg.eigh(self.k)


class KernelRidge:
    """kernel_ridge(k, y, 1e-4): Cholesky, conjugate gradients, and CG with a rank-200 Nyström preconditioner."""

    params = ([1000, 4000], ["cholesky", "cg", "cg_nystrom"])
    param_names = ["N", "solver"]
    timeout = 600

    def setup(self, N, solver):
        self.k, self.ktd, self.y, _, _ = problem(N)
        self.kw = {"solver": "cg", "preconditioner": "nystrom", "rank": 200} if solver == "cg_nystrom" else {
            "solver": solver}

    def time_kernel_ridge(self, N, solver):
        predict.kernel_ridge(self.k, self.y, DIAG_REG, k_test_train=self.ktd, tol=1e-8, maxiter=20 * N, **self.kw)

    def peakmem_kernel_ridge(self, N, solver):
        predict.kernel_ridge(self.k, self.y, DIAG_REG, k_test_train=self.ktd, tol=1e-8, maxiter=20 * N, **self.kw)


class Falkon:
    """kernel_ridge(KernelOperator, y, 1e-4, solver='falkon'): Nyström KRR on M centres, no N×N kernel.

    The inputs (d=32, seeded) and O=1 target of ``compare_large_n.py``; the NTK of ReLU depth 3.
    Timed: the operator's per-point pass, K_NM stored in float32 (or recomputed, ``store=False``),
    CG to relative residual 1e-8 (at most 100 iterations) and the test outputs (1000 points).
    """

    params = ([5000, 20000], [500, 1000], [True, False])
    param_names = ["N", "M", "store"]
    timeout = 600

    def setup(self, N, M, store):
        from fastntk import solvers

        from .compare_large_n import kernel_fn
        from .compare_large_n import problem as large_problem

        self.x, self.y, self.xt, _ = large_problem(N, 1000)
        self.kernel_fn, self.operator = kernel_fn(), solvers.KernelOperator
        self.kw = {"solver": "falkon", "n_centers": M, "tol": 1e-8, "maxiter": 100,
                   "memory_budget": None if store else 0}

    def _run(self):
        op, op_test = self.operator(self.kernel_fn, self.x), self.operator(self.kernel_fn, self.xt, self.x)
        return predict.kernel_ridge(op, self.y, DIAG_REG, k_test_train=op_test, **self.kw)

    def time_falkon(self, N, M, store):
        self._run()

    def peakmem_falkon(self, N, M, store):
        self._run()
