"""Random features at scale: Φ for N = 10⁶ points, m = 8,192 features, written to a memory map.

The feature matrix of N = 10⁶ points and m = 8,192 float32 features is 32.8 GB, more than the RAM
of the 2-core, 24 GiB machine, so ``FeatureMap.transform(x, out=np.memmap)`` writes it block by
block of rows into a .npy file, each block's pages written to the file (msync) as it completes.
This script times that and measures the memory it needs beside the file:

* wall time of drawing the map and transforming the N points (the file written, flushed);
* peak anonymous memory (RssAnon, sampled every 50 ms, and the peak RSS of the process, which
  also counts the file's pages while they are resident) against the feature matrix's size;
* the relative Frobenius error ‖Φ Φᵀ − K‖_F/‖K‖_F on the first ``--check`` points, read back
  from the file, against ``kernel_fn`` of the same network: the map is the one a smaller run uses.

Data (fixed seed 0): N points in d dimensions on the unit sphere; the bias-free ReLU NTK with
σ_w² = 2 of depth L, ``stax.fc_network(L, 'relu', W_std=√2, b_std=None)``, as
``compare_features.py``.

Commands (from the repository root, fastntk installed; DIR needs ~33 GB free)::

    python benchmarks/features_at_scale.py --dir DIR
    python benchmarks/features_at_scale.py --N 100000 --depth 1 3 --method random_features sketch --dir DIR
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # import peers: as a script or loaded by path
import peers  # noqa: E402

from fastntk import stax  # noqa: E402
from fastntk.features import random_features  # noqa: E402


def sphere(n, d, seed=0):
    """n points on the unit sphere in d dimensions, float32, fixed seed; generated in chunks."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), np.float32)
    for i0 in range(0, n, 2**17):
        chunk = rng.standard_normal((min(n, i0 + 2**17) - i0, d))
        x[i0:i0 + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return x


class PeakMemory:
    """Peak RssAnon of this process (KiB), sampled every 50 ms while the ``with`` block runs."""

    def __enter__(self):
        self.peak, self._stop = peers.rss_kib("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, peers.rss_kib("RssAnon"))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, peers.rss_kib("RssAnon"))


def run(x, depth, method, m, path, check):
    """Draw, transform into a memmap at ``path``; returns (seconds, peak RssAnon GiB, error on ``check`` points)."""
    kernel_fn = stax.fc_network(depth, "relu", W_std=2**0.5, b_std=None)[2]
    with PeakMemory() as memory:
        start = time.perf_counter()
        fmap = random_features(kernel_fn, x.shape[1], "ntk", m, method=method, seed=0, dtype=np.float32)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(x.shape[0], fmap.n_out))
        fmap.transform(x, out=out)
        del out
        seconds = time.perf_counter() - start
    phi = np.load(path, mmap_mode="r")[:check].astype(np.float64)
    k = kernel_fn(x[:check].astype(np.float64), None, "ntk")
    error = np.linalg.norm(phi @ phi.T - k) / np.linalg.norm(k)
    return seconds, memory.peak / 2**20, error, fmap.n_out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--N", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--m", type=int, default=8192)
    p.add_argument("--depth", type=int, nargs="+", default=[1])
    p.add_argument("--method", nargs="+", default=["random_features"], choices=["random_features", "sketch"])
    p.add_argument("--check", type=int, default=2000, help="points whose Gram is compared with kernel_fn")
    p.add_argument("--dir", type=Path, required=True, help="where the .npy feature file is written (then removed)")
    args = p.parse_args(argv)
    x = sphere(args.N, args.d)
    size = args.N * args.m * 4 / 2**30
    print(f"N = {args.N:,}, d = {args.d}, m = {args.m}: the float32 feature matrix is {size:.1f} GiB; "
          f"{os.cpu_count()} cores; inputs {x.nbytes / 2**30:.2f} GiB")
    print(f"{'L':>2} {'method':>16} {'n_out':>6} {'seconds':>8} {'peak RssAnon GiB':>16} {'peak RSS GiB':>12} "
          f"{'rel. error':>10}")
    for depth in args.depth:
        for method in args.method:
            path = args.dir / f"features_L{depth}_{method}.npy"
            try:
                seconds, anon, error, n_out = run(x, depth, method, args.m, path, args.check)
            finally:
                path.unlink(missing_ok=True)
            rss = peers.rss_kib("VmHWM") / 2**20
            print(f"{depth:>2} {method:>16} {n_out:>6} {seconds:>8.1f} {anon:>16.2f} {rss:>12.2f} {error:>10.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
