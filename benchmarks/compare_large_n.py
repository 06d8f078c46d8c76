"""Large-N kernel regression: fastntk's Falkon beside exact KRR on a subset and scikit-learn's Nystroem + Ridge.

Problem (seed 0): x ~ N(0, I_d), d = 32, targets y = sin(x·w₁) + ½ cos(x·w₂) + σ·ε with
w₁, w₂ ~ N(0, f²I/d) drawn once (``--frequency`` f, default 2: x·w ~ N(0, f²)) and ε standard
normal (``--noise`` σ, default 0.1); ``--N`` training points, ``--n-test`` test
points drawn first (the same test set for every row). Kernel: the NTK of a fully-connected ReLU
network of depth 3 (``stax.fc_network(3)``, W_std = √2, b_std = 0.1), ridge ``--diag-reg``
relative (× trace(K)/N).

Rows, each in its own subprocess (peak RSS is that process's VmHWM, data included):

* ``fastntk falkon``: ``predict.kernel_ridge(KernelOperator, solver='falkon', n_centers=--M)``
  on all N points (K_NM stored in float32 as far as the default budget, min(available/4, 4 GiB),
  allows; the rest recomputed per iteration), to relative residual ``--tol`` in ``--maxiter``
  iterations at most;
* ``exact KRR``: Cholesky kernel ridge on the first n training points, twice: n the largest subset
  whose N×N kernel and Cholesky copy, 16·n² bytes, take at most half the available memory
  (``--exact-N`` sets it), and n the largest subset that fits in the ``fastntk falkon`` row's time
  as well ("same time"): its time is predicted from the same exact KRR run on ``--calibrate-N``
  points, its kernels and its solve timed apart, as
  t(n) = t_kernels·(n²/2 + n·n_test)/(n₀²/2 + n₀·n_test) + t_solve·(n/n₀)³ (kernel entries; the
  Cholesky's n³), and the row's own measured time is printed beside the prediction;
* ``sklearn Nystroem``: ``Nystroem(kernel=callable, n_components=--sklearn-M)`` + ``Ridge`` on the
  first ``--sklearn-N`` points (and ``--sklearn-test`` test points), with the same kernel as a
  callable ``k(x, x')`` — scikit-learn evaluates a callable kernel one pair of points at a time
  (``pairwise_kernels``; ~0.3 ms a pair here), so it runs only at small sizes; beside it
  ``fastntk falkon`` on the same points and centres count. Its objective
  ‖y − Φw‖² + α‖w‖² with Φ = K_NM K_MM^(-1/2) is Falkon's with α = λ, so the MSEs should agree.

Ratios: seconds and peak RSS against the ``fastntk falkon`` row at the same size; test MSE.

Commands (do not run the large sizes on a shared machine)::

    python benchmarks/compare_large_n.py --N 100000 --M 2000
    python benchmarks/compare_large_n.py --N 1000000 --M 10000
    python benchmarks/compare_large_n.py --N 200000 --M 4000 --frequency 1 --noise 0.5   # smoother, noisier
    python benchmarks/compare_large_n.py --N 20000 --M 1000 --exact-N 5000 --n-test 2000 --calibrate-N 2000  # quick
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # import peers: as a script or a --worker
import peers

D, SEED = 32, 0


def problem(n, n_test, frequency=2.0, noise=0.1, seed=SEED):
    """(x_train (n, d), y_train (n, 1), x_test, y_test): the test set is drawn first, then the training set."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((2, D)) * frequency / np.sqrt(D)

    def draw(m):
        x = rng.standard_normal((m, D))
        y = np.sin(x @ w[0]) + 0.5 * np.cos(x @ w[1]) + noise * rng.standard_normal(m)
        return x, y[:, None]

    x_test, y_test = draw(n_test)
    x, y = draw(n)
    return x, y, x_test, y_test


def kernel_fn():
    from fastntk import stax

    return stax.fc_network(3, "relu", np.sqrt(2), 0.1)[2]


