"""fastntk against neural-tangents on convolutional networks: infinite-width NNGP + NTK, side by side.

Networks (``--case``; each is built by one function from either library's ``stax``, which share
constructors and names), kernels of x with itself (x2=None), get=('nngp', 'ntk'), float64,
standard-normal NHWC images x of shape (N, H, W, 3) (seed 0):

* ``relu3-gap``, ``relu3-flatten``: three Conv(512, (3, 3), padding='SAME', W_std=√2, b_std=0.1) + Relu
  layers, then GlobalAvgPool() or Flatten(), then Dense(1, W_std=√2, b_std=0.1); 8×8×3 images,
  N = 64 and 512 by default;
* ``myrtle5``: the Myrtle-5 network of Shankar et al. 2020, "Neural Kernels Without Tangents"
  (arXiv:2003.02237), as neural-tangents defines it in its notebook
  ``notebooks/myrtle_kernel_with_neural_tangents.ipynb`` (``MyrtleNetwork(5)``, layer_factor
  [2, 1, 1]): W_std=√2, b_std=0; 2 × [Conv(3×3, SAME) + Relu], AvgPool((2, 2), (2, 2)),
  Conv + Relu, AvgPool, Conv + Relu, 3 × AvgPool (32 → 1 position), Flatten, Dense(10);
  32×32×3 images, N = 8 and 16 by default.

Each side runs in a fresh subprocess on the same inputs (saved once to a .npy file):

* ``fastntk``: ``kernel_fn(x, None, ('nngp', 'ntk'))`` in this Python (where fastntk is installed);
* ``neural-tangents``: ``jax.jit(kernel_fn, static_argnames='get')`` run by
  ``.venv-nt/bin/python`` (neural-tangents 0.6.5, jax 0.4.23, ``jax_enable_x64`` on);
* ``nt.batch(B)``: ``nt.batch(kernel_fn, batch_size=B)`` (``--nt-batch-size``, default 64 for
  relu3-*, 4 for myrtle5; jitted inside, B×B blocks), run when the jit row fails
  (``--nt-batch auto``: out of memory, as the GAP network's N²·P² covariances are at N = 512)
  or always (``--nt-batch always``).

A subprocess makes one call (for neural-tangents this includes jit compilation), reads its peak
resident memory (VmHWM, /proc/self/status), then times ``--repeats`` more calls (each result is
freed before the next) and keeps the best. The table gives that best time, the ratio of
neural-tangents' best to fastntk's (from the same run of this script), the CPU time of that call
(all threads), the peak RSS of the process and of the call alone (peak minus RSS just before it),
kernel entries per second (N² / best s: each entry both an NNGP and an NTK value) and the largest
difference from fastntk's kernels, max_ij |K_ij − K^fastntk_ij| / max_ij |K^fastntk_ij| for the
NNGP and the NTK, over all entries and over the pairs i ≠ j of two different images (the
diagonal, ρ = 1, is where neural-tangents' ReLU NTK loses digits), computed here from the
kernels each worker saves (the first call's, at most 512 evenly spaced rows). Every subprocess
runs under an address-space limit (``--mem-limit-gib``, default 16, below the development
machine's 24 GiB; Myrtle-5 at N = 16 takes 14.3 GiB in neural-tangents) and ``--timeout``
seconds; a side that runs out of either, or raises, is reported as failed with the reason.

Commands (from the repository root; the 2-core development machine, threads as set by the
environment)::

    # neural-tangents venv, once (as in ../shared/peers/README.md):
    python3 -m venv .venv-nt
    .venv-nt/bin/pip install jax==0.4.23 jaxlib==0.4.23 "numpy==1.26.4" "scipy==1.11.4" \\
        ml_dtypes==0.3.2 opt_einsum frozendict typing_extensions
    .venv-nt/bin/pip install --no-deps neural-tangents==0.6.5

    python benchmarks/compare_cnn.py --case relu3-gap relu3-flatten --N 64
    python benchmarks/compare_cnn.py --case relu3-flatten --N 512
    python benchmarks/compare_cnn.py --case relu3-gap --N 512 --repeats 1 --timeout 2400   # ~15 min
    python benchmarks/compare_cnn.py --case myrtle5 --repeats 1                  # N = 8, 16; ~4 min
    python benchmarks/compare_cnn.py --case relu3-gap --N 64 --nt-batch always --nt-batch-size 32
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

W_STD, B_STD, CHANNELS = 2.0**0.5, 0.1, 512
GET = ("nngp", "ntk")
N_SAMPLE_ROWS = 512
RELU_CNN_IMAGES, MYRTLE_IMAGES = (8, 8, 3), (32, 32, 3)  # (H, W, C)
MYRTLE_LAYER_FACTOR = (2, 1, 1)  # Myrtle-5: Conv + Relu blocks before each of the three pooling stages
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "MemoryError", "bad_alloc",
               "Cannot allocate memory")


def relu_cnn(stax, readout, depth=3):
    """``depth`` × [Conv(512, (3, 3), SAME, W_std=√2, b_std=0.1) + Relu], ``readout`` ('GlobalAvgPool' or
    'Flatten'), Dense(1, W_std=√2, b_std=0.1): (init_fn, apply_fn, kernel_fn) of ``stax``."""
    conv = stax.Conv(CHANNELS, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD)
    return stax.serial(*[conv, stax.Relu()] * depth, getattr(stax, readout)(), stax.Dense(1, W_std=W_STD, b_std=B_STD))


def myrtle5(stax):
    """Myrtle-5 (Shankar et al. 2020) as neural-tangents' myrtle_kernel_with_neural_tangents.ipynb builds it:
    on 32×32 inputs the five 2×2 pools leave one position, so Flatten is a global pool."""
    block = [stax.Conv(CHANNELS, (3, 3), padding="SAME", W_std=W_STD, b_std=0.0), stax.Relu()]
    pool = stax.AvgPool((2, 2), strides=(2, 2))
    first, second, third = MYRTLE_LAYER_FACTOR
    layers = block * first + [pool] + block * second + [pool] + block * third + [pool] * 3
    return stax.serial(*layers, stax.Flatten(), stax.Dense(10, W_std=W_STD, b_std=0.0))


# case: (network of a stax module, image shape (H, W, C), default N, default nt.batch batch_size)
CASES = {
    "relu3-gap": (lambda stax: relu_cnn(stax, "GlobalAvgPool"), RELU_CNN_IMAGES, [64, 512], 64),
    "relu3-flatten": (lambda stax: relu_cnn(stax, "Flatten"), RELU_CNN_IMAGES, [64, 512], 64),
    "myrtle5": (myrtle5, MYRTLE_IMAGES, [8, 16], 4),
}


# --------------------------------------------------------------------------- workers
def _fastntk_fn(case):
    import fastntk
    from fastntk import stax

    kernel_fn = CASES[case][0](stax)[2]
    return (lambda x: tuple(kernel_fn(x, None, GET))), f"fastntk {fastntk.__version__}"


def _nt_fn(case, batch_size):
    """neural-tangents' kernel_fn of ``case``, jitted (``batch_size`` 0) or through nt.batch."""
    jax, nt = peers.import_neural_tangents(x64=True)
    kernel_fn = CASES[case][0](nt.stax)[2]
    if batch_size:
        kernel_fn = nt.batch(kernel_fn, batch_size=batch_size)
    else:
        kernel_fn = jax.jit(kernel_fn, static_argnames="get")

    def run(x):
        return tuple(jax.block_until_ready(kernel_fn(x, None, get=GET)))

    return run, jax.numpy.asarray, f"neural-tangents {nt.__version__}, jax {jax.__version__}"


