"""fastntk.solvers._store: kernels block by block to .npy files, resumption, refusals, the stored operator;
and kernel_fn(out=np.memmap): flushed as blocks complete, refused before any block."""

import errno
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import assert_rounding, child_process, fc_net
from numpy.lib.format import open_memmap

from fastntk import _kernel_fn, predict, solvers, stax
from fastntk.solvers import StoredKernel, store_kernels
from fastntk.solvers._operator import KernelOperator
from fastntk.solvers._store import MANIFEST


def _points(n, d=5, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    x[4], x[6] = x[2], 0.0  # coincident points and a zero-norm row
    return x


@pytest.fixture
def kernel_fn():
    return fc_net(stax.Relu(), 2).kernel_fn


class Injected(Exception):
    pass


def _fail_after(monkeypatch, k):
    """KernelOperator.block raises Injected on its (k+1)-th call (an interruption after k blocks)."""
    block, calls = KernelOperator.block, []

    def failing(self, *args, **kwargs):
        if len(calls) == k:
            raise Injected
        calls.append(1)
        return block(self, *args, **kwargs)

    monkeypatch.setattr(KernelOperator, "block", failing)
    return calls


def _no_blocks(monkeypatch):
    def forbidden(self, *args, **kwargs):
        raise AssertionError("a block was computed")

    monkeypatch.setattr(KernelOperator, "block", forbidden)


# --- what is stored -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_symmetric_store_is_kernel_fn_to_rounding_and_exactly_symmetric(tmp_path, kernel_fn, dtype):
    """Not bitwise: kernel_fn(x) takes the norms of coincident points from its Gram's diagonal
    and BLAS blocks a whole Gram differently from a 16x16 tile's (see store_kernels' Notes)."""
    x = _points(53).astype(dtype)
    stored = store_kernels(tmp_path, kernel_fn, x, block_size=16)
    assert stored.n_blocks == stored.computed == 10  # 4 block rows: 4 + 3 + 2 + 1 tiles on and above the diagonal
    expected = kernel_fn(x, None, ("nngp", "ntk"))
    for name in ("nngp", "ntk"):
        k = np.load(stored.paths[name])
        assert k.dtype == dtype
        np.testing.assert_array_equal(k, k.T)
        assert_rounding(k, getattr(expected, name), name)


def test_cross_store_is_kernel_fn_to_rounding(tmp_path, kernel_fn):
    """Both compute with the same per-point passes; only the Gram's BLAS blocking may differ."""
    x1, x2 = _points(40), _points(23, seed=1)
    stored = store_kernels(tmp_path, kernel_fn, x1, x2, "ntk", block_size=16)
    assert stored.n_blocks == 3 * 2
    assert_rounding(np.load(stored.paths["ntk"]), kernel_fn(x1, x2, "ntk"), "ntk")


def test_default_block_size_is_recorded(tmp_path, kernel_fn):
    stored = store_kernels(tmp_path, kernel_fn, _points(30), get="nngp")
    record = json.loads(stored.manifest.read_text())
    assert record["block_size"] >= 30
    assert stored.n_blocks == 1
    assert record["finished"] == [[0, 1]]


# --- resumption -----------------------------------------------------------------------------


@pytest.mark.parametrize("x2_rows", [None, 29], ids=["symmetric", "cross"])
def test_resumed_run_gives_the_bits_of_one_run(tmp_path, kernel_fn, monkeypatch, x2_rows):
    x1, x2 = _points(45), None if x2_rows is None else _points(x2_rows, seed=1)
    (tmp_path / "whole").mkdir()
    (tmp_path / "part").mkdir()
    whole = store_kernels(tmp_path / "whole", kernel_fn, x1, x2, block_size=10)
    _fail_after(monkeypatch, 4)
    with pytest.raises(Injected):
        store_kernels(tmp_path / "part", kernel_fn, x1, x2, block_size=10)
    assert json.loads((tmp_path / "part" / MANIFEST).read_text())["finished"] == [[0, 4]]
    monkeypatch.undo()
    calls = _fail_after(monkeypatch, whole.n_blocks)  # counts the blocks of the rerun
    resumed = store_kernels(tmp_path / "part", kernel_fn, x1, x2)  # block_size from the manifest
    assert (resumed.n_blocks, resumed.computed, len(calls)) == (whole.n_blocks, whole.n_blocks - 4, whole.n_blocks - 4)
    for name in ("nngp", "ntk"):
        np.testing.assert_array_equal(np.load(resumed.paths[name]), np.load(whole.paths[name]))
    monkeypatch.undo()
    _no_blocks(monkeypatch)
    assert store_kernels(tmp_path / "part", kernel_fn, x1, x2).computed == 0  # complete: nothing to do


def _start_kwargs():
    return {"x1": _points(30), "x2": None, "get": ("nngp", "ntk"), "dtype": None, "block_size": 8}


@pytest.mark.parametrize(("change", "message"), [
    ({"x1": _points(30) * (1 + 1e-15)}, r"x1: stored shape \(30, 5\) float64 sha256 \w+, given shape \(30, 5\)"),
    ({"x1": _points(31)}, r"x1: stored shape \(30, 5\)"),
    ({"x2": _points(30, seed=1)}, "symmetric: stored True, given False"),
    ({"get": "ntk"}, r"get: stored \['nngp', 'ntk'\], given \['ntk'\]"),
    ({"dtype": np.float32}, "dtype: stored 'float64', given 'float32'"),
    ({"block_size": 9}, "block_size: stored 8, given 9"),
    ({"network": fc_net(stax.Relu(), 3).kernel_fn}, "network: another network spec than the one stored"),
], ids=["x1 bytes", "x1 shape", "x2", "get", "dtype", "block plan", "network"])
def test_other_arguments_are_refused_before_any_block(tmp_path, kernel_fn, monkeypatch, change, message):
    kwargs = _start_kwargs()
    _fail_after(monkeypatch, 2)
    with pytest.raises(Injected):
        store_kernels(tmp_path, kernel_fn, **kwargs)
    monkeypatch.undo()
    change = dict(change)
    net = change.pop("network", kernel_fn)
    kwargs |= change
    _no_blocks(monkeypatch)
    with pytest.raises(ValueError, match=message) as err:
        store_kernels(tmp_path, net, **kwargs)
    assert "overwrite=True (fastntk kernel --restart)" in str(err.value)
    monkeypatch.undo()
    stored = store_kernels(tmp_path, net, **kwargs, overwrite=True)  # starts over
    assert stored.computed == stored.n_blocks
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MANIFEST, *(f"{n}.npy" for n in stored.paths)])


