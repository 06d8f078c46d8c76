"""fastntk.predict.gradient_descent_mse against one eigh (the floor) and neural-tangents, side by side.

Problem: NTK of a ReLU network (2 hidden Dense(512, W_std=√2, b_std=0.1) + Relu, readout
Dense(1)) on standard-normal inputs (seed 0, d=64): ``k_train_train`` (N, N), ``k_test_train``
(N_test, N); targets and initial outputs (N, O), (N_test, O) standard normal / 0.1 × that;
``diag_reg=1e-4`` (relative), ``learning_rate=1``; ``--times`` times log-spaced in [1, 1e4]·N.

Rows (each the best of ``--repeats`` runs, in this process unless said otherwise):

* ``numpy eigh``: ``numpy.linalg.eigh(k_train_train)`` alone — the floor the issue sets
  (predictions at 10 times must cost ≤ 1.2× it);
* ``fastntk``: ``gradient_descent_mse(...)`` and one ``predict_fn(t, fx_train_0, fx_test_0,
  k_test_train)`` call (factorization included);
* ``neural-tangents``: the same call in ``.venv-nt/bin/python`` (neural-tangents 0.6.5, jax 0.4.23,
  ``jax_enable_x64``), in a subprocess, when that interpreter exists.

Peak memory is the tracemalloc peak of NumPy allocations during the call, in units of one N×N
float64 array (the input kernel not counted). Agreement: normwise max|Δ|/max|f| of the test
predictions against fastntk's.

Command (the 2-core development machine)::

    python benchmarks/compare_predict.py                       # N=8000, N_test=1000, O=10, 10 times
    python benchmarks/compare_predict.py --N 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # import peers: as a script, a --worker, or under asv
import peers
from peers import NT_PYTHON

DIAG_REG, LEARNING_RATE = 1e-4, 1.0


def problem(n, n_test, outputs, n_times, seed=0):
    """Arrays of the benchmark problem (module docstring)."""
    from fastntk import stax

    layers = []
    for _ in range(2):
        layers += [stax.Dense(512, W_std=2**0.5, b_std=0.1), stax.Relu()]
    kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=0.1))[2]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_test, 64))
    k_train_train = np.asarray(kernel_fn(x[:n], None, "ntk"))
    k_test_train = np.asarray(kernel_fn(x[n:], x[:n], "ntk"))
    y = rng.standard_normal((n, outputs))
    return {"k_train_train": k_train_train, "k_test_train": k_test_train, "y_train": y,
            "fx_train_0": 0.1 * rng.standard_normal((n, outputs)),
            "fx_test_0": 0.1 * rng.standard_normal((n_test, outputs)), "t": np.logspace(0, 4, n_times) * n}


def timed(fn, repeats):
    """(best seconds, tracemalloc peak bytes of the first run, result of the last run)."""
    best, peak, out = np.inf, None, None
    for i in range(repeats):
        if i == 0:
            tracemalloc.start()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        if i == 0:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return best, peak, out


def run_fastntk(a):
    from fastntk.predict import gradient_descent_mse

    fn = gradient_descent_mse(a["k_train_train"], a["y_train"], LEARNING_RATE, DIAG_REG)
    return fn(a["t"], a["fx_train_0"], a["fx_test_0"], a["k_test_train"])


def nt_worker(in_path, out_path, repeats):
    """neural-tangents' side (run by .venv-nt/bin/python): predictions to ``out_path``, best seconds as JSON."""
    jax, nt = peers.import_neural_tangents(x64=True)
    a = dict(np.load(in_path))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn = nt.predict.gradient_descent_mse(a["k_train_train"], a["y_train"], learning_rate=LEARNING_RATE,
                                             diag_reg=DIAG_REG)
        out = fn(a["t"], a["fx_train_0"], a["fx_test_0"], a["k_test_train"])
        out = jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t0)
    np.savez(out_path, fx_train=np.asarray(out[0]), fx_test=np.asarray(out[1]))
    print(json.dumps({"seconds": best}))


def run_nt(a, repeats):
    """(seconds, (fx_train, fx_test)) from neural-tangents in a subprocess, or (None, reason)."""
    if not NT_PYTHON.exists():
        return None, f"{NT_PYTHON} not found"
    with tempfile.TemporaryDirectory() as tmp:
        inp, outp = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, **a)
        res = peers.run_worker([str(NT_PYTHON), __file__, "--worker", str(inp), str(outp), "--repeats", str(repeats)],
                               prefer_error_lines=False, width=None)
        if "error" in res:
            return None, "failed: " + res["error"]
        z = np.load(outp)
        return float(res["seconds"]), (z["fx_train"], z["fx_test"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--N", type=int, default=8000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--outputs", type=int, default=10)
    parser.add_argument("--times", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-nt", action="store_true", help="skip neural-tangents")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return nt_worker(*args.worker, args.repeats)
    a = problem(args.N, args.n_test, args.outputs, args.times)
    nn_bytes = 8.0 * args.N**2
    print(f"N={args.N} N_test={args.n_test} O={args.outputs} times={args.times} repeats={args.repeats}", flush=True)
    t_eigh, m_eigh, _ = timed(lambda: np.linalg.eigh(a["k_train_train"]), args.repeats)
    print(f"{'numpy eigh (floor)':22s} {t_eigh:8.2f} s   1.00x eigh   peak {m_eigh / nn_bytes:4.2f} N²", flush=True)
    t_fast, m_fast, (fx_train, fx_test) = timed(lambda: run_fastntk(a), args.repeats)
    print(f"{'fastntk':22s} {t_fast:8.2f} s   {t_fast / t_eigh:4.2f}x eigh   peak {m_fast / nn_bytes:4.2f} N²",
          flush=True)
    if not args.no_nt:
        t_nt, res = run_nt(a, args.repeats)
        if t_nt is None:
            print(f"{'neural-tangents':22s} {res}")
        else:
            err = max(np.abs(res[1] - fx_test).max() / np.abs(fx_test).max(),
                      np.abs(res[0] - fx_train).max() / np.abs(fx_train).max())
            print(f"{'neural-tangents':22s} {t_nt:8.2f} s   {t_nt / t_eigh:4.2f}x eigh   "
                  f"{t_nt / t_fast:4.2f}x fastntk   max normwise diff {err:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