def run_falkon(a):
    from fastntk import predict, solvers

    x, y, xt, yt = problem(a["n"], a["n_test"], a["frequency"], a["noise"])
    kfn = kernel_fn()

    def fit(_):
        op, op_test = solvers.KernelOperator(kfn, x), solvers.KernelOperator(kfn, xt, x)
        return predict.kernel_ridge(op, y, a["diag_reg"], k_test_train=op_test, solver="falkon", n_centers=a["m"],
                                    tol=a["tol"], maxiter=a["maxiter"], seed=SEED)

    def keep(res):
        return {"test_mse": float(np.mean((res.fx_test - yt) ** 2)), "iterations": res.solution.iterations}

    return peers.measure(fit, None, 0, keep)


def run_exact(a):
    """Cholesky kernel ridge on the first n points, its two parts timed apart: kernels_s (the train and
    test kernels) and solve_s (the solve and the test prediction), beside the test MSE."""
    import time

    from fastntk import predict

    x, y, xt, yt = problem(a["n"], a["n_test"], a["frequency"], a["noise"])
    kfn = kernel_fn()

    def fit(_):
        t0 = time.perf_counter()
        k_train, k_test = kfn(x, None, "ntk"), kfn(xt, x, "ntk")
        t1 = time.perf_counter()
        fx_test = predict.kernel_ridge(k_train, y, a["diag_reg"], k_test_train=k_test).fx_test
        return fx_test, t1 - t0, time.perf_counter() - t1

    def keep(out):
        fx_test, kernels_s, solve_s = out
        return {"test_mse": float(np.mean((fx_test - yt) ** 2)), "kernels_s": kernels_s, "solve_s": solve_s}

    return peers.measure(fit, None, 0, keep)


def exact_seconds(n, n0, n_test, cal):
    """Exact KRR's predicted seconds on n points from its calibration ``cal`` on n0 (see the module docstring)."""
    entries = (n * n / 2 + n * n_test) / (n0 * n0 / 2 + n0 * n_test)
    return cal["kernels_s"] * entries + cal["solve_s"] * (n / n0) ** 3


def same_time_n(seconds, n_max, n0, n_test, cal):
    """The largest n ≤ n_max whose predicted exact-KRR time is at most ``seconds`` (bisection)."""
    lo, hi = 2, n_max
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if exact_seconds(mid, n0, n_test, cal) <= seconds else (lo, mid - 1)
    return lo


def run_sklearn(a):
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    from fastntk import solvers

    x, y, xt, yt = problem(a["n"], a["n_test"], a["frequency"], a["noise"])
    kfn = kernel_fn()

    def pair(u, v):  # scikit-learn calls a callable kernel on one pair of 1-D points
        return float(kfn(u[None], v[None], "ntk")[0, 0])

    # Ridge's α = the absolute λ of Falkon's objective: diag_reg × trace(K)/N, from the kernel's diagonal.
    alpha = a["diag_reg"] * float(np.mean(solvers.KernelOperator(kfn, x).diagonal()))

    def fit(_):
        model = make_pipeline(Nystroem(kernel=pair, n_components=a["m"], random_state=SEED), Ridge(alpha=alpha))
        return model.fit(x, y).predict(xt).reshape(yt.shape)  # Ridge returns (N_test,) for y of shape (N, 1)

    return peers.measure(fit, None, 0, lambda f: {"test_mse": float(np.mean((f - yt) ** 2))})


SIDES = {"falkon": run_falkon, "exact": run_exact, "sklearn": run_sklearn}


