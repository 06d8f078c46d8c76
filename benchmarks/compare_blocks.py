"""A kernel block K(X, C) written into preallocated ``out=`` arrays, against its memory floor, in one run.

The unit cost of every large-N method (conjugate gradients, Nyström/Falkon, out-of-core
kernels): the NNGP + NTK cross block of a fully-connected ReLU network (``depth`` hidden
layers Dense(512, W_std=√2, b_std=0.1) + Relu and a Dense(1) readout) between X (n1, d) and
C (n2, d), standard normal (seed 0), written into preallocated ``out={'nngp': a, 'ntk': b}``.

The floor is the same call's unavoidable work: the BLAS Gram ``np.matmul(X, C.T, out=a)`` into
one output plus one pass writing the second output (``np.copyto(b, a)``). The two are timed
alternately, ``--repeats`` times each, in this one process; the best of each and their ratio are
printed, with fastntk's cost per entry in core-nanoseconds (best time × threads / entries;
threads: fastntk.get_num_threads()) and the per-point cache of :class:`fastntk.solvers.
KernelOperator` (``--operator``: the block through ``KernelOperator.block``, whose per-point
passes are computed once beforehand, as a solver does).

Commands (from the repository root, fastntk installed; the threads as set by the environment)::

    python benchmarks/compare_blocks.py                          # (8000×32)·(2000×32), depth 3, float64
    python benchmarks/compare_blocks.py --operator --repeats 20
    python benchmarks/compare_blocks.py --depth 1 3 6 --dtype float32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # as a script: the asv suite's builders
import peers
from bench_kernels import cross_block_calls

import fastntk


def best_times(fns, repeats):
    """Best wall time of each callable, timed alternately ``repeats`` times after one warm-up call,
    each after a rest of ``peers.PAUSE`` seconds."""
    for f in fns:
        f()
    best = [np.inf] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            best[i] = min(best[i], peers.rested(f)[1])
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n1", type=int, default=8000)
    ap.add_argument("--n2", type=int, default=2000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--depth", type=int, nargs="+", default=[3])
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--operator", action="store_true", help="through KernelOperator.block (per-point passes cached)")
    args = ap.parse_args(argv)
    threads, entries = fastntk.get_num_threads(), args.n1 * args.n2
    print(f"K(X, C): X ({args.n1}, {args.d}), C ({args.n2}, {args.d}), {args.dtype}, NNGP + NTK into out=, "
          f"{threads} threads{', KernelOperator.block' if args.operator else ''}")
    print(f"{'depth':>5} {'fastntk':>10} {'floor':>10} {'ratio':>7} {'core-ns/entry':>14}")
    for depth in args.depth:
        t_block, t_floor = best_times(cross_block_calls(args.n1, args.n2, args.d, depth, args.dtype, args.operator),
                                      args.repeats)
        print(f"{depth:5d} {t_block * 1e3:8.1f}ms {t_floor * 1e3:8.1f}ms {t_block / t_floor:6.2f}x "
              f"{t_block * threads / entries * 1e9:14.2f}", flush=True)


if __name__ == "__main__":
    main()
