"""Cholesky of an N×N SPD matrix: fastntk's blocked factorization beside LAPACK's dpotrf.

Rows, each N in its own subprocess (a crash is a row, not the end of the run):

* ``fastntk blocked``: ``fastntk.solvers._factor.cholesky`` (dpotrf on 1024-wide diagonal blocks,
  threaded dtrsm/dgemm for the rest; cpp/include/fastntk/cholesky.hpp), threaded as the BLAS is;
* ``dpotrf threaded``: ``scipy.linalg.cholesky`` on the same BLAS threads (OpenBLAS's threaded
  dpotrf crashes with a segmentation fault on large matrices on some machines: then the row says so);
* ``dpotrf 1 thread``: the same on one BLAS thread (what fastntk ran from N = 8192 on before).

The matrix: K = X Xᵀ + N·I, X (N, 64) standard normal (seed 0), its Gram formed on one BLAS thread.
Each row gives seconds and the residual ‖UᵀUv − Kv‖/‖Kv‖ for a random v. Ratios: the dpotrf rows'
seconds over the blocked row's, same N, one run.

Command::

    python benchmarks/compare_cholesky.py --N 8000 16000 24000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers


def factor(side, n):
    """{'seconds', 'residual'} of one factorization of the problem of order n by ``side``."""
    import scipy.linalg as sl
    import scipy.linalg.blas as blas
    from threadpoolctl import threadpool_limits

    from fastntk.solvers._factor import cholesky

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 64))
    with threadpool_limits(1):
        k = np.asfortranarray(x @ x.T)
    k.flat[:: n + 1] += n
    v = rng.standard_normal(n)
    kv = k @ v
    t0 = time.perf_counter()
    if side == "blocked":
        u = cholesky(k, overwrite_a=True)
    else:  # threadpool_limits(None) leaves the BLAS threads as they are
        with threadpool_limits(1 if side == "serial" else None):
            u = sl.cholesky(k, overwrite_a=True, check_finite=False)
    seconds = time.perf_counter() - t0
    r = blas.dtrmv(u, blas.dtrmv(u, v), trans=1)  # Uᵀ(U v), reading U's upper triangle only
    return {"seconds": seconds, "residual": float(np.linalg.norm(r - kv) / np.linalg.norm(kv))}


SIDES = {"fastntk blocked": "blocked", "dpotrf threaded": "threaded", "dpotrf 1 thread": "serial"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--N", type=int, nargs="+", default=[8000, 16000])
    p.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    p.add_argument("--worker", nargs=2, metavar=("SIDE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(factor(args.worker[0], int(args.worker[1]))))
        return 0
    for n in args.N:
        results = {name: peers.run_worker([sys.executable, __file__, "--worker", side, str(n)], timeout=args.timeout)
                   for name, side in SIDES.items()}
        base = results["fastntk blocked"]
        print(f"\nN = {n}")
        for name, r in results.items():
            if "error" in r:
                print(f"  {name:<16} failed ({r['error']})")
                continue
            ratio = "" if "error" in base else f"  ×{r['seconds'] / base['seconds']:.2f}"
            print(f"  {name:<16} {r['seconds']:8.2f} s{ratio}  residual {r['residual']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
