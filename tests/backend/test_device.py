"""The GPU backend (fastntk._backend.cuda) without a GPU, and with one where there is one.

Without a GPU: the backend's driver logic runs on NumPy (``host_backend``: the same DeviceBackend
object over the host build of the kernels' per-entry code, ``_core.fc_tile_entries``) and must give
the CPU backend's kernels to rounding for every activation, both parameterizations, symmetric and
cross, float32 and float64, branched networks; the CUDA source compiles with NVRTC where the
``nvidia-cuda-nvrtc`` wheel is installed. With a GPU (marker ``gpu``): CuPy in, CuPy out, equal to
the CPU backend.
"""

from __future__ import annotations

import ctypes
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import activation_catalogue, assert_close, fc_net

import fastntk._backend as backend_layer
from fastntk import _core, stax
from fastntk._backend import cuda

#: Every activation kind beside the catalogue's: the closed forms the catalogue leaves out.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Hermite's one-time note on neural-tangents' different kernel
    EXTRA = {
        "exp": stax.Exp(0.7, 0.4),
        "exp_normalized": stax.ExpNormalized(0.8, -0.5),
        "gaussian": stax.Gaussian(0.9, -0.6),
        "rbf": stax.Rbf(0.7),
        "sign": stax.Sign(),
        "gabor": stax.Gabor(),
        "monomial": stax.Monomial(3),
        "rectified_monomial": stax.RectifiedMonomial(2),
        "polynomial": stax.Polynomial([0.3, -0.2, 0.5]),
        "hermite": stax.Hermite(3),
        "relu_stabilized": stax.Relu(do_stabilize=True),
    }

LAYERS = {name: case.layer for name, case in activation_catalogue().items()} | EXTRA

#: The tolerance per activation: the catalogue's where a numerical derivative magnifies the Grams'
#: rounding (the CPU backend's Gram is fused into its pass, the device backend's is one GEMM).
RTOL_OF = {name: max(case.rtol, 1e-12) for name, case in activation_catalogue().items()}


@pytest.fixture
def device_on_host(monkeypatch):
    """backend='cuda' served by the host build of the GPU backend."""
    monkeypatch.setitem(backend_layer.BACKENDS, "cuda", cuda.host_backend)


