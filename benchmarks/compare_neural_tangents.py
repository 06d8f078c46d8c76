"""fastntk against neural-tangents (and against the bare BLAS Gram matrix), side by side.

Infinite-width NNGP + NTK of a fully-connected ReLU network: ``depth`` hidden layers
Dense(512, W_std=√2, b_std=0.1) + Relu and a Dense(1) readout, x2=None,
get=('nngp', 'ntk'), standard-normal inputs x of shape (N, d) (seed 0).

Each side runs in a fresh subprocess on the same inputs (saved once to a .npy file):

* ``fastntk``: ``kernel_fn(x, None, get)`` in this Python (where fastntk is installed);
* ``neural-tangents``: ``jax.jit(kernel_fn, static_argnames='get')`` run by
  ``.venv-nt/bin/python`` (neural-tangents 0.6.5, jax 0.4.23; see
  ../shared/peers/README.md), with ``jax_enable_x64`` on for float64 and off for float32;
* ``--floor``: NumPy ``x @ x.T`` (BLAS syrk) and ``x @ y.T`` with y a copy of x (gemm).

A subprocess makes one call (for neural-tangents this includes jit compilation) and then
reads its peak resident memory (VmHWM, /proc/self/status); then it times ``--repeats``
more calls (each result is freed before the next) and keeps the best. The table gives
that best time, its ratio to fastntk's, the CPU time of that call (all threads: a check
on wall times taken while other processes share the cores), the peak RSS of the process and of the call
alone (peak minus RSS just before it), the bytes of the returned kernels and the
normwise relative difference ‖K − K_fastntk‖_F / ‖K_fastntk‖_F on a sample of 256 rows.
A side that fails (an exception, or killed when out of memory) is reported as "failed".
Every subprocess runs under an address-space limit (``--mem-limit-gib``, default 20) so
that an out-of-memory peer fails alone instead of starving the machine.

Commands (from the repository root; the 2-core development machine, threads as set by
the environment)::

    # neural-tangents venv, once (as in ../shared/peers/README.md):
    python3 -m venv .venv-nt
    .venv-nt/bin/pip install jax==0.4.23 jaxlib==0.4.23 "numpy==1.26.4" "scipy==1.11.4" \\
        ml_dtypes==0.3.2 opt_einsum frozendict typing_extensions
    .venv-nt/bin/pip install --no-deps neural-tangents==0.6.5

    python benchmarks/compare_neural_tangents.py --N 8000 --d 784 64 --depth 3 --dtype float64
    python benchmarks/compare_neural_tangents.py --floor --N 8000 --d 784 --depth 3 --dtype float64 --repeats 5
    python benchmarks/compare_neural_tangents.py --big --mem-limit-gib 12   # N=16000, d=784, float64, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # import peers: as a script, a --worker, or under asv
import peers
from peers import NT_PYTHON

W_STD, B_STD, WIDTH = 2.0**0.5, 0.1, 512
GET = ("nngp", "ntk")
N_SAMPLE_ROWS = 256


# --------------------------------------------------------------------------- workers
def _fastntk_fn(depth, dtype):
    from fastntk import stax

    layers = []
    for _ in range(depth):
        layers += [stax.Dense(WIDTH, W_std=W_STD, b_std=B_STD), stax.Relu()]
    kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=W_STD, b_std=B_STD))[2]
    return lambda x: tuple(kernel_fn(x, None, GET))


def _nt_fn(depth, dtype):
    jax, _ = peers.import_neural_tangents(x64=dtype == "float64")
    from neural_tangents import stax

    layers = []
    for _ in range(depth):
        layers += [stax.Dense(WIDTH, W_std=W_STD, b_std=B_STD), stax.Relu()]
    kernel_fn = jax.jit(stax.serial(*layers, stax.Dense(1, W_std=W_STD, b_std=B_STD))[2], static_argnames="get")

    def run(x):
        return tuple(jax.block_until_ready(kernel_fn(x, None, get=GET)))

    return run, jax.numpy.asarray


def worker(side, x_path, depth, repeats, sample_path):
    """One side: first call, peak RSS, best of ``repeats``; prints a JSON line."""
    x = np.load(x_path)
    dtype = x.dtype.name
    if side == "fastntk":
        fn = _fastntk_fn(depth, dtype)
    elif side == "neural-tangents":
        fn, to_device = _nt_fn(depth, dtype)
        x = to_device(x)
    elif side == "x @ x.T":  # NumPy sends this to BLAS syrk
        fn = lambda x: (x @ x.T,)  # noqa: E731
    else:  # "x @ y.T": gemm
        y = x.copy()
        fn = lambda x: (x @ y.T,)  # noqa: E731
    rows = np.linspace(0, x.shape[0] - 1, N_SAMPLE_ROWS).astype(int)

    def keep_first(out):
        np.savez(sample_path, *[np.asarray(k)[rows] for k in out])
        return {"nbytes": sum(int(np.asarray(k).nbytes) for k in out)}

    print(json.dumps(peers.measure(fn, x, repeats, keep_first)))


# --------------------------------------------------------------------------- driver
def run_side(side, x_path, depth, repeats, workdir, mem_limit_gib, timeout):
    """Run one side in a fresh subprocess; returns its JSON dict, or {'error': ...}."""
    python = str(NT_PYTHON) if side == "neural-tangents" else sys.executable
    sample = Path(workdir) / f"sample-{side.replace(' ', '').replace('@', 'at').replace('.', '')}.npz"
    cmd = [python, __file__, "--worker", side, "--x", str(x_path), "--depth", str(depth),
           "--repeats", str(repeats), "--sample", str(sample)]
    res = peers.run_worker(cmd, timeout=timeout, mem_limit_gib=mem_limit_gib)
    if "error" in res:
        return res
    with np.load(sample) as z:
        res["sample"] = [z[k] for k in sorted(z.files)]
    return res


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _gib(nbytes):
    return f"{nbytes / 2**30:.2f}"


def print_table(title, results, compare_kernels):
    ref = results["fastntk"]
    head = (f"{'side':<16} {'first s':>8} {'best s':>8} {'ratio':>7} {'cpu s':>6} {'peak RSS GiB':>12} "
            f"{'call GiB':>9} {'out GiB':>8} {'RSS/out':>8} {'rel.err nngp, ntk':>20}")

    def row(side, r):
        ratio = r["best_s"] / ref["best_s"] if "error" not in ref else float("nan")
        if compare_kernels and side != "fastntk" and "error" not in ref:
            err = ", ".join(f"{_rel_err(a, b):.1e}" for a, b in zip(r["sample"], ref["sample"]))
        else:
            err = "-"
        cpu = "-" if r["cpu_s"] is None else f"{r['cpu_s']:.2f}"
        return (f"{r['first_s']:8.3f} {r['best_s']:8.3f} {ratio:6.2f}x {cpu:>6} {_gib(r['peak_rss']):>12} "
                f"{_gib(r['peak_rss'] - r['rss_before']):>9} {_gib(r['nbytes']):>8} "
                f"{r['peak_rss'] / r['nbytes']:8.2f} {err:>20}")

    peers.print_table(title, head, results, row)
    print("first s: the first call in a fresh process (neural-tangents: with jit compilation); best s: best of the "
          "calls after it;\nratio = best s / fastntk's best s (> 1: slower than fastntk); cpu s: CPU time of that "
          "call, all threads;\ncall GiB = peak RSS - RSS before the first call; out GiB: returned kernels; "
          "rel.err = ||K - K_fastntk||_F / ||K_fastntk||_F on 256 rows")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", type=int, nargs="+", default=[8000])
    ap.add_argument("--d", type=int, nargs="+", default=[784, 64])
    ap.add_argument("--depth", type=int, default=3, help="hidden Dense+Relu layers")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the first (best is kept)")
    ap.add_argument("--floor", action="store_true", help="compare with NumPy x @ x.T and x @ y.T instead")
    ap.add_argument("--big", action="store_true", help="N=16000, d=784, float64, repeats=1")
    ap.add_argument("--mem-limit-gib", type=float, default=20.0, help="address-space limit per subprocess")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per subprocess")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--x", help=argparse.SUPPRESS)
    ap.add_argument("--sample", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.x, args.depth, args.repeats, args.sample)
    if args.big:
        args.N, args.d, args.dtype, args.repeats = [16000], [784], "float64", 1

    sides = ["fastntk", "x @ x.T", "x @ y.T"] if args.floor else ["fastntk", "neural-tangents"]
    if "neural-tangents" in sides and not NT_PYTHON.exists():
        print(f"{NT_PYTHON} not found: neural-tangents column skipped. Create it with\n"
              "    python3 -m venv .venv-nt\n"
              "    .venv-nt/bin/pip install jax==0.4.23 jaxlib==0.4.23 'numpy==1.26.4' 'scipy==1.11.4' "
              "ml_dtypes==0.3.2 opt_einsum frozendict typing_extensions\n"
              "    .venv-nt/bin/pip install --no-deps neural-tangents==0.6.5")
        sides.remove("neural-tangents")

    print(f"# {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="fastntk-compare-") as workdir:
        for n in args.N:
            for d in args.d:
                x = np.random.default_rng(0).standard_normal((n, d)).astype(args.dtype)
                x_path = Path(workdir) / "x.npy"
                np.save(x_path, x)
                del x
                results = {side: run_side(side, x_path, args.depth, args.repeats, workdir,
                                          args.mem_limit_gib, args.timeout) for side in sides}
                title = (f"FC ReLU, {args.depth} hidden layers, NNGP+NTK, x2=None, {args.dtype}, N={n}, d={d}, "
                         f"best of {args.repeats} (load average {os.getloadavg()[0]:.2f} at end)")
                print_table(title, results, compare_kernels=not args.floor)
                sys.stdout.flush()


if __name__ == "__main__":
    main()
