"""fastntk.distributed: kernels, operator products and Nyström products of dask arrays equal the
single-process NumPy results, on dask's local threads and on a two-worker LocalCluster.

Agreement: the per-point passes (cov1/cov2 of x1 against x2, diagonal=True) are the NumPy ones
bit for bit; kernels and products to rounding (a block's Gram comes from BLAS on the chunk pair,
products are summed in another order); the symmetric kernel is exactly symmetric.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close, assert_rounding, child_process

from fastntk import predict, solvers, stax

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

NETWORKS = {
    "relu": stax.serial(stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(64, 1.5, 0.1), stax.Relu(),
                        stax.Dense(1, 1.5, 0.1))[2],
    "branched": stax.serial(stax.Dense(64, 1.3, 0.2), stax.FanOut(2),
                            stax.parallel(stax.serial(stax.Erf(), stax.Dense(64, 1.2, 0.1)), stax.Dense(64, 1.1)),
                            stax.FanInSum(), stax.Relu(), stax.Dense(1, 1.0, 0.05))[2],
}
KERNEL_FN = NETWORKS["relu"]


def _inputs(dtype=np.float64):
    """x1 (70, 5) in row chunks of 20 and x2 (45, 5) in chunks of 16 (uneven last chunks), NumPy and dask."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((70, 5)).astype(dtype), rng.standard_normal((45, 5)).astype(dtype)
    return x1, x2, da.from_array(x1, chunks=(20, 5)), da.from_array(x2, chunks=(16, 5))


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two single-threaded worker processes (tasks and the network are pickled)."""
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c, \
            distributed.Client(c, set_as_default=False) as client:
        yield client


@pytest.fixture(params=["threads", "cluster"])
def scheduler(request):
    """The active scheduler: dask's default (local threads, no Client) or the cluster's Client."""
    if request.param == "threads":
        assert dask.base.get_scheduler() is None  # no Client: dask's own default
        yield None
        return
    client = request.getfixturevalue("cluster")
    with client.as_current():
        yield client


def _transitions(client):
    """The number of task state transitions the cluster's scheduler has made (it grows as a graph runs)."""
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_kernels_equal_numpy(scheduler, net, symmetric):
    kernel_fn = NETWORKS[net]
    x1, x2, d1, d2 = _inputs()
    ref = kernel_fn(x1, None if symmetric else x2, ("nngp", "ntk"))
    before = scheduler and _transitions(scheduler)
    k = kernel_fn(d1, None if symmetric else d2, ("nngp", "ntk"))
    assert isinstance(k.nngp, da.Array)
    assert isinstance(k.ntk, da.Array)
    assert k.ntk.chunks == (d1.chunks[0], (d1 if symmetric else d2).chunks[0])
    nngp, ntk, cov1, cov2 = dask.compute(k.nngp, k.ntk, k.cov1, k.cov2)
    assert_rounding(nngp, ref.nngp, "nngp")
    assert_rounding(ntk, ref.ntk, "ntk")
    if symmetric:
        np.testing.assert_array_equal(ntk, ntk.T)  # mirrored blocks
        assert_rounding(cov1, ref.cov1, "cov1")  # NumPy's symmetric path takes x·x from the Gram's diagonal
        assert cov2 is None
    else:
        np.testing.assert_array_equal(cov1, ref.cov1)
        np.testing.assert_array_equal(cov2, ref.cov2)
    assert (k.shape1, k.shape2, k.x1_is_x2, k.is_gaussian) == (ref.shape1, ref.shape2, ref.x1_is_x2, ref.is_gaussian)
    if scheduler is not None:  # the blocks ran on the cluster's workers
        assert _transitions(scheduler) > before + 4 * k.ntk.npartitions


