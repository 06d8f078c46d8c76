"""fastntk.infinite: the Gram driver behind kernel_fn (tiling, out=, memory, dtype, threads)."""

import numpy as np
import pytest
from conftest import RTOL, activation_catalogue, assert_close, assert_rounding, fc_net

import fastntk
from fastntk import _tiles, stax

ACTIVATIONS = activation_catalogue()
#: The closed-form kinds (one per C++ op), one quadrature and one user dual kernel.
DRIVER_ACTIVATIONS = ["relu", "abs", "erf", "gelu", "sin", "identity", "numerical_df", "elementwise_d"]


def _points(n=17, d=5, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    x[4], x[6], x[8] = x[2], 0.0, -x[9]
    return x


# --- tiling ---------------------------------------------------------------------------


def _assert_tiled_equals_untiled(act, symmetric, get, block_rows):
    x1, x2 = _points(10), _points(11, seed=1)
    x2 = None if symmetric else x2
    kernel_fn = fc_net(ACTIVATIONS[act].layer, 3, "standard", 0.1).kernel_fn
    tiled = kernel_fn(x1, x2, get, block_rows=block_rows)
    whole = kernel_fn(x1, x2, get)
    for name, a, b in zip(get, tiled, whole):
        assert_close(a, b, RTOL["tiled_vs_untiled"], name)
    if symmetric:
        for a in tiled:
            np.testing.assert_array_equal(a, a.T)


BLOCK_ROWS = pytest.mark.parametrize("block_rows", [1, 3, 7, 1000])
SYMMETRIC = pytest.mark.parametrize("symmetric", [True, False], ids=["x2_None", "x2"])


@BLOCK_ROWS
@SYMMETRIC
@pytest.mark.parametrize("act", DRIVER_ACTIVATIONS)
def test_tiled_equals_untiled(act, symmetric, block_rows):
    """Row blocks of 1, 3, 7 rows (uneven last block; in the upper triangle when x2 is None)
    against one block. The recursion is per entry, so only the Gram entries may round
    differently (BLAS picks other kernels for other block heights)."""
    _assert_tiled_equals_untiled(act, symmetric, ("nngp", "ntk"), block_rows)


@BLOCK_ROWS
@SYMMETRIC
@pytest.mark.parametrize("get", [("ntk",), ("nngp",)], ids=["ntk", "nngp"])
@pytest.mark.parametrize("act", ["relu", "numerical_df"])
def test_tiled_equals_untiled_one_kernel(act, get, symmetric, block_rows):
    """get='ntk' alone writes the Gram into the NTK buffer (closed forms) or still needs Σ
    (a Python-level layer reads it)."""
    _assert_tiled_equals_untiled(act, symmetric, get, block_rows)


@pytest.mark.parametrize("act", ["relu", "numerical_df"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gram_inside_the_pass_equals_the_gram_phase(act, dtype, monkeypatch):
    """The Gram inside the fused pass (backend.gram_tile) and in a phase of its own first (BLAS
    syrk/gemm, then backend.tile) agree to rounding, x2 None and given; the coincident points of
    a symmetric result keep Σ₁₂ = Σ₁₁ exactly in both (the diagonal equals diagonal=True's)."""
    from fastntk._backend import cpu

    x1, x2 = _points(70, 9).astype(dtype), _points(40, 9, seed=1).astype(dtype)
    kernel_fn = fc_net(ACTIVATIONS[act].layer, 3, "ntk", 0.1).kernel_fn
    fused = [kernel_fn(x1, x2, ("nngp", "ntk"), block_rows=16) for x2 in (None, x2)]
    monkeypatch.setattr(cpu, "SYRK_MIN_D", 0)  # every symmetric result through syrk, cross blocks still fused
    syrk = kernel_fn(x1, None, ("nngp", "ntk"), block_rows=16)
    monkeypatch.setattr(cpu.CpuBackend, "fusable", lambda self, plan, d, symmetric: False)
    phases = [kernel_fn(x1, x2, ("nngp", "ntk"), block_rows=16) for x2 in (None, x2)]
    for a, b, c in zip(fused, phases, (syrk, None)):
        for name in ("nngp", "ntk"):
            assert_rounding(getattr(a, name), getattr(b, name), name)
            if c is not None:
                assert_rounding(getattr(c, name), getattr(b, name), name)
    diag = kernel_fn(x1, None, ("nngp", "ntk"), diagonal=True)
    for result in (fused[0], phases[0]):
        np.testing.assert_allclose(np.diagonal(result.nngp), diag.nngp, rtol=4 * np.finfo(dtype).eps)


def test_default_block_rows_covers_many_blocks():
    """N2 large enough that the 32 MiB budget gives several row blocks of default height."""
    x1 = np.random.default_rng(2).standard_normal((300, 3))
    x2 = np.random.default_rng(3).standard_normal((16_000, 3))
    rows = _tiles.rows_per_block(x2.shape[0] * 8, lo=16, hi=2048)
    assert rows < x1.shape[0]
    kernel_fn = fc_net(stax.Relu(), 2).kernel_fn
    k = kernel_fn(x1, x2, "ntk")
    assert_close(k[:40], kernel_fn(x1[:40], x2, "ntk", block_rows=40), RTOL["tiled_vs_untiled"], "ntk")


# --- out= -----------------------------------------------------------------------------


def _memmap(tmp_path, name, shape, dtype):
    return np.memmap(tmp_path / f"{name}.dat", dtype=dtype, mode="w+", shape=shape)


def _empty(tmp_path, name, shape, dtype):
    return np.empty(shape, dtype)


def _wide_view(tmp_path, name, shape, dtype):
    """Rows of unit stride, row stride larger than the row: a block of a bigger result."""
    return np.full((shape[0], shape[1] + 5), np.nan, dtype)[:, 2 : 2 + shape[1]]


ALLOCATORS = {"empty": _empty, "memmap": _memmap, "wide_view": _wide_view}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("alloc", list(ALLOCATORS))
@pytest.mark.parametrize("symmetric", [True, False], ids=["x2_None", "x2"])
@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_out_single_array(tmp_path, get, symmetric, alloc, dtype):
    x1, x2 = _points().astype(dtype), None if symmetric else _points(11, seed=1).astype(dtype)
    kernel_fn = fc_net(stax.Erf(), 2, "ntk", 0.1).kernel_fn
    out = ALLOCATORS[alloc](tmp_path, get, (17, 17 if symmetric else 11), dtype)
    res = kernel_fn(x1, x2, get, out=out, block_rows=5)
    assert res is out
    assert_rounding(out, kernel_fn(x1, x2, get, block_rows=5), f"out={alloc}")


def _out_case(alloc, given, as_dict):
    kind = "dict" if as_dict else "tuple"
    return pytest.param(alloc, given, as_dict, id=f"{kind}-{alloc}-{'+'.join(given)}")


#: A tuple names every result of get; a dict may name some of them.
OUT_CASES = [
    _out_case(alloc, given, as_dict)
    for alloc in ALLOCATORS
    for given, dict_only in ((("ntk", "nngp"), False), (("nngp",), True), (("ntk",), True))
    for as_dict in ((True,) if dict_only else (True, False))
]


@pytest.mark.parametrize(("alloc", "given", "as_dict"), OUT_CASES)
def test_out_for_several_kernels(tmp_path, alloc, given, as_dict):
    """out as a dict (some or all names) or a tuple (all names, in get's order)."""
    get = ("ntk", "nngp")
    x1, x2 = _points(), _points(11, seed=1)
    outs = {name: ALLOCATORS[alloc](tmp_path, name, (17, 11), np.float64) for name in given}
    out = outs if as_dict else tuple(outs[name] for name in get)
    kernel_fn = fc_net(stax.Gelu(), 2, "standard", 0.1).kernel_fn
    res = kernel_fn(x1, x2, get, out=out)
    expected = kernel_fn(x1, x2, get)
    for name in get:
        assert_rounding(getattr(res, name), getattr(expected, name), f"out[{name!r}]={alloc}")
    for name, arr in outs.items():
        assert getattr(res, name) is arr


def _bad_out(shape):
    return {
        "shape": np.empty((shape[0], shape[1] + 1)),
        "transposed": np.empty(shape[::-1]),
        "dtype": np.empty(shape, np.float32),
        "int": np.empty(shape, np.int64),
        "list": [[0.0] * shape[1]] * shape[0],
        "columns": np.empty((shape[0], 2 * shape[1]))[:, ::2],
        "fortran": np.asfortranarray(np.empty(shape)),
        "reversed_rows": np.empty(shape)[::-1],
        "readonly": np.broadcast_to(np.empty(shape[1]), shape),
    }


@pytest.mark.parametrize("bad", list(_bad_out((1, 1))))
def test_out_rejects_bad_arrays(bad):
    x1, x2 = _points(), _points(11, seed=1)
    out = _bad_out((17, 11))[bad]
    kernel_fn = fc_net(stax.Relu(), 2).kernel_fn
    with pytest.raises(ValueError, match=r"out\['ntk'\] must be"):
        kernel_fn(x1, x2, "ntk", out=out)


@pytest.mark.parametrize(
    ("get", "out", "match"),
    [
        (None, np.empty((17, 17)), "out needs an explicit get"),
        (("nngp", "ntk"), (np.empty((17, 17)),), r"out must hold one array per name in get=\('nngp', 'ntk'\); got 1"),
        (("ntk",), {"nngp": np.empty((17, 17))}, r"out has keys \['nngp'\] not all in get=\('ntk',\)"),
    ],
    ids=["get_None", "tuple_length", "dict_keys"],
)
def test_out_must_match_get(get, out, match):
    with pytest.raises(ValueError, match=match):
        fc_net(stax.Relu(), 2).kernel_fn(_points(), None, get, out=out)


def test_out_rejects_diagonal():
    with pytest.raises(ValueError, match=r"out is for full .* it cannot be used with diagonal=True"):
        fc_net(stax.Relu(), 2).kernel_fn(_points(), None, "ntk", diagonal=True, out=np.empty((17, 17)))


# --- memory ---------------------------------------------------------------------------


@pytest.mark.parametrize("get", [None, "ntk", ("nngp",)], ids=["both", "ntk", "nngp"])
def test_memory_error_before_allocating(get):
    """(3e6)² float64 entries are 72 TB per kernel: refuse before allocating, say how much
    and what to do instead."""
    x = np.zeros((3_000_000, 1))
    with pytest.raises(MemoryError, match=r"needs [0-9.]+ GiB but only [0-9.]+ GiB is available") as info:
        fc_net(stax.Relu(), 1).kernel_fn(x, None, get)
    message = str(info.value)
    assert "memmap" in message
    assert "diagonal=True" in message
    needed = float(message.split("needs ")[1].split(" GiB")[0])
    assert needed >= 3e6**2 * 8 / 2**30 * 0.99


def test_out_memmap_avoids_the_memory_error(tmp_path, monkeypatch):
    """With every result in out= nothing large is allocated, so nothing is refused."""
    monkeypatch.setattr("fastntk._validation.available_memory", lambda: 1024)
    x = _points()
    out = _memmap(tmp_path, "ntk", (17, 17), np.float64)
    kernel_fn = fc_net(stax.Relu(), 2).kernel_fn
    with pytest.raises(MemoryError, match="memmap"):
        kernel_fn(x, None, "ntk")
    assert kernel_fn(x, None, "ntk", out=out) is out


def test_diagonal_needs_no_quadratic_memory(monkeypatch):
    monkeypatch.setattr("fastntk._validation.available_memory", lambda: 1024)
    x = np.random.default_rng(4).standard_normal((3000, 2))
    assert fc_net(stax.Relu(), 2).kernel_fn(x, None, "ntk", diagonal=True).shape == (3000,)


# --- dtype, arguments, threads ---------------------------------------------------------


@pytest.mark.parametrize(
    ("dtypes", "dtype", "expected"),
    [
        ((np.float32, np.float32), None, np.float32),
        ((np.float32, np.float64), None, np.float64),
        ((np.float64, np.float32), None, np.float64),
        ((np.float32, np.float32), np.float64, np.float64),
        ((np.float64, np.float64), np.float32, np.float32),
    ],
    ids=["f32", "f32_f64", "f64_f32", "f32_as_f64", "f64_as_f32"],
)
def test_result_dtype_follows_inputs_unless_given(dtypes, dtype, expected):
    x1, x2 = _points().astype(dtypes[0]), _points(11, seed=1).astype(dtypes[1])
    kernel_fn = fc_net(stax.Erf(), 2).kernel_fn
    k = kernel_fn(x1, x2, dtype=dtype)
    assert k.nngp.dtype == k.ntk.dtype == k.cov1.dtype == k.cov2.dtype == expected
    assert_close(k.ntk, kernel_fn(x1.astype(np.float64), x2.astype(np.float64)).ntk,
                 RTOL["float32_vs_float64"], "ntk")


@pytest.mark.parametrize("block_rows", [0, -3, 2.5, True, "4"], ids=repr)
def test_block_rows_must_be_a_positive_integer(block_rows):
    with pytest.raises(ValueError, match="block_rows must be a positive integer"):
        fc_net(stax.Relu(), 2).kernel_fn(_points(), None, block_rows=block_rows)


def test_single_point():
    x = np.random.default_rng(7).standard_normal((1, 4))
    k = fc_net(stax.Relu(), 2).kernel_fn(x, x[:, ::-1].copy())
    assert k.nngp.shape == k.ntk.shape == (1, 1)
    assert fc_net(stax.Relu(), 2).kernel_fn(x, None, "ntk").shape == (1, 1)


def test_progress_bar_changes_nothing(capsys):
    kernel_fn = fc_net(stax.Relu(), 2).kernel_fn
    x = _points()
    assert_rounding(kernel_fn(x, None, "ntk", progress=True, block_rows=4), kernel_fn(x, None, "ntk"), "progress")
    assert "kernel rows" in capsys.readouterr().err


@pytest.fixture
def restore_threads():
    n = fastntk.get_num_threads()
    yield n
    fastntk.set_num_threads(n)


@pytest.mark.parametrize("act", ["relu", "gelu", "numerical_df"])
def test_one_thread_gives_the_same_numbers(restore_threads, act):
    x1, x2 = _points(90, seed=5), _points(70, seed=6)
    kernel_fn = fc_net(ACTIVATIONS[act].layer, 3, "ntk", 0.1).kernel_fn
    default = kernel_fn(x1, x2, block_rows=16), kernel_fn(x1, None, block_rows=16)
    fastntk.set_num_threads(1)
    assert fastntk.get_num_threads() == 1
    single = kernel_fn(x1, x2, block_rows=16), kernel_fn(x1, None, block_rows=16)
    for a, b in zip(default, single):
        np.testing.assert_array_equal(a.nngp, b.nngp)
        np.testing.assert_array_equal(a.ntk, b.ntk)


@pytest.mark.parametrize("n", [0, -1])
def test_set_num_threads_rejects_non_positive(restore_threads, n):
    with pytest.raises(ValueError, match=f"n must be >= 1; got {n}"):
        fastntk.set_num_threads(n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_whose_gram_would_overflow_are_refused(dtype):
    kernel_fn = stax.fc_network(1, "relu", 1.5, 0.1)[2]
    big = np.full((3, 4), np.sqrt(np.finfo(dtype).max), dtype)
    with pytest.raises(ValueError, match="x2 has entries up to .* would overflow"):
        kernel_fn(np.ones((2, 4), dtype), big)


@pytest.mark.parametrize("dtype", [">f8", ">f4"])
def test_big_endian_inputs_are_converted(dtype):
    """Arrays read from big-endian files are accepted (converted), not refused by the compiled module."""
    x = _points()
    kernel_fn = fc_net(stax.Relu(), 2).kernel_fn
    native = kernel_fn(x.astype(np.dtype(dtype).newbyteorder("=")), None, "ntk")
    assert_rounding(kernel_fn(x.astype(dtype), None, "ntk"), native, dtype)


# --- no silent wrong answers ---------------------------------------------------------


def test_out_overlapping_an_input_is_refused():
    x = _points()
    kernel_fn = fc_net(stax.Relu(), 2).kernel_fn
    buf = np.zeros(17 * 5 + 17 * 17 - 5)
    x1, out = buf[: 17 * 5].reshape(17, 5), buf[17 * 5 - 5 :].reshape(17, 17)  # out's first row is x1's last
    x1[...] = x
    with pytest.raises(ValueError, match=r"out\['ntk'\] shares memory with x1"):
        kernel_fn(x1, None, "ntk", out=out)
    np.testing.assert_array_equal(x1, x)


def test_one_buffer_for_both_kernels_is_refused():
    x = _points()
    out = np.empty((17, 17))
    with pytest.raises(ValueError, match=r"out\['nngp'\] shares memory with out\['ntk'\]"):
        fc_net(stax.Relu(), 2).kernel_fn(x, None, ("nngp", "ntk"), out=(out, out))


def test_memmap_out_reserves_its_disk_space(tmp_path):
    """A sparse memmap is allocated on disk before any work, so a full disk cannot SIGBUS later."""
    x = _points(300)
    path = tmp_path / "ntk.dat"
    out = np.memmap(path, dtype=np.float64, mode="w+", shape=(300, 300))
    assert path.stat().st_blocks * 512 < out.nbytes  # sparse until written
    kernel_fn = fc_net(stax.Relu(), 2).kernel_fn
    kernel_fn(x, None, "ntk", out=out)
    assert path.stat().st_blocks * 512 >= out.nbytes
    assert_rounding(out, kernel_fn(x, None, "ntk"), "memmap")


def test_full_disk_is_an_error_before_any_work(tmp_path, monkeypatch):
    import errno
    import os

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = np.memmap(tmp_path / "ntk.dat", dtype=np.float64, mode="w+", shape=(17, 17))
    with pytest.raises(OSError, match=r"out\['ntk'\] is a memmap of .*ntk.dat whose .* could not be reserved"):
        fc_net(stax.Relu(), 2).kernel_fn(_points(), None, "ntk", out=out)
    assert not out.any()  # nothing half-written


@pytest.mark.parametrize("diagonal", [False, True], ids=["full", "diagonal"])
def test_kernels_beyond_float32_raise(diagonal):
    """Σ grows like W_std^(2L): past float32's range the call refuses (it suggests float64), and
    the float64 call of the same network is finite."""
    kernel_fn = stax.fc_network(10, "relu", 300.0, 0.1)[2]
    x = _points().astype(np.float32)
    with pytest.raises(OverflowError, match=r"beyond float32's range .* dtype=np.float64"):
        kernel_fn(x, None, "ntk", diagonal=diagonal)
    assert np.isfinite(kernel_fn(x, None, "ntk", diagonal=diagonal, dtype=np.float64)).all()


def test_kernels_beyond_float64_raise():
    kernel_fn = stax.fc_network(40, "relu", 1e5, 0.1)[2]
    with pytest.raises(OverflowError, match="beyond float64's range"):
        kernel_fn(_points(), _points(11, seed=1), "nngp")