def worker(side, case, x_path, repeats, batch_size, sample_path):
    """One side: first call, peak RSS, best of ``repeats``; saves the first call's kernels (sampled
    rows) to ``sample_path`` and prints a JSON line."""
    x = np.load(x_path)
    if side == "fastntk":
        fn, version = _fastntk_fn(case)
    else:
        fn, to_device, version = _nt_fn(case, batch_size)
        x = to_device(x)
    rows = np.linspace(0, x.shape[0] - 1, min(N_SAMPLE_ROWS, x.shape[0])).astype(int)

    def keep_first(out):
        np.savez(sample_path, rows=rows, **{name: np.asarray(k)[rows] for name, k in zip(GET, out)})
        return {"version": version}

    print(json.dumps(peers.measure(fn, x, repeats, keep_first)))


# --------------------------------------------------------------------------- driver
def _plain_error(res, mem_limit_gib):
    """``res`` with an out-of-memory failure said so: rc=-9 (killed) or an allocation error."""
    err = res.get("error", "")
    if err and (err.startswith("rc=-9") or any(m in err for m in OOM_MARKERS)):
        return {"error": f"out of memory under the {mem_limit_gib:g} GiB address-space limit; {err}"}
    return res


def run_side(side, case, x_path, batch_size, args, workdir):
    """Run one side in a fresh subprocess (neural-tangents through nt.batch when ``batch_size`` > 0); returns
    its JSON dict (with 'sample': the saved kernels) or {'error': ...}."""
    n = np.load(x_path, mmap_mode="r").shape[0]
    if batch_size and n % batch_size:
        return {"error": f"nt.batch's batch_size {batch_size} does not divide N={n}"}
    python = str(NT_PYTHON) if side != "fastntk" else sys.executable
    sample = Path(workdir) / f"sample-{side.split()[0].replace('.', '')}.npz"
    cmd = [python, __file__, "--worker", side, "--case", case, "--x", str(x_path), "--repeats", str(args.repeats),
           "--batch", str(batch_size), "--sample", str(sample)]
    res = _plain_error(peers.run_worker(cmd, timeout=args.timeout, mem_limit_gib=args.mem_limit_gib),
                       args.mem_limit_gib)
    if "error" not in res:
        with np.load(sample) as z:
            res["sample"] = {name: z[name] for name in (*GET, "rows")}
    return res