def test_symmetric_kernel_computes_each_block_above_the_diagonal_once():
    _, _, d1, _ = _inputs()  # 4 row chunks: 4·5/2 = 10 blocks, shared by the NNGP and the NTK
    k = KERNEL_FN(d1, None, ("nngp", "ntk"))
    graph = {**dict(k.nngp.__dask_graph__()), **dict(k.ntk.__dask_graph__())}
    assert sum(dask.utils.key_split(key) == "block_task" for key in graph) == 10


def test_per_point_fields_diagonal_and_float32(scheduler):
    x1, x2, d1, d2 = _inputs()
    for get in ("nngp", "ntk", ("ntk",)):
        np.testing.assert_array_equal(dask.compute(KERNEL_FN(d1, None, get, diagonal=True))[0],
                                      KERNEL_FN(x1, None, get, diagonal=True))
    np.testing.assert_array_equal(KERNEL_FN(d1, d2, "cov2").compute(), KERNEL_FN(x1, x2, "cov2"))
    k = KERNEL_FN(d1, None, ("ntk", "cov1"), diagonal_batch=False)
    assert_rounding(k.cov1.compute(), KERNEL_FN(x1, None, "cov1", diagonal_batch=False), "cov1 of the batch")
    f1, f2, e1, e2 = _inputs(np.float32)
    k32 = KERNEL_FN(e1, e2, "ntk")
    assert k32.dtype == np.float32
    assert_rounding(k32.compute(), KERNEL_FN(f1, f2, "ntk"), "float32")
    assert_rounding(KERNEL_FN(e1, e2, "ntk", dtype=np.float64).compute(), KERNEL_FN(f1, f2, "ntk", dtype=np.float64),
                    "dtype=float64")


def test_numpy_and_dask_inputs_mix():
    x1, x2, d1, d2 = _inputs()
    ref = KERNEL_FN(x1, x2, "ntk")
    for a, b in ((x1, d2), (d1, x2), (d1, x2.tolist())):
        k = KERNEL_FN(a, b, "ntk")
        assert isinstance(k, da.Array)
        assert_rounding(k.compute(), ref, "mixed")
    same = KERNEL_FN(d1, da.from_array(x1.copy(), chunks=(30, 5)), ("nngp",))  # equal values, another array
    assert same.x1_is_x2
    assert KERNEL_FN(x1, x1.copy(), ("nngp",)).x1_is_x2


def test_dense_layers_layout_is_read_from_dask_inputs():
    kernel_fn = stax.serial(stax.Dense(8, 1.5, 0.1, batch_axis=1, channel_axis=0), stax.Relu(),
                            stax.Dense(1, 1.5, 0.1, batch_axis=1, channel_axis=0))[2]
    x = np.random.default_rng(4).standard_normal((5, 30))  # (d, N)
    k = kernel_fn(da.from_array(x, chunks=(5, 10)), None, "ntk")
    assert k.chunks == ((10, 10, 10), (10, 10, 10))
    assert_rounding(k.compute(), kernel_fn(x, None, "ntk"), "batch_axis=1")


