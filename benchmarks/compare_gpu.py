"""The GPU backend's fully-connected kernels beside the bare cuBLAS GEMM and JAX, on one GPU, one run.

The network: ``stax.serial(Dense(512, √2, 0.1), Relu()) × 3, Dense(1, √2, 0.1)`` (NTK
parameterization), NNGP and NTK of x against itself, x (N, d) standard normal float32 (seed 0).
Rows (seconds from CUDA events, best of ``--repeat`` after one warm-up call):

* ``gemm``: ``cupy.matmul(x, x.T, out=g)``, the bare cuBLAS Gram of the same shape (the floor);
* ``fastntk``: ``kernel_fn(x, None, ('nngp', 'ntk'), out=(nngp, ntk))`` on CuPy arrays: cuBLAS row
  blocks of the upper triangle, one fused kernel launch per block over all layers, the mirror;
* ``jax``: the same recursion written in ``jax.numpy`` under ``jax.jit`` (arc-cosine closed forms),
  by row blocks of ``--jax-rows`` (all N columns), where JAX sees the GPU; neural-tangents 0.6.5
  needs jax 0.4.23, which current GPU images do not carry, so JAX's own fused version stands in.

Ratios: ``fastntk / gemm`` (target ≤ 2) and ``jax / fastntk`` (target ≥ 5), and the normwise error
of the float32 GPU kernels against fastntk's float64 CPU kernels on the first ``--check`` rows.
One JSON object per row on stdout. Run by ``benchmarks/gpu_check.sh`` on the GPU machine::

    python benchmarks/compare_gpu.py --N 50000 --d 784
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # CuPy and JAX share the card

DEPTH, WIDTH, W_STD, B_STD = 3, 512, math.sqrt(2.0), 0.1


def network():
    from fastntk import stax

    layers = [layer for _ in range(DEPTH) for layer in (stax.Dense(WIDTH, W_STD, B_STD), stax.Relu())]
    return stax.serial(*layers, stax.Dense(1, W_STD, B_STD)).kernel_fn


def timed(cupy, fn, repeat):
    """Best seconds of ``repeat`` calls of fn after one warm-up, by CUDA events."""
    fn()
    best = math.inf
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def jax_kernels(x, rows):
    """fn() computing NNGP and NTK of the network by row blocks in jax.numpy (jit), or None without a JAX GPU."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    if not any(dev.platform == "gpu" for dev in jax.devices()):
        return None
    w2, b2 = W_STD**2, B_STD**2

    @jax.jit
    def block(xb, x, sq_b, sq):
        d = x.shape[1]
        k = w2 * (xb @ x.T) / d + b2
        q1, q2 = w2 * sq_b / d + b2, w2 * sq / d + b2
        t = k
        for _ in range(DEPTH):
            norm = jnp.sqrt(q1[:, None] * q2[None, :])
            c = jnp.clip(k / norm, -1.0, 1.0)
            theta = jnp.arccos(c)
            k_act = norm * (jnp.sin(theta) + (jnp.pi - theta) * c) / (2 * jnp.pi)
            k_dot = (jnp.pi - theta) / (2 * jnp.pi)
            k_next = w2 * k_act + b2
            t = k_next + w2 * k_dot * t
            k, q1, q2 = k_next, w2 * q1 / 2 + b2, w2 * q2 / 2 + b2
        return k, t

    xj = jnp.asarray(np.asarray(x))
    sq = jnp.sum(xj * xj, axis=1)

    def run():
        for i in range(0, xj.shape[0], rows):
            k, t = block(xj[i:i + rows], xj, sq[i:i + rows], sq)
        t.block_until_ready()

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--check", type=int, default=2_000, help="rows checked against the float64 CPU kernels")
    parser.add_argument("--jax-rows", type=int, default=5_000)
    args = parser.parse_args()

    import cupy

    kernel_fn = network()
    x = cupy.asarray(np.random.default_rng(0).standard_normal((args.N, args.d), dtype=np.float32))
    device = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    shape = {"N": args.N, "d": args.d, "dtype": "float32", "device": device}

    g = cupy.empty((args.N, args.N), cupy.float32)
    gemm = timed(cupy, lambda: cupy.matmul(x, x.T, out=g), args.repeat)
    del g
    print(json.dumps({"row": "gemm", "seconds": gemm, **shape}), flush=True)

    nngp, ntk = cupy.empty((args.N, args.N), cupy.float32), cupy.empty((args.N, args.N), cupy.float32)
    ours = timed(cupy, lambda: kernel_fn(x, None, ("nngp", "ntk"), out=(nngp, ntk)), args.repeat)
    print(json.dumps({"row": "fastntk", "seconds": ours, "ratio_to_gemm": ours / gemm, **shape}), flush=True)

    m = min(args.check, args.N)
    want = kernel_fn(cupy.asnumpy(x[:m]).astype(np.float64), None, ("nngp", "ntk"))
    errors = {name: float(np.abs(cupy.asnumpy(k[:m, :m]) - w).max() / np.abs(w).max())
              for name, k, w in zip(("nngp", "ntk"), (nngp, ntk), want)}
    print(json.dumps({"row": "accuracy", "rows": m, "normwise_error_vs_cpu_float64": errors}), flush=True)
    del nngp, ntk
    cupy.get_default_memory_pool().free_all_blocks()

    run = jax_kernels(x, args.jax_rows)
    if run is None:
        print(json.dumps({"row": "jax", "skipped": "JAX does not see a GPU"}), flush=True)
    else:
        theirs = timed(cupy, run, args.repeat)
        print(json.dumps({"row": "jax", "seconds": theirs, "ratio_to_fastntk": theirs / ours, **shape}), flush=True)


if __name__ == "__main__":
    main()
