"""Empirical (finite-width) NTK: fastntk against torch.func and neural-tangents, side by side.

Network: MLP d-512-512-10 (``--width``), ReLU, NTK parameterization (z = W_std/√fan_in · h W +
b_std · b, W_std=√2, b_std=0.1), the same parameters on every side (drawn once by fastntk's
``init_fn``, seed 0); inputs x of shape (N, d) standard normal (seed 0), x2=None.
``--kernel trace`` (default) is the trace NTK (N, N), averaged over the O outputs
(neural-tangents' ``trace_axes=(-1,)``); ``--kernel full`` is the whole (N, N, O, O) kernel.

Each side runs in a fresh subprocess on the same inputs (saved once to .npy / .npz files):

* ``fastntk``: ``empirical_ntk_fn(apply_fn)(x, None, params)`` (structured derivatives);
* ``nt structured``: neural-tangents 0.6.5 ``jax.jit(empirical_ntk_fn(apply_fn, vmap_axes=0,
  implementation=3))`` run by ``.venv-nt/bin/python`` (see ../shared/peers/README.md), float32
  with ``jax_enable_x64`` off (float64 with it on);
* ``torch.func jac``: the Jacobian-contraction recipe of PyTorch's "Neural Tangent Kernels"
  tutorial, ``vmap(jacrev(f))`` + einsum, on an ``nn.Module`` computing the same function. Its
  per-sample Jacobians take N·O·P floats (27 GB at N=1024), so it runs over blocks of ``--block``
  rows (upper-triangle block pairs only, Jacobians recomputed per block): the recipe's arithmetic,
  in memory that fits;
* ``torch.func ntvp`` (``--ntvp``): the tutorial's NTK-vector-product recipe (vjp then jvp, vmapped
  over the O basis vectors and over all row pairs of a block), over blocks of ``--ntvp-block`` rows:
  its vmap holds N1·N2·O·P floats per block.

A subprocess makes one call (neural-tangents: including jit compilation), reads its peak
resident memory (VmHWM), then times ``--repeats`` more calls and keeps the best. ``ratio`` is the
best time over fastntk's (> 1: slower than fastntk); ``rel.err`` is ‖K − K_fastntk‖_F / ‖K_fastntk‖_F
on 256 sampled rows.

Commands (repository root, on the 2-core development machine)::

    python benchmarks/compare_empirical.py                        # N=1024, trace, all sides
    python benchmarks/compare_empirical.py --N 256 1024 --ntvp
    python benchmarks/compare_empirical.py --kernel full --sides fastntk "nt structured"
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

W_STD, B_STD, N_OUT = 2.0**0.5, 0.1, 10
N_SAMPLE_ROWS = 256
SIDES = ("fastntk", "nt structured", "torch.func jac", "torch.func ntvp")


# --------------------------------------------------------------------------- the three libraries
def _fastntk_fn(params, kernel, width):
    from fastntk import stax
    from fastntk.empirical import empirical_ntk_fn

    apply_fn = stax.serial(stax.Dense(width, W_STD, B_STD), stax.Relu(), stax.Dense(width, W_STD, B_STD),
                           stax.Relu(), stax.Dense(N_OUT, W_STD, B_STD))[1]
    ntk_fn = empirical_ntk_fn(apply_fn, trace_axes=(-1,) if kernel == "trace" else ())
    return lambda x: ntk_fn(x, None, params)


def _nt_fn(params, kernel, width, dtype):
    jax, nt = peers.import_neural_tangents(x64=dtype == "float64")
    from neural_tangents import stax

    apply_fn = stax.serial(stax.Dense(width, W_STD, B_STD), stax.Relu(), stax.Dense(width, W_STD, B_STD),
                           stax.Relu(), stax.Dense(N_OUT, W_STD, B_STD))[1]
    ntk_fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,) if kernel == "trace" else (), vmap_axes=0,
                                         implementation=3))
    params = jax.tree_util.tree_map(jax.numpy.asarray, params)
    return lambda x: np.asarray(jax.block_until_ready(ntk_fn(x, None, params)))


def _torch_fn(params, kernel, recipe, block):
    import torch
    from torch.func import functional_call, jacrev, jvp, vjp, vmap

    class NtkDense(torch.nn.Module):  # z = W_std/√fan_in · h W + b_std · b, as stax.Dense(parameterization='ntk')
        def __init__(self, W, b):
            super().__init__()
            self.W, self.b = torch.nn.Parameter(torch.from_numpy(W)), torch.nn.Parameter(torch.from_numpy(b))
            self.c = W_STD / W.shape[0] ** 0.5

        def forward(self, h):
            return self.c * (h @ self.W) + B_STD * self.b

    dense = [p for p in params if len(p) == 2]
    model = torch.nn.Sequential(NtkDense(*dense[0]), torch.nn.ReLU(), NtkDense(*dense[1]), torch.nn.ReLU(),
                                NtkDense(*dense[2]))
    theta = {k: v.detach() for k, v in model.named_parameters()}

    def f_single(theta, x):
        return functional_call(model, theta, (x.unsqueeze(0),)).squeeze(0)

    def f_batch(theta, x):
        return functional_call(model, theta, (x,))

    eq = "Naf,Maf->NM" if kernel == "trace" else "Naf,Mbf->NMab"

    def jac_block(x1, x2):  # the tutorial's empirical_ntk_jacobian_contraction
        j1 = [j.flatten(2) for j in vmap(jacrev(f_single), (None, 0))(theta, x1).values()]
        j2 = j1 if x2 is x1 else [j.flatten(2) for j in vmap(jacrev(f_single), (None, 0))(theta, x2).values()]
        return torch.stack([torch.einsum(eq, a, b) for a, b in zip(j1, j2)]).sum(0)

    def ntvp_block(x1, x2):  # the tutorial's empirical_ntk_ntk_vps, batched over the rows of x1 and x2
        def get_ntk(x1, x2):
            out, vjp_fn = vjp(lambda th: f_single(th, x1), theta)

            def ntk_slice(vec):
                return jvp(lambda th: f_single(th, x2), (theta,), vjp_fn(vec))[1]

            return vmap(ntk_slice)(torch.eye(out.numel(), dtype=out.dtype))

        k = vmap(vmap(get_ntk, (None, 0)), (0, None))(x1, x2)  # (N1, N2, O, O)
        return torch.einsum("NMaa->NM", k) if kernel == "trace" else k

    one_block = jac_block if recipe == "jac" else ntvp_block

    def run(x):
        xt, n = torch.from_numpy(x), x.shape[0]
        out = torch.empty((n, n) if kernel == "trace" else (n, n, N_OUT, N_OUT), dtype=xt.dtype)
        with torch.no_grad():
            for i in range(0, n, block):
                for j in range(i, n, block):
                    xi, xj = xt[i:i + block], xt[j:j + block]
                    k = one_block(xi, xi if i == j else xj)
                    out[i:i + block, j:j + block] = k
                    out[j:j + block, i:i + block] = k.transpose(0, 1) if kernel == "trace" else k.permute(1, 0, 3, 2)
        if kernel == "trace":
            out /= N_OUT
        return out.numpy()

    return run


def worker(side, x_path, params_path, kernel, width, repeats, block, sample_path):
    """One side: first call, peak RSS, best of ``repeats``; prints a JSON line."""
    x = np.load(x_path)
    with np.load(params_path) as z:
        params = [(z[f"W{k}"], z[f"b{k}"]) if f"W{k}" in z.files else () for k in range(5)]
    if side == "fastntk":
        fn = _fastntk_fn(params, kernel, width)
    elif side == "nt structured":
        fn = _nt_fn(params, kernel, width, x.dtype.name)
    else:
        fn = _torch_fn(params, kernel, side.split()[-1], block)
    rows = np.linspace(0, x.shape[0] - 1, N_SAMPLE_ROWS).astype(int)

    def keep_first(out):
        np.save(sample_path, np.asarray(out)[rows])
        return {"nbytes": int(np.asarray(out).nbytes)}

    print(json.dumps(peers.measure(fn, x, repeats, keep_first)))


# --------------------------------------------------------------------------- driver
def run_side(side, args, x_path, params_path, workdir, repeats):
    python = str(NT_PYTHON) if side == "nt structured" else sys.executable
    sample = Path(workdir) / f"sample-{SIDES.index(side)}.npy"
    cmd = [python, __file__, "--worker", side, "--x", str(x_path), "--params", str(params_path), "--kernel",
           args.kernel, "--width", str(args.width), "--repeats", str(repeats),
           "--block", str(args.ntvp_block if side == "torch.func ntvp" else args.block),
           "--sample", str(sample)]
    res = peers.run_worker(cmd, timeout=args.timeout, mem_limit_gib=args.mem_limit_gib, prefer_error_lines=False,
                           width=160)
    if "error" in res:
        return res
    res["sample"] = np.load(sample)
    return res


def print_table(title, results):
    ref = results.get("fastntk", {"error": "not run"})
    head = f"{'side':<16} {'first s':>8} {'best s':>8} {'ratio':>8} {'cpu s':>6} {'peak RSS GiB':>12} {'rel.err':>8}"

    def row(side, r):
        ok = "error" not in ref
        ratio = f"{r['best_s'] / ref['best_s']:7.1f}x" if ok else "-"
        err = (f"{np.linalg.norm(r['sample'] - ref['sample']) / np.linalg.norm(ref['sample']):.1e}"
               if ok and side != "fastntk" else "-")
        cpu = "-" if r["cpu_s"] is None else f"{r['cpu_s']:.2f}"
        return f"{r['first_s']:8.3f} {r['best_s']:8.3f} {ratio:>8} {cpu:>6} {r['peak_rss'] / 2**30:12.2f} {err:>8}"

    peers.print_table(title, head, results, row)
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", type=int, nargs="+", default=[1024])
    ap.add_argument("--d", type=int, default=784)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--kernel", choices=["trace", "full"], default="trace")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES[:3]))
    ap.add_argument("--ntvp", action="store_true", help="add the torch.func NTK-vector-product recipe")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls after the first (best is kept)")
    ap.add_argument("--torch-repeats", type=int, default=0,
                    help="--repeats for the torch.func recipes (0: the first call only; nothing to compile)")
    ap.add_argument("--block", type=int, default=128, help="rows per block of the torch.func Jacobian recipe")
    ap.add_argument("--ntvp-block", type=int, default=8, help="rows per block of the NTK-vector-product recipe")
    ap.add_argument("--mem-limit-gib", type=float, default=16.0, help="address-space limit per subprocess")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--x", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    ap.add_argument("--sample", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.x, args.params, args.kernel, args.width, args.repeats, args.block,
                      args.sample)
    sides = list(dict.fromkeys(args.sides + (["torch.func ntvp"] if args.ntvp else [])))
    if "nt structured" in sides and not NT_PYTHON.exists():
        print(f"{NT_PYTHON} not found: neural-tangents skipped (see ../shared/peers/README.md)")
        sides.remove("nt structured")
    try:
        import torch
    except ImportError:
        torch = None
        print("torch not installed: torch.func recipes skipped (pip install torch)")
        sides = [s for s in sides if not s.startswith("torch")]

    from fastntk import stax

    print(f"# {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, numpy {np.__version__}, "
          f"torch {getattr(torch, '__version__', '-')}, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="fastntk-compare-") as workdir:
        init_fn = stax.serial(stax.Dense(args.width, W_STD, B_STD), stax.Relu(), stax.Dense(args.width, W_STD, B_STD),
                              stax.Relu(), stax.Dense(N_OUT, W_STD, B_STD))[0]
        params = init_fn(0, (1, args.d))[1]
        params_path = Path(workdir) / "params.npz"
        np.savez(params_path, **{f"{name}{k}": a.astype(args.dtype) for k, p in enumerate(params) if p
                                 for name, a in zip("Wb", p)})
        for n in args.N:
            x_path = Path(workdir) / "x.npy"
            np.save(x_path, np.random.default_rng(0).standard_normal((n, args.d)).astype(args.dtype))
            results = {side: run_side(side, args, x_path, params_path, workdir,
                                      args.torch_repeats if side.startswith("torch") else args.repeats)
                       for side in sides}
            print_table(f"MLP {args.d}-{args.width}-{args.width}-{N_OUT} ReLU 'ntk', {args.kernel} NTK, x2=None, "
                        f"{args.dtype}, N={n} (torch blocks of {args.block} / {args.ntvp_block} rows; load average "
                        f"{os.getloadavg()[0]:.2f} at end)", results)


if __name__ == "__main__":
    main()