def largest_exact_n(n, n_test):
    """The largest subset whose N×N kernel, its Cholesky copy and the test kernel take ≤ half the memory."""
    from fastntk._validation import available_memory

    avail = available_memory() or 8 * 2**30
    m = int((-8 * n_test + np.sqrt(64 * n_test**2 + 4 * 16 * avail / 2)) / (2 * 16))  # 16 m² + 8 m·n_test
    return max(2, min(n, m))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--N", type=int, default=100_000, help="training points (default 1e5)")
    p.add_argument("--M", type=int, default=2000, help="Falkon centres (default 2000)")
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--diag-reg", type=float, default=1e-4, help="relative ridge (× trace(K)/N)")
    p.add_argument("--frequency", type=float, default=2.0, help="scale f of the target's directions (default 2)")
    p.add_argument("--noise", type=float, default=0.1, help="noise standard deviation σ (default 0.1)")
    p.add_argument("--tol", type=float, default=1e-8, help="Falkon's relative residual (default 1e-8)")
    p.add_argument("--maxiter", type=int, default=100, help="Falkon's iteration cap (default 100)")
    p.add_argument("--exact-N", type=int, default=None, help="subset of exact KRR (default: the largest that fits)")
    p.add_argument("--calibrate-N", type=int, default=8000, help="points of the timed exact-KRR run that predicts "
                   "the same-time subset (default 8000)")
    p.add_argument("--sklearn-N", type=int, default=1000, help="points of the scikit-learn row (pairwise callable)")
    p.add_argument("--sklearn-M", type=int, default=100, help="Nystroem components of the scikit-learn row")
    p.add_argument("--sklearn-test", type=int, default=500, help="test points of the scikit-learn rows")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per row")
    p.add_argument("--worker", nargs=2, metavar=("SIDE", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        side, spec = args.worker
        print(json.dumps(SIDES[side](json.loads(spec))))
        return 0
    exact_n = args.exact_N or largest_exact_n(args.N, args.n_test)
    common = {"n_test": args.n_test, "diag_reg": args.diag_reg, "tol": args.tol, "maxiter": args.maxiter,
              "frequency": args.frequency, "noise": args.noise}
    small = {**common, "n": args.sklearn_N, "n_test": args.sklearn_test}

    def run(side, spec):
        return peers.run_worker([sys.executable, __file__, "--worker", side, json.dumps(spec)], timeout=args.timeout)

    falkon_name = f"fastntk falkon  N={args.N} M={args.M}"
    results = {falkon_name: run("falkon", {**common, "n": args.N, "m": args.M})}
    rows = {f"exact KRR       N={exact_n}": ("exact", {**common, "n": exact_n})}
    n0 = min(args.calibrate_N, exact_n)
    cal = run("exact", {**common, "n": n0})
    if "error" in results[falkon_name] or "error" in cal:
        print("no same-time exact KRR row: " + (cal.get("error") or results[falkon_name]["error"]))
    else:
        same_n = same_time_n(results[falkon_name]["first_s"], exact_n, n0, args.n_test, cal)
        predicted = exact_seconds(same_n, n0, args.n_test, cal)
        print(f"exact KRR on {n0} points: kernels {cal['kernels_s']:.1f} s, solve {cal['solve_s']:.1f} s; "
              f"predicted {predicted:.1f} s on {same_n} points (falkon: {results[falkon_name]['first_s']:.1f} s)")
        if same_n < exact_n:  # else memory, not time, limits the subset: the row above is that row
            rows[f"exact KRR       N={same_n} (same time)"] = ("exact", {**common, "n": same_n})
    rows |= {
        f"fastntk falkon  N={args.sklearn_N} M={args.sklearn_M}": ("falkon", {**small, "m": args.sklearn_M}),
        f"sklearn Nystroem N={args.sklearn_N} M={args.sklearn_M}": ("sklearn", {**small, "m": args.sklearn_M}),
    }
    results |= {name: run(side, spec) for name, (side, spec) in rows.items()}
    names = list(results)
    base = {name: falkon_name for name in names[:-2]} | {name: names[-2] for name in names[-2:]}

    def row(name, r):
        ref = results[base[name]]
        ratio = "" if "error" in ref else (f"  ×{r['first_s'] / ref['first_s']:6.2f} time  "
                                           f"×{r['peak_rss'] / ref['peak_rss']:5.2f} RSS  "
                                           f"×{r['test_mse'] / ref['test_mse']:5.3f} MSE")
        its = f"  {r['iterations']} it" if "iterations" in r else ""
        return (f"{r['first_s']:9.1f} s  {r['peak_rss'] / 2**30:6.2f} GiB  test MSE {r['test_mse']:.5f}{ratio}"
                f"{its}")

    print(f"d={D}, n_test={args.n_test}, diag_reg={args.diag_reg} (relative), NTK of ReLU depth 3; ratios against "
          "the fastntk falkon row of the same size")
    for name in names:
        r = results[name]
        print(f"{name:<36} " + (f"failed ({r['error']})" if "error" in r else row(name, r)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