def max_rel_diff(k, k_ref, rows=None):
    """max_ij |k_ij − k_ref_ij| / max_ij |k_ref_ij|; with ``rows`` (the input index of each row of k) over
    i ≠ j only, the pairs of two different inputs."""
    diff = np.abs(k - k_ref)
    if rows is not None:
        diff[np.arange(len(rows)), rows] = 0.0
    return float(diff.max() / np.abs(k_ref).max())


def print_table(title, n, results):
    ref = results["fastntk"]
    head = (f"{'side':<16} {'first s':>8} {'best s':>8} {'NT/fastntk':>10} {'cpu s':>7} {'peak RSS GiB':>12} "
            f"{'call GiB':>9} {'entries/s':>9} {'max rel.diff nngp, ntk':>23} {'off-diagonal':>16}")

    def row(side, r):
        ratio = "-" if side == "fastntk" or "error" in ref else f"{r['best_s'] / ref['best_s']:.3g}x"
        if side != "fastntk" and "error" not in ref:
            a, b = r["sample"], ref["sample"]
            diff, off = (", ".join(f"{max_rel_diff(a[g], b[g], rows):.1e}" for g in GET) for rows in (None, a["rows"]))
        else:
            diff = off = "-"
        cpu = "-" if r["cpu_s"] is None else f"{r['cpu_s']:.2f}"
        return (f"{r['first_s']:8.3f} {r['best_s']:8.3f} {ratio:>10} {cpu:>7} {r['peak_rss'] / 2**30:12.2f} "
                f"{(r['peak_rss'] - r['rss_before']) / 2**30:9.2f} {n * n / r['best_s']:9.3g} {diff:>23} {off:>16}")

    peers.print_table(title, head, results, row)
    print("; ".join(dict.fromkeys(r["version"] for r in results.values() if "version" in r)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--N", type=int, nargs="+", help="batch sizes (default: 64 512 for relu3-*, 8 16 for myrtle5)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the first (best is kept)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per subprocess")
    ap.add_argument("--mem-limit-gib", type=float, default=16.0, help="address-space limit per subprocess")
    ap.add_argument("--nt-batch", choices=["auto", "always", "never"], default="auto",
                    help="run nt.batch: when the jit call fails (auto), always or never")
    ap.add_argument("--nt-batch-size", type=int,
                    help="nt.batch's batch_size, at most N (default: 64 for relu3-*, 4 for myrtle5)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--x", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sample", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.case[0], args.x, args.repeats, args.batch, args.sample)
    if args.nt_batch_size is not None and args.nt_batch_size < 1:
        ap.error(f"--nt-batch-size must be >= 1; got {args.nt_batch_size}")
    has_nt = NT_PYTHON.exists()
    if not has_nt:
        print(f"{NT_PYTHON} not found: neural-tangents rows skipped (see this script's docstring for the venv)")

    print(f"# {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="fastntk-compare-cnn-") as workdir:
        for case in args.case:
            _, image_shape, default_n, default_batch = CASES[case]
            for n in args.N or default_n:
                batch_size = min(args.nt_batch_size or default_batch, n)
                x_path = Path(workdir) / "x.npy"
                np.save(x_path, np.random.default_rng(0).standard_normal((n, *image_shape)))
                results = {"fastntk": run_side("fastntk", case, x_path, 0, args, workdir)}
                if has_nt:
                    results["neural-tangents"] = nt_jit = run_side("neural-tangents", case, x_path, 0, args, workdir)
                    if args.nt_batch == "always" or (args.nt_batch == "auto" and "error" in nt_jit):
                        side = f"nt.batch({batch_size})"
                        results[side] = run_side(side, case, x_path, batch_size, args, workdir)
                title = (f"{case}, NNGP+NTK, x2=None, float64, N={n}, images {'x'.join(map(str, image_shape))}, "
                         f"best of {args.repeats} (load average {os.getloadavg()[0]:.2f} at end)")
                print_table(title, n, results)
                sys.stdout.flush()
    print("first s: the first call in a fresh process (neural-tangents: with jit compilation); best s: best of the "
          "calls after it;\nNT/fastntk = best s / fastntk's best s (> 1: slower than fastntk); cpu s: CPU time of "
          "that call, all threads;\ncall GiB = peak RSS - RSS before the first call; entries/s = N² / best s; "
          "max rel.diff = max|K - K_fastntk| / max|K_fastntk| over all entries, off-diagonal: over i != j")


if __name__ == "__main__":
    main()