def test_values_are_checked_chunk_by_chunk_when_computed():
    x1, x2, d1, d2 = _inputs()
    bad = x1.copy()
    bad[45, 2] = np.nan  # in the third chunk
    k = KERNEL_FN(da.from_array(bad, chunks=(20, 5)), d2, "ntk")  # lazy: nothing is read yet
    with pytest.raises(ValueError, match=r"x1 contains NaN \(first at index \(5, 2\)\)"):
        k.compute()
    huge = x2.copy()
    huge[0, 0] = 1e300
    with pytest.raises(ValueError, match="x2 has entries up to 1e\\+300"):
        KERNEL_FN(d1, da.from_array(huge, chunks=(16, 5)), "ntk").compute()


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda d1, d2: KERNEL_FN(d1, d2, "ntk", out=np.empty((70, 45))), ValueError, "out is for NumPy results"),
    (lambda d1, d2: KERNEL_FN(d1, d2, "ntk", progress=True), ValueError, "ProgressBar"),
    (lambda d1, d2: KERNEL_FN(d1[:, None, :], None, "ntk"), NotImplementedError, "without spatial layers on \\(N, d\\)"),
    (lambda d1, d2: KERNEL_FN(KERNEL_FN(d1, None), None, "ntk"), TypeError, "a Kernel of dask arrays"),
    (lambda d1, d2: KERNEL_FN(d1, d2, "ntk", diagonal=True), ValueError, "x2 must be None"),
    (lambda d1, d2: KERNEL_FN(d1, d2[:, :4], "ntk"), ValueError, r"x2 must have the same number of features"),
    (lambda d1, d2: KERNEL_FN(d1.astype(int), None, "ntk"), TypeError, "x1 must be a float32 or float64 array"),
    (lambda d1, d2: KERNEL_FN(d1[d1[:, 0] > 0], None, "ntk"), ValueError, "x1 has unknown chunk sizes"),
    (lambda d1, d2: solvers.KernelOperator(KERNEL_FN, d1, dask.delayed(np.ones((3, 5)))), TypeError,
     "x2 must be a dask array"),
    (lambda d1, d2: stax.serial(stax.Dense(8), stax.Dropout(0.5))[2](d1, None, "nngp"), ValueError,
     r"Dropout\(mode='train'\)"),
    (lambda d1, d2: solvers.KernelOperator(lambda a, b, get: a @ b.T, d1), TypeError, "kernel_fn of fastntk.stax"),
])
def test_bad_input(call, error, match):
    _, _, d1, d2 = _inputs()
    with pytest.raises(error, match=match):
        call(d1, d2)


@pytest.mark.parametrize("symmetric", [True, False])
def test_kernel_operator_products(scheduler, symmetric):
    x1, x2, d1, d2 = _inputs()
    rng = np.random.default_rng(1)
    local = solvers.KernelOperator(KERNEL_FN, x1, None if symmetric else x2, "ntk")
    op = solvers.KernelOperator(KERNEL_FN, d1, None if symmetric else d2, "ntk")
    v, w = rng.standard_normal((op.shape[1], 3)), rng.standard_normal((op.shape[0], 2))
    assert_rounding(op @ v, local @ v, "K @ V")
    assert_rounding(op @ v[:, 0], local @ v[:, 0], "K @ v")
    assert_rounding(op.T @ w, local.T @ w, "Kᵀ @ W")
    cols = [*rng.permutation(op.shape[1])[:30], 5, 5]  # out of order, repeats
    assert_rounding(op.block(slice(3, 30), cols), local.block(slice(3, 30), cols), "block")
    both = op.block(slice(3, 30), cols, get=("nngp", "ntk"))
    for name, ref in local.block(slice(3, 30), cols, get=("nngp", "ntk")).items():
        assert_rounding(both[name], ref, f"block {name}")
    if symmetric:
        np.testing.assert_array_equal(op.diagonal(), local.diagonal())


def test_kernel_ridge_by_cg_on_a_dask_operator():
    x1, _, d1, _ = _inputs()
    y = np.random.default_rng(2).standard_normal((70, 2))
    op = solvers.kernel_operator(KERNEL_FN, d1, "ntk", block_size=25)  # rows rechunked: 3 chunks
    ridge = predict.kernel_ridge(op, y, 1e-2, True, solver="cg")
    k = KERNEL_FN(x1, None, "ntk")
    assert_close(ridge.dual_coef, np.linalg.solve(k + 1e-2 * np.eye(70), y), 1e-8, "cg on the dask operator")


