"""solvers.KernelOperator: blocks K(x1[rows], x2[cols]) of any shape, each point's per-point pass computed
once for all of them, products K @ V and Kᵀ @ V by row blocks."""

import numpy as np
import pytest
from conftest import assert_close, assert_rounding

from fastntk import infinite, solvers, stax


def _network():
    return stax.serial(stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(64, 1.2, 0.05), stax.Erf(),
                       stax.Dense(1, 1.0, 0.1))[2]


def _inputs(n1=90, n2=40, d=5, dtype=np.float64):
    rng = np.random.default_rng(3)
    return rng.standard_normal((n1, d)).astype(dtype), rng.standard_normal((n2, d)).astype(dtype)


@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_of_any_shape_are_the_kernel(get, dtype):
    kernel_fn, (x, c) = _network(), _inputs(dtype=dtype)
    full = kernel_fn(x, c, get)
    op = solvers.KernelOperator(kernel_fn, x, c, get)
    assert op.shape == (90, 40) and op.block_dtype == dtype
    rows, cols = np.array([5, 0, 89, 44]), np.array([39, 1, 7])
    for r, s in ((slice(None), slice(None)), (slice(3, 4), slice(10, 37)), (rows, cols), (slice(60, 90), cols)):
        block = op.block(r, s)
        assert block.dtype == dtype
        assert_rounding(block, full[r][:, s], f"block {r}, {s}")
    out = np.empty((4, 3), dtype)
    assert op.block(rows, cols, out=out) is out
    both = op.block(rows, cols, get=("nngp", "ntk"))
    assert_rounding(both[get], full[rows][:, cols], "both kernels from one pass")


def test_diagonal_and_products_of_the_symmetric_operator():
    kernel_fn, (x, _) = _network(), _inputs()
    k = kernel_fn(x, None, "ntk")
    op = solvers.KernelOperator(kernel_fn, x, block_size=17)
    assert op.symmetric and op.shape == (90, 90)
    assert_rounding(op.diagonal(), kernel_fn(x, None, "ntk", diagonal=True), "diagonal")
    v = np.random.default_rng(0).standard_normal((90, 3))
    assert_close(op @ v, k @ v, 1e-13, "K @ V")
    assert_close(op @ v[:, 0], k @ v[:, 0], 1e-13, "K @ v")


def test_transposed_products_of_a_cross_operator():
    kernel_fn, (x, c) = _network(), _inputs()
    k = kernel_fn(x, c, "nngp")
    op = solvers.KernelOperator(kernel_fn, x, c, "nngp", block_size=32)
    w, v = np.random.default_rng(1).standard_normal((90, 2)), np.random.default_rng(2).standard_normal((40, 2))
    assert_close(op @ v, k @ v, 1e-13, "K @ V")
    assert_close(op.T @ w, k.T @ w, 1e-13, "Kᵀ @ W")
    with pytest.raises(ValueError, match="symmetric"):
        op.diagonal()


def test_per_point_passes_are_computed_once(monkeypatch):
    """The solvers' cost model: a block costs its Gram and the fused pass, never the per-point pass."""
    kernel_fn, (x, c) = _network(), _inputs()
    calls = []
    real = infinite.per_point
    monkeypatch.setattr(infinite, "per_point", lambda *a: calls.append(1) or real(*a))
    op = solvers.KernelOperator(kernel_fn, x, c)
    assert len(calls) == 2  # x1 and x2, once
    op @ np.ones((40, 1))
    op.block(slice(0, 10), np.arange(5))
    assert len(calls) == 2


def test_any_callable_kernel_is_an_operator():
    x, _ = _inputs()
    rbf = lambda a, b, get: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1))  # noqa: E731
    op = solvers.KernelOperator(rbf, x)
    assert_close(op @ np.ones(90), rbf(x, x, "ntk").sum(1), 1e-13, "callable")
    assert_close(op.diagonal(), np.ones(90), 1e-15, "callable diagonal")


def test_bad_arguments_are_named():
    kernel_fn, (x, c) = _network(), _inputs()
    with pytest.raises(TypeError, match="kernel_fn must be callable"):
        solvers.KernelOperator(None, x)
    with pytest.raises(ValueError, match="get must name one kernel"):
        solvers.KernelOperator(kernel_fn, x, get=("nngp", "ntk"))
    with pytest.raises(ValueError, match="x2 must have the same number of features"):
        solvers.KernelOperator(kernel_fn, x, c[:, :3])
    with pytest.raises(ValueError, match="block_size"):
        solvers.KernelOperator(kernel_fn, x, block_size=0)
    with pytest.raises(ValueError, match="x1 contains NaN"):
        solvers.KernelOperator(kernel_fn, np.full((3, 5), np.nan))