# --- bad input, before any block ------------------------------------------------------------


def test_missing_directory_is_refused(tmp_path, kernel_fn, monkeypatch):
    _no_blocks(monkeypatch)
    with pytest.raises(FileNotFoundError, match=r"directory '.*missing' does not exist"):
        store_kernels(tmp_path / "missing", kernel_fn, _points(10))
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        store_kernels(tmp_path / "file", kernel_fn, _points(10))


def test_unwritable_directory_is_refused(tmp_path, kernel_fn, monkeypatch):
    _no_blocks(monkeypatch)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a read-only folder (root ignores modes)
    with pytest.raises(PermissionError, match="is not writable"):
        store_kernels(tmp_path, kernel_fn, _points(10))


def test_full_disk_is_refused_and_nothing_is_left(tmp_path, kernel_fn, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    _no_blocks(monkeypatch)
    with pytest.raises(OSError, match=r"the nngp kernel is a memmap of .*nngp.npy whose .* could not be reserved"):
        store_kernels(tmp_path, kernel_fn, _points(10))
    assert list(tmp_path.iterdir()) == []


def test_files_that_do_not_fit_are_refused(tmp_path, kernel_fn, monkeypatch):
    x = _points(20)
    np.save(tmp_path / "ntk.npy", np.zeros((3, 3)))  # not recorded by any manifest
    _no_blocks(monkeypatch)
    with pytest.raises(ValueError, match=r"ntk.npy exist\(s\) and no manifest"):
        store_kernels(tmp_path, kernel_fn, x, get="ntk")
    np.testing.assert_array_equal(np.load(tmp_path / "ntk.npy"), np.zeros((3, 3)))  # left as it was
    monkeypatch.undo()
    store_kernels(tmp_path, kernel_fn, x, get="ntk", overwrite=True)
    np.save(tmp_path / "ntk.npy", np.zeros((20, 20), np.float32))  # replaced behind the manifest's back
    _no_blocks(monkeypatch)
    with pytest.raises(ValueError, match=r"holds shape \(20, 20\) and dtype float32; the manifest records"):
        store_kernels(tmp_path, kernel_fn, x, get="ntk")
    (tmp_path / "ntk.npy").unlink()
    with pytest.raises(ValueError, match="recorded in the manifest, cannot be opened"):
        store_kernels(tmp_path, kernel_fn, x, get="ntk")
    (tmp_path / MANIFEST).write_text("{}")
    with pytest.raises(ValueError, match="is not a manifest of"):
        store_kernels(tmp_path, kernel_fn, x, get="ntk")


def test_bad_arguments(tmp_path, kernel_fn):
    with pytest.raises(TypeError, match=r"kernel_fn must be a kernel_fn of fastntk\.stax"):
        store_kernels(tmp_path, lambda x1, x2, get: x1 @ x2.T, _points(8))
    with pytest.raises(ValueError, match="block_size must be"):
        store_kernels(tmp_path, kernel_fn, _points(8), block_size=0)
    with pytest.raises(ValueError, match="unknown get"):
        store_kernels(tmp_path, kernel_fn, _points(8), None, "foo")
    with pytest.raises(TypeError, match="x1 must be a float32 or float64 array"):
        store_kernels(tmp_path, kernel_fn, np.ones((4, 2), int))
    assert list(tmp_path.iterdir()) == []


# --- the stored kernel as an operator -------------------------------------------------------


def test_stored_kernel_products(tmp_path, kernel_fn):
    x1, x2 = _points(37), _points(26, seed=1)
    (tmp_path / "sym").mkdir()
    (tmp_path / "cross").mkdir()
    sym = StoredKernel(store_kernels(tmp_path / "sym", kernel_fn, x1, None, "ntk", block_size=8).paths["ntk"],
                       block_size=5)
    cross = StoredKernel(store_kernels(tmp_path / "cross", kernel_fn, x1, x2, "nngp").paths["nngp"], block_size=7)
    k, k12 = np.load(sym.path), np.load(cross.path)
    v = np.random.default_rng(3).standard_normal((37, 3))
    assert sym.symmetric
    assert not cross.symmetric
    assert cross.shape == (37, 26)
    np.testing.assert_allclose(sym @ v, k @ v, rtol=1e-13)
    np.testing.assert_allclose(sym.T @ v, k.T @ v, rtol=1e-13)
    np.testing.assert_allclose(cross @ v[:26], k12 @ v[:26], rtol=1e-13)
    np.testing.assert_allclose(cross.T @ v, k12.T @ v, rtol=1e-13)
    np.testing.assert_allclose(cross.matvec(v[:26, 0]), k12 @ v[:26, 0], rtol=1e-13)
    np.testing.assert_array_equal(sym.diagonal(), np.diag(k))
    np.testing.assert_array_equal(sym.block(slice(3, 9), np.array([1, 5])), k[3:9][:, [1, 5]])
    with pytest.raises(ValueError, match="not one"):
        cross.diagonal()


def test_cg_and_kernel_ridge_on_a_stored_kernel_equal_the_dense_solve(tmp_path, kernel_fn):
    x = _points(60)
    x[4] += 0.01  # no coincident points: K + reg·I well conditioned for CG
    k = StoredKernel(store_kernels(tmp_path, kernel_fn, x, None, "ntk", block_size=16).paths["ntk"])
    dense = np.load(k.path)
    y = np.random.default_rng(1).standard_normal((60, 2))
    reg = 1e-2
    exact = np.linalg.solve(dense + reg * np.eye(60), y)
    cg = solvers.cg(lambda v: k @ v + reg * v, y, tol=1e-12)
    np.testing.assert_allclose(cg.solution, exact, rtol=1e-8, atol=1e-10)
    fit = predict.kernel_ridge(k, y, reg, True, solver="cg", tol=1e-12)
    ref = predict.kernel_ridge(dense, y, reg, True)
    np.testing.assert_allclose(fit.dual_coef, ref.dual_coef, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.fx_train, ref.fx_train, rtol=1e-8, atol=1e-10)


def test_incomplete_store_is_not_an_operator(tmp_path, kernel_fn, monkeypatch):
    _fail_after(monkeypatch, 1)
    with pytest.raises(Injected):
        store_kernels(tmp_path, kernel_fn, _points(20), None, "ntk", block_size=8)
    with pytest.raises(ValueError, match="is incomplete: 1 of 6 blocks are finished"):
        StoredKernel(tmp_path / "ntk.npy")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        StoredKernel(tmp_path / "nngp.npy")
    np.save(tmp_path / "v.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"holds an array of shape \(3,\)"):
        StoredKernel(tmp_path / "v.npy")


# --- kernel_fn(out=np.memmap) ---------------------------------------------------------------


def test_memmap_out_is_flushed_as_blocks_complete(tmp_path, kernel_fn, monkeypatch):
    x = _points(40)
    out = open_memmap(tmp_path / "ntk.npy", mode="w+", dtype=np.float64, shape=(40, 40))
    flushes = []
    monkeypatch.setattr(np.memmap, "flush", lambda self: flushes.append(1))
    kernel_fn(x, None, "ntk", out=out, block_rows=8)
    # after each of the 5 blocks of the fused pass (each computes its own Gram), after the mirror
    assert len(flushes) == 5 + 1
    monkeypatch.undo()
    assert_rounding(out, kernel_fn(x, None, "ntk"), "memmap")


@pytest.mark.parametrize(("shape", "dtype", "message"), [
    ((40, 39), np.float64, r"out\['ntk'\] must be an ndarray of shape \(40, 40\) and dtype float64"),
    ((40, 40), np.float32, r"out\['ntk'\] must be an ndarray of shape \(40, 40\) and dtype float64"),
], ids=["shape", "dtype"])
def test_memmap_out_that_does_not_fit_is_refused_before_any_block(tmp_path, kernel_fn, monkeypatch, shape, dtype,
                                                                   message):
    out = open_memmap(tmp_path / "ntk.npy", mode="w+", dtype=dtype, shape=shape)
    monkeypatch.setattr(_kernel_fn, "infinite_kernels", lambda *a, **k: pytest.fail("a block was computed"))
    with pytest.raises(ValueError, match=message):
        kernel_fn(_points(40), None, "ntk", out=out)


# --- memory ---------------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    import numpy as np
    from numpy.lib.format import open_memmap
    from fastntk import solvers, stax

    def anonymous():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

    def peak(fn):
        top, done = [anonymous()], threading.Event()
        def watch():
            while not done.is_set():
                top[0] = max(top[0], anonymous())
                time.sleep(0.001)
        base, thread = top[0], threading.Thread(target=watch)
        thread.start()
        try:
            fn()
        finally:
            done.set()
            thread.join()
        return top[0] - base

    n, folder = int(sys.argv[1]), sys.argv[2]
    x = np.random.default_rng(0).standard_normal((n, 8))
    kernel_fn = stax.fc_network(2, "relu", 2 ** 0.5, 0.1)[2]
    solvers.store_kernels(folder, kernel_fn, x[:40], None, "ntk", block_size=16)  # imports, first calls
    kernel_fn(x[:40], None, "ntk", out=np.empty((40, 40)))
    store = peak(lambda: solvers.store_kernels(folder, kernel_fn, x, None, "ntk", block_size=512, overwrite=True))
    out = open_memmap(folder + "/direct.npy", mode="w+", dtype=np.float64, shape=(n, n))
    direct = peak(lambda: kernel_fn(x, None, "ntk", out=out))
    print(store, direct)
""")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="RssAnon is read from /proc")
def test_anonymous_memory_is_bounded(tmp_path):
    """A 275 MiB kernel (N = 6000) through the store (512² blocks) and through kernel_fn(out=memmap):
    the anonymous memory each call adds (RssAnon, sampled every ms) is a few blocks, not the kernel."""
    n = 6000
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(n), str(tmp_path)], capture_output=True,
                          text=True, timeout=120, check=True, **child_process(OMP_NUM_THREADS="1",
                                                                              OPENBLAS_NUM_THREADS="1"))
    store, direct = map(int, done.stdout.split())
    kernel = n * n * 8
    assert store < 32 * 2**20 < kernel / 8, f"store: {store / 2**20:.1f} MiB anonymous for a {kernel / 2**20:.0f} MiB kernel"
    assert direct < 32 * 2**20, f"kernel_fn(out=memmap): {direct / 2**20:.1f} MiB anonymous"
