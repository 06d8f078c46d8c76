"""NTK random features side by side with the authors' NTKRF (Zandieh et al. 2021), in one process.

Data (fixed seed 0): N points in d dimensions on the unit sphere; the bias-free ReLU NTK with
σ_w² = 2 of depth L: in fastntk ``stax.fc_network(L, 'relu', W_std=√2, b_std=None)``; the authors'
target kernel is that kernel times a constant c (their first layer's covariance is x·y, fastntk's
x·y/d, neural-tangents' convention), here c = (L + 1)/K(x, x) on the unit sphere, and every
error of theirs is measured against c·K.

For each depth L and feature budget m, both sides map the same points with m output features,
half of them NNGP features (the authors: m₁ = m₀ = m/2 arc-cosine features, m_s = m/2 sketch
coordinates of ``NtkFeatureMapOps(L, d, m1, m0, ms, sketch='srht')``; fastntk:
``random_features(kernel_fn, d, 'ntk', m)``, m₁ = m/2, the sketch the rest), in float32, 3 seeds:

* relative Frobenius error ‖Φ Φᵀ − K‖_F/‖K‖_F (mean over the seeds),
* relative spectral error ‖Φ Φᵀ − K‖₂/‖K‖₂ (mean; the largest |eigenvalue| of the difference by
  Lanczos, ``scipy.sparse.linalg.eigsh``, on products only),
* build time (drawing the map and transforming the N points; best over the seeds; each build timed
  after a rest of ``peers.PAUSE`` seconds, so that neither side is timed beside the other's idle threads),
* the same for the sketches (``--degree`` q = 8): fastntk's ``method='sketch'`` (NTKSketch with
  PolySketch trees of TensorSRHTs) beside the authors' ``TensorSketch`` + ``OblvFeat`` with
  ``get_poly_approx_ntk(L, q)`` (float64, as their ``run_uci_regression.py``; it needs quadprog),
* ridge test MSE on a fixed teacher target (y = sin(3 x·w) + noise, 3/4 of the points to train),
  the ridge λ = 1e-2·trace(Φ Φᵀ)/N for both (``solvers.feature_ridge``), against exact kernel
  ridge's with the same relative λ.

The authors' code is imported from a checkout of https://github.com/insuhan/ntk-sketch-rf
(commit 33fad4c) given by ``--authors DIR``; it needs ``pip install torch scipy quadprog`` (any current CPU
torch; pandas, which the module imports but NTKRF does not use, is replaced by an empty module when
missing). Without ``--authors`` only fastntk's rows are printed.

Commands (from the repository root, fastntk installed)::

    python benchmarks/compare_features.py --authors ../ntk-sketch-rf
    python benchmarks/compare_features.py --N 4000 --depth 1 3 --m 512 1024 2048 4096 8192 --authors DIR
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

sys.path.insert(0, str(Path(__file__).resolve().parent))  # import peers, as a script or under asv
import peers

from fastntk import solvers, stax
from fastntk.features import random_features

SEEDS = (0, 1, 2)
RIDGE = 1e-2


def problem(n, d, seed=0):
    """(x (n, d) on the unit sphere, y (n,) = sin(3 x·w) + 0.1·noise) for a fixed seed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.standard_normal(d)  # x·w ~ N(0, |w|²/d ≈ 1) on the sphere
    y = np.sin(3 * x @ w) + 0.1 * rng.standard_normal(n)
    return x, y


def spectral_error(phi, k):
    """‖Φ Φᵀ − K‖₂/‖K‖₂ by Lanczos on the products (no N×N difference is formed)."""
    phi = phi.astype(np.float64)
    diff = LinearOperator(k.shape, matvec=lambda v: phi @ (phi.T @ v) - k @ v, dtype=np.float64)
    top = abs(eigsh(diff, k=1, which="LM", return_eigenvectors=False, tol=1e-6)[0])
    return top / abs(eigsh(k, k=1, which="LM", return_eigenvectors=False, tol=1e-6)[0])


def ridge_mse(phi, y, n_train):
    w = solvers.feature_ridge(phi[:n_train], y[:n_train], RIDGE)
    return float(np.mean((phi[n_train:] @ w - y[n_train:]) ** 2))


def fastntk_side(kernel_fn, x, m, seed, **method):
    """fastntk's features of x (float32), and the seconds to draw the map and transform x."""
    return peers.rested(lambda: random_features(kernel_fn, x.shape[1], "ntk", m, seed=seed, dtype=np.float32,
                                         **method).transform(x.astype(np.float32)))