@pytest.mark.parametrize("validation", [None, 10])
def test_falkon_on_a_dask_operator_equals_numpy(scheduler, validation):
    """kernel_ridge(solver='falkon') with dask inputs: K_NM's products as dask tasks on the active
    scheduler, the same fit as in process (K_NM recomputed in float64 there too: memory_budget=0)."""
    x1, x2, d1, d2 = _inputs()
    y = np.random.default_rng(4).standard_normal((70, 2))
    kw = {"solver": "falkon", "n_centers": 30, "seed": 1, "validation": validation}
    local = predict.kernel_ridge(solvers.KernelOperator(KERNEL_FN, x1), y, 1e-3, memory_budget=0,
                                 k_test_train=solvers.KernelOperator(KERNEL_FN, x2, x1), **kw)
    remote = predict.kernel_ridge(solvers.KernelOperator(KERNEL_FN, d1), y, 1e-3,
                                  k_test_train=solvers.KernelOperator(KERNEL_FN, d2, d1), **kw)
    np.testing.assert_array_equal(remote.centers, local.centers)
    for field in ("dual_coef", "fx_train", "fx_test"):
        assert_close(getattr(remote, field), getattr(local, field), 1e-8, field)


def test_nystrom_products_equal_dense(scheduler):
    from fastntk.distributed import nystrom_products

    x1, x2, d1, _ = _inputs()
    centres = x2[:12]
    rng = np.random.default_rng(3)
    v, w = rng.standard_normal((12, 3)), rng.standard_normal((70, 3))
    products = nystrom_products(KERNEL_FN, d1, centres, "ntk")
    k_nm = KERNEL_FN(x1, centres, "ntk")
    before = scheduler and _transitions(scheduler)
    assert_rounding(products.normal(v), k_nm.T @ (k_nm @ v), "K_NMᵀ K_NM v")
    if scheduler is not None:  # one task per chunk of x1 ran on the cluster, and their sum
        assert _transitions(scheduler) > before + 4 * d1.npartitions
    assert_rounding(products.rmatmat(w), k_nm.T @ w, "K_NMᵀ w")
    assert products.normal(v[:, 0]).shape == (12,)
    assert products.rmatmat(w[:, 0]).shape == (12,)
    with pytest.raises(ValueError, match=r"shape \(12,\) or \(12, k\)"):
        products.normal(w)
    stored = nystrom_products(KERNEL_FN, d1, centres, "ntk", store=True)  # K_NM kept: the same products
    np.testing.assert_array_equal(stored.normal(v), products.normal(v))
    np.testing.assert_array_equal(stored.rmatmat(w), products.rmatmat(w))
    k32 = KERNEL_FN(x1.astype(np.float32), centres.astype(np.float32), "ntk").astype(np.float64)
    stored32 = nystrom_products(KERNEL_FN, d1, centres, "ntk", np.float32, store=True)
    assert_close(stored32.normal(v), k32.T @ (k32 @ v), 1e-12, "float32 blocks, float64 products")


def test_stored_blocks_must_fit_in_memory(monkeypatch):
    from fastntk import _validation
    from fastntk.distributed import nystrom_products

    _, x2, d1, _ = _inputs()
    monkeypatch.setattr(_validation, "available_memory", lambda: 1000)  # bytes; K_NM needs 70·12·8
    with pytest.raises(MemoryError, match="store=False"):
        nystrom_products(KERNEL_FN, d1, x2[:12], "ntk", store=True)


def test_import_error_without_dask(monkeypatch):
    for name in [m for m in sys.modules if m == "dask" or m.startswith("dask.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import dask` now raises ImportError
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.delitem(sys.modules, "fastntk.distributed", raising=False)
    with pytest.raises(ImportError, match=r'pip install "fastntk\[dask\]"'):
        importlib.import_module("fastntk.distributed")


def test_fastntk_imports_without_dask():
    """Every module but fastntk.distributed imports with dask absent, and none imports it."""
    code = ("import importlib, pkgutil, sys; sys.modules['dask'] = None; import fastntk; "
            "names = [m.name for m in pkgutil.walk_packages(fastntk.__path__, 'fastntk.')]; "
            "[importlib.import_module(n) for n in names if n != 'fastntk.distributed']; "
            "print(len(names), sorted(k for k in sys.modules if k.startswith('dask') and sys.modules[k] is not None))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         **child_process()).stdout.split()
    assert int(out[0]) > 30
    assert out[1] == "[]"