def _points(n, d=6, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    x[3], x[5] = x[1], 0.0  # a duplicated and a zero point: the coincident and degenerate entries
    return x


def _rtol(dtype):
    return 1e-12 if dtype == np.float64 else 2e-6


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_device_backend_equals_cpu_for_every_activation(device_on_host, name, parameterization):
    kernel_fn = fc_net(LAYERS[name], 3, parameterization).kernel_fn
    x1, x2 = _points(19), _points(11, seed=1)
    for args in ((x1, None), (x1, x2)):
        want = kernel_fn(*args, ("nngp", "ntk"), backend="cpu")
        got = kernel_fn(*args, ("nngp", "ntk"), backend="cuda", block_rows=8)
        for g, w in zip(got, want):
            assert_close(g, w, RTOL_OF.get(name, 1e-12))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_backend_equals_cpu_in_both_precisions(device_on_host, dtype):
    kernel_fn = stax.serial(stax.Dense(64, 1.4, 0.1), stax.Relu(), stax.Dense(64, 1.4, 0.1), stax.Erf(),
                            stax.Dense(64, 1.4, 0.1), stax.Tanh(), stax.Dense(1, 1.4, 0.1))[2]
    x = _points(70).astype(dtype)
    want = kernel_fn(x, None, ("nngp", "ntk"), backend="cpu")
    got = kernel_fn(x, None, ("nngp", "ntk"), backend="cuda", block_rows=16)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        assert_close(g, w, _rtol(dtype))
        np.testing.assert_array_equal(g, g.T)  # the mirror of the upper triangle


def test_device_backend_equals_cpu_for_branched_networks(device_on_host):
    block = stax.serial(stax.Dense(32, 1.3, 0.2), stax.Relu(), stax.Dense(32, 1.3, 0.2))
    kernel_fn = stax.serial(
        stax.Dense(32, 1.1, 0.1), stax.FanOut(3), stax.parallel(block, stax.Identity(), stax.serial(stax.Gelu(),
                                                                                                    stax.Dense(32))),
        stax.FanInSum(), stax.Erf(), stax.Dense(32), stax.FanOut(2),
        stax.parallel(stax.serial(stax.Dense(16), stax.Relu()), stax.serial(stax.Dense(16, 0.9), stax.Sin())),
        stax.FanInConcat(),
        stax.Dense(1, 1.2, 0.05))[2]
    x1, x2 = _points(23), _points(9, seed=2)
    for args in ((x1, None), (x1, x2)):
        want = kernel_fn(*args, ("nngp", "ntk"), backend="cpu")
        got = kernel_fn(*args, ("nngp", "ntk"), backend="cuda", block_rows=8)
        for g, w in zip(got, want):
            assert_close(g, w, _rtol(np.float64))


def test_device_backend_fills_out_and_diagonal(device_on_host):
    kernel_fn = fc_net(stax.Relu(), 3).kernel_fn
    x = _points(30)
    out = {"nngp": np.empty((30, 30)), "ntk": np.empty((30, 30))}
    got = kernel_fn(x, None, ("nngp", "ntk"), backend="cuda", out=out)
    want = kernel_fn(x, None, ("nngp", "ntk"), backend="cpu")
    assert got[0] is out["nngp"] and got[1] is out["ntk"]
    for g, w in zip(got, want):
        assert_close(g, w, _rtol(np.float64))
    assert_close(kernel_fn(x, None, "ntk", backend="cuda", diagonal=True), np.diag(want[1]), _rtol(np.float64))


def test_entrywise_tile_equals_the_vectorised_tile_for_every_op():
    """_core.fc_tile_entries (the GPU kernels' code on the host) against _core.fc_tile, op plan by op
    plan, as the infinite-width driver builds them for every activation."""
    from fastntk import infinite
    from fastntk._backend.cpu import BACKEND

    x = _points(13)
    for layer in LAYERS.values():
        layer_spec = stax.serial(stax.Dense(8, 1.3, 0.2), layer, stax.Dense(8, 1.3, 0.2), layer).kernel_fn.spec
        (run,), *_ = infinite.kernel_program(layer_spec, infinite.Start(x.shape[1]))
        for seg in BACKEND.plan(run.layers, x.shape[1]):
            if seg.ops is None:
                continue
            for dtype in (np.float32, np.float64):
                sigma = (x @ x.T / x.shape[1]).astype(dtype)
                var = np.abs(np.random.default_rng(1).standard_normal((seg.n_act, 13))) + 0.5
                var[:, 5] = 0.0
                tiles = [[sigma.copy(), 0.5 * sigma] for _ in range(2)]  # a continuing segment reads Θ
                _core.fc_tile(sigma, *tiles[0], var, var, seg.ops, 1e-7)
                _core.fc_tile_entries(sigma, *tiles[1], var, var, seg.ops, 1e-7)
                for a, b in zip(*tiles):
                    assert_close(b, a, _rtol(dtype))


def test_ops_pack_into_the_structs_the_kernels_read():
    ops = np.array([[3, 0.5, 1.5, -2.0, 0.25], [0, 0, 0, 0, 0]])
    packed = cuda.pack_ops(ops)
    assert packed.itemsize == 40  # int kind, int padding, four doubles: sizeof(fastntk::Op)
    raw = packed.view(np.uint8)
    assert np.frombuffer(raw[:4].tobytes(), np.int32)[0] == 3
    np.testing.assert_array_equal(np.frombuffer(raw[8:40].tobytes(), np.float64), ops[0, 1:])


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown backend 'tpu'; supported: 'auto', 'cpu', 'cuda'"):
        fc_net(stax.Relu(), 1).kernel_fn(_points(7), backend="tpu")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_cuda_without_cupy_says_what_to_install():
    cuda.cupy_backend.cache_clear()
    with pytest.raises(ImportError, match=r'pip install "fastntk\[gpu\]"'):
        fc_net(stax.Relu(), 1).kernel_fn(_points(7), backend="cuda")


def test_spatial_networks_on_the_device_backend_are_refused_first(device_on_host):
    kernel_fn = stax.serial(stax.Conv(4, (3, 3)), stax.Relu(), stax.Flatten(), stax.Dense(1))[2]
    with pytest.raises(NotImplementedError, match="do not run on the GPU yet"):
        kernel_fn(np.ones((2, 5, 5, 3)), None, "nngp", backend="cuda")


def test_out_of_another_namespace_is_refused(device_on_host):
    class Foreign:
        shape, dtype = (7, 7), np.dtype(np.float64)

    with pytest.raises(ValueError, match=r"out\['nngp'\] must be an ndarray of shape \(7, 7\)"):
        fc_net(stax.Relu(), 1).kernel_fn(_points(7), None, "nngp", backend="cuda", out=Foreign())


# --- the CUDA source, compiled by NVRTC without a GPU -----------------------------------------


def _nvrtc():
    spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12)")
    libs = sorted(Path(next(iter(spec.submodule_search_locations)), "lib").glob("libnvrtc.so*"))
    if not libs:
        pytest.skip("no libnvrtc in the nvidia-cuda-nvrtc wheel")
    return ctypes.CDLL(str(libs[0]))


def test_cuda_kernels_compile_with_nvrtc():
    nvrtc = _nvrtc()
    source, include = cuda.kernel_source()
    prog = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernels.cu", 0, None, None) == 0
    opts = [b"--std=c++17", f"-I{include}".encode(), b"-arch=compute_80"]
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert rc == 0, log.value.decode()
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    for kernel in ("fc_tile_float32", "fc_tile_float64", "mirror_upper_float32", "mirror_upper_float64"):
        assert f".entry {kernel}(".encode() in ptx.value


# --- on a GPU ----------------------------------------------------------------------------------


def _gpu():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # no CuPy, no driver, no device: the same skip
        pass
    pytest.skip("no CUDA GPU with CuPy")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "sin", "tanh", "elementwise"])
def test_cupy_in_cupy_out_equals_cpu(name, dtype):
    cupy = _gpu()
    kernel_fn = fc_net(LAYERS[name], 3).kernel_fn
    x1, x2 = _points(300).astype(dtype), _points(200, seed=1).astype(dtype)
    for args in ((x1, None), (x1, x2)):
        want = kernel_fn(*args, ("nngp", "ntk"))
        got = kernel_fn(*(None if a is None else cupy.asarray(a) for a in args), ("nngp", "ntk"), block_rows=64)
        for g, w in zip(got, want):
            assert isinstance(g, cupy.ndarray) and g.dtype == dtype
            assert_close(cupy.asnumpy(g), w, _rtol(dtype) * 10)


@pytest.mark.gpu
def test_cupy_out_is_written_in_place():
    cupy = _gpu()
    kernel_fn = fc_net(stax.Relu(), 3).kernel_fn
    x = cupy.asarray(_points(257))
    out = cupy.empty((257, 257))
    assert kernel_fn(x, None, "ntk", out=out) is out
    assert_close(cupy.asnumpy(out), kernel_fn(cupy.asnumpy(x), None, "ntk"), 1e-11)