def authors_sketch(ntk_sketch, depth, x, m, seed, degree):
    """The authors' NTKSketch as their run_uci_regression.py calls it (float64 tensors; m − 1 features)."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)

    def build():
        ts = ntk_sketch.TensorSketch(d=x.shape[1], m=m, q=degree, dev="cpu")
        coeff = torch.from_numpy(ntk_sketch.get_poly_approx_ntk(depth, degree)).type(torch.DoubleTensor)
        return ntk_sketch.OblvFeat(ts, torch.from_numpy(x).type(torch.DoubleTensor), coeff).T

    z, seconds = peers.rested(build)
    return z.numpy(), seconds


def authors_side(ntkrf_cls, depth, x, m, seed):
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    half = m // 2

    def build():
        ops = ntkrf_cls(depth, x.shape[1], m1=half, m0=half, ms=m - half, sketch="srht")
        return ops(torch.from_numpy(x.astype(np.float32)))[1]

    z, seconds = peers.rested(build)
    return z.numpy(), seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--N", type=int, default=4000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--depth", type=int, nargs="+", default=[1, 3])
    p.add_argument("--m", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    p.add_argument("--authors", default=None, help="a checkout of insuhan/ntk-sketch-rf (commit 33fad4c)")
    p.add_argument("--degree", type=int, default=8, help="the sketches' polynomial degree (both sides; default 8)")
    args = p.parse_args(argv)
    ntkrf_cls = None
    if args.authors:
        sys.path.insert(0, args.authors)
        # ntk_random_features imports pandas and never uses it in NtkFeatureMapOps
        sys.modules.setdefault("pandas", types.ModuleType("pandas"))
        import ntk_sketch
        from ntk_random_features import NtkFeatureMapOps as ntkrf_cls
    x, y = problem(args.N, args.d)
    n_train = 3 * args.N // 4
    print(f"N={args.N}, d={args.d} on the unit sphere, bias-free ReLU NTK (W_std=√2), float32 features, "
          f"seeds {SEEDS}; errors relative to the exact kernel (the authors': to c·K); time = draw + transform")
    print(f"{'L':>2} {'m':>5}  {'side':15s} {'Frobenius':>9} {'spectral':>9} {'build s':>8} {'ridge MSE':>10}"
          f" {'time ratio':>10}")
    for depth in args.depth:
        kernel_fn = stax.fc_network(depth, "relu", np.sqrt(2), None)[2]
        k = kernel_fn(x, None, "ntk")
        k_train = k[:n_train, :n_train]
        lam = RIDGE * np.trace(k_train) / n_train
        alpha = np.linalg.solve(k_train + lam * np.eye(n_train), y[:n_train])
        exact_mse = float(np.mean((k[n_train:, :n_train] @ alpha - y[n_train:]) ** 2))
        print(f"{depth:>2} {'':>5}  {'exact':15s} {'':>9} {'':>9} {'':>8} {exact_mse:10.4f}")
        c = (depth + 1) / float(np.mean(np.diag(k)))
        sides = [("fastntk", lambda m, s: fastntk_side(kernel_fn, x, m, s), k)]
        if ntkrf_cls is not None:
            sides.append(("authors", lambda m, s: authors_side(ntkrf_cls, depth, x, m, s), c * k))
        sides.append(("fastntk sketch",
                      lambda m, s: fastntk_side(kernel_fn, x, m, s, method="sketch", degree=args.degree), k))
        if ntkrf_cls is not None:
            sides.append(("authors sketch", lambda m, s: authors_sketch(ntk_sketch, depth, x, m, s, args.degree),
                          c * k))
        for m in args.m:
            best = {}
            for name, run, target in sides:
                fro, spec, times, mse = [], [], [], []
                for s in SEEDS:
                    phi, seconds = run(m, s)
                    gram = phi.astype(np.float64) @ phi.T.astype(np.float64)
                    fro.append(np.linalg.norm(gram - target) / np.linalg.norm(target))
                    spec.append(spectral_error(phi, target))
                    times.append(seconds)
                    mse.append(ridge_mse(phi.astype(np.float64), y, n_train))
                best[name] = min(times)
                ratio = best[name] / best[name.replace("authors", "fastntk")]
                print(f"{depth:>2} {m:>5}  {name:15s} {np.mean(fro):9.4f} {np.mean(spec):9.4f} {min(times):8.3f} "
                      f"{np.mean(mse):10.4f} {ratio:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
