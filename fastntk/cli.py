"""The ``fastntk`` command line.

``fastntk fit``: kernel regression with the NTK (or NNGP) of an infinitely wide network on a
data file or a built-in dataset: standardise, build the kernels, pick the ridge, fit, and
report test accuracy/MSE beside an RBF kernel-ridge baseline, with predictions, a JSON
report and plots. Above :data:`AUTO_EXACT_MAX_N` training points (or when the exact solver's
N×N arrays would not fit in memory) ``--solver auto`` picks Falkon (Nyström kernel ridge
regression on ``--centers`` points, no N×N matrix) and says so; ``--solver features`` is ridge
regression on ``--features`` random features of the kernel. ``fastntk kernel``: the NNGP/NTK
alone, streamed block by block to .npy files with bounded memory; rerun after an interruption,
it resumes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from ._data import BUILTIN, CLIError, load_data, standardize

__all__ = ["load_data", "main"]

def _number(text):
    """float from '1.5', 'sqrt2', 'sqrt(2)'."""
    t = text.strip().lower().replace("(", "").replace(")", "")
    try:
        return math.sqrt(float(t[4:])) if t.startswith("sqrt") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1.5 or sqrt2; got {text!r}") from None




def _add_network_args(p):
    p.add_argument("--depth", type=int, default=3, help="hidden layers (default 3)")
    p.add_argument("--activation", default="relu", help="relu, erf, gelu, tanh, ... (default relu)")
    p.add_argument("--W-std", type=_number, default=math.sqrt(2), help="weight std (default sqrt2)")
    p.add_argument("--b-std", type=_number, default=0.1, help="bias std (default 0.1)")
    p.add_argument("--parameterization", choices=("ntk", "standard"), default="ntk")
    p.add_argument("--width", type=int, default=512, help="hidden width / channels (enter 'standard' only)")
    p.add_argument("--arch", choices=("fc", "cnn"), default="fc",
                   help="fc: fully-connected (default); cnn: --depth 3x3 SAME convolutions + activations, a "
                        "--readout and a Dense readout, on images of --image-shape")
    p.add_argument("--image-shape", default=None,
                   help="H,W,C (or H,W: one channel) of each row for --arch cnn; digits knows its own (8,8,1)")
    p.add_argument("--readout", choices=("gap", "flatten"), default="gap",
                   help="--arch cnn: global average pooling (default) or Flatten before the Dense readout")


#: Image shapes of the built-in datasets that hold images (rows are the pixels in C order).
IMAGE_SHAPES = {"digits": (8, 8, 1)}


def _image_shape(args, d, name):
    """(H, W, C) of --image-shape (or the dataset's own), checked against the d features of a row."""
    if args.image_shape is None:
        if name not in IMAGE_SHAPES:
            raise CLIError(f"--arch cnn needs --image-shape H,W,C for {name} (rows of {d} features)")
        return IMAGE_SHAPES[name]
    try:
        shape = tuple(int(v) for v in args.image_shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or min(shape) < 1 or math.prod(shape) != d:
        raise CLIError(f"--image-shape must be H,W,C (or H,W) of positive ints with H*W*C = {d}, the features of "
                       f"a row of {name}; got {args.image_shape!r}")
    return shape


def _network(args, d, name, arch=None):
    """(kernel_fn, inputs): the kernel_fn of the network the options describe (--arch, or ``arch``) and
    the map from rows (N, d) to its inputs ((N, d), or images (N, H, W, C) for 'cnn')."""
    from . import stax

    if (arch or args.arch) == "fc":
        net = stax.fc_network(args.depth, args.activation, args.W_std, args.b_std, args.parameterization, args.width)
        return net.kernel_fn, lambda x: x
    shape = _image_shape(args, d, name)
    conv = stax.Conv(args.width, (3, 3), padding="SAME", W_std=args.W_std, b_std=args.b_std,
                     parameterization=args.parameterization)
    readout = stax.GlobalAvgPool() if args.readout == "gap" else stax.Flatten()
    net = stax.serial(*[conv, stax.Activation(args.activation)] * args.depth, readout,
                      stax.Dense(1, args.W_std, args.b_std, parameterization=args.parameterization))
    return net.kernel_fn, lambda x: x.reshape(-1, *shape)


#: Above this N, ``fastntk kernel`` skips the top eigenvalues: each product of the iterative
#: eigensolver reads the whole stored kernel from disk.
_EIGENVALUES_MAX_N = 20000


def _top_eigenvalues(k, count=5):
    """The ``count`` largest eigenvalues of a symmetric stored kernel (a StoredKernel), descending."""
    n = k.shape[0]
    if n <= 4000:
        return np.linalg.eigvalsh(np.asarray(k.block(), dtype=np.float64))[::-1][:count]
    from scipy.sparse.linalg import eigsh

    return np.sort(eigsh(k, k=min(count, n - 1), which="LA", return_eigenvectors=False))[::-1]


def cmd_kernel(args):
    """Stream the kernels to DIR/<name>.npy block by block (solvers.store_kernels): a rerun of the same
    command resumes an interrupted one; other data or network options are refused (--restart)."""
    from .solvers import StoredKernel, store_kernels

    x, _, name = load_data(args.data)
    if not args.no_standardize:
        x = standardize(x)
    dtype = np.dtype(args.dtype)
    get = tuple(g.strip() for g in args.get.split(","))
    if args.arch != "fc":
        raise CLIError("fastntk kernel streams fully-connected kernels (--arch fc); CNN kernels: fastntk fit --arch "
                       "cnn, or kernel_fn(..., out=np.memmap(...)) from Python")
    kernel_fn, _ = _network(args, x.shape[1], name)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = x.shape[0]
    start = time.perf_counter()
    try:
        stored = store_kernels(out_dir, kernel_fn, x.astype(dtype), None, get, dtype=dtype,
                               block_size=args.block_size, overwrite=args.restart, progress=not args.quiet)
    except KeyboardInterrupt:
        raise CLIError(f"interrupted; the finished blocks are kept in {out_dir}: run the same command again to "
                       "resume") from None
    elapsed = time.perf_counter() - start
    summary = {"data": name, "N": n, "d": x.shape[1], "dtype": dtype.name, "seconds": round(elapsed, 3),
               "blocks": stored.n_blocks, "blocks_computed": stored.computed,
               "files": {g: str(f) for g, f in stored.paths.items()}}
    for g, path in stored.paths.items():
        top = _top_eigenvalues(StoredKernel(path)) if n <= _EIGENVALUES_MAX_N else None
        summary[f"{g}_top_eigenvalues"] = None if top is None else [float(v) for v in top]
    (out_dir / "kernel_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{name}: N={n}, d={x.shape[1]}, {args.activation} depth {args.depth}, {dtype.name}: "
          f"{', '.join(stored.paths)} ({n}x{n}) in {elapsed:.2f} s")
    done = stored.n_blocks - stored.computed
    if not stored.computed:
        print(f"  all {done} blocks were already done: nothing computed")
    elif done:
        print(f"  resumed: {done} of {stored.n_blocks} blocks were already done, {stored.computed} computed now")
    for g, path in stored.paths.items():
        top = summary[f"{g}_top_eigenvalues"]
        tail = (f"top eigenvalues: {', '.join(f'{v:.4g}' for v in top)}" if top is not None
                else f"top eigenvalues skipped (N > {_EIGENVALUES_MAX_N})")
        print(f"  {g}: {path}  {tail}")
    return 0


def _task(y, name, task, target):
    """'classification' or 'regression' for target y; text labels are classes."""
    text = np.asarray(y).dtype.kind in "US"
    if task == "regression" and text:
        raise CLIError(f"--task regression needs numbers in --target {target}; it holds text such as {str(y[0])!r}")
    if task != "auto":
        return task
    if name in ("digits", "breast_cancer", "wine", "iris") or text:
        return "classification"
    y = np.asarray(y)
    integral = y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(y == np.round(y)))
    return "classification" if integral and len(np.unique(y)) <= 50 else "regression"


def _targets_of(y, task, classes=None):
    """Regression targets (N, O): y itself, or one-hot rows for classification."""
    if task == "regression":
        return np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    return (np.asarray(y)[:, None] == classes[None, :]).astype(np.float64)


def _score(task, y_true, f, classes):
    """Accuracy (classification, arg-max of the outputs) or MSE and R² (regression)."""
    if task == "classification":
        return {"accuracy": float(np.mean(classes[np.argmax(f, axis=1)] == y_true))}
    y = np.asarray(y_true, dtype=np.float64).reshape(f.shape)
    mse, var = float(np.mean((f - y) ** 2)), float(np.mean((y - y.mean(0)) ** 2))
    return {"mse": mse, "r2": 1 - mse / var if var > 0 else None}  # None: test targets constant


def _ridge(k_train, k_test, y, diag_reg):
    """(test outputs, chosen diag_reg, gcv curve or None) of kernel ridge regression."""
    from . import predict
    from .sklearn import GCV_GRID

    sel = None
    if diag_reg == "gcv":
        sel = predict.select_diag_reg(k_train, y, GCV_GRID)
        diag_reg = sel.diag_reg
    f = predict.kernel_ridge(k_train, y, diag_reg, k_test_train=k_test).fx_test
    return f, float(diag_reg), sel


def _rbf(x1, x2, gamma):
    sq = (x1 * x1).sum(1)[:, None] + (x2 * x2).sum(1)[None, :] - 2 * x1 @ x2.T
    return np.exp(-gamma * np.maximum(sq, 0.0))


def _spectrum_plot(out_dir, spectrum, title):
    """spectrum.png: the eigenvalues (descending) on log–log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(np.arange(1, len(spectrum) + 1), np.maximum(spectrum, np.finfo(float).tiny))
    ax.set(xlabel="index", ylabel="eigenvalue", title=title)
    fig.tight_layout()
    fig.savefig(out_dir / "spectrum.png", dpi=120)
    plt.close(fig)


def _plots(out_dir, spectrum, times, loss_train, loss_test, limit, kernel):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _spectrum_plot(out_dir, spectrum, f"{kernel.upper()} spectrum (train)")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(times, loss_train, label="train")
    ax.loglog(times, loss_test, label="test")
    ax.axhline(limit, color="gray", ls="--", label="test, t = ∞")
    ax.set(xlabel="training time t (units of learning rate)", ylabel="MSE loss 1/(2n)·Σ(f−y)²",
           title="Gradient flow of the infinite network")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=120)
    plt.close(fig)


def _split(x, y, task, test_size, seed):
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise CLIError(f"--test-size must be in (0, 1); got {test_size}")
    n_test = int(np.ceil(test_size * len(x)))
    if n_test < 1 or len(x) - n_test < 2:
        raise CLIError(f"--test-size {test_size} leaves {len(x) - n_test} training points of {len(x)}; need 2 or more")
    stratify = y if task == "classification" and np.min(np.unique(y, return_counts=True)[1]) >= 2 else None
    return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=stratify)


#: Largest training set ``--solver auto`` fits exactly: the exact path holds about
#: ``EXACT_ARRAYS`` N×N float64 arrays (NNGP, NTK, the RBF baseline, the factorizations), 19 GB
#: at N = 20,000; above, or when they would not fit in the available memory, Falkon.
AUTO_EXACT_MAX_N = 20_000
EXACT_ARRAYS = 6


def _choose_solver(solver, n):
    """(solver, why) for --solver and N training points; ``why`` says what 'auto' saw."""
    if solver != "auto":
        return solver, f"--solver {solver}"
    from ._validation import available_memory

    need, avail = EXACT_ARRAYS * 8 * n**2, available_memory()
    if n > AUTO_EXACT_MAX_N:
        return "falkon", f"auto: N={n} training points > {AUTO_EXACT_MAX_N}"
    if avail is not None and need > avail:
        return "falkon", (f"auto: the exact solver's {EXACT_ARRAYS} N×N float64 arrays need {need / 2**30:.3g} GiB, "
                          f"{avail / 2**30:.3g} GiB available")
    return "exact", f"auto: N={n} training points ≤ {AUTO_EXACT_MAX_N}"


def cmd_fit(args):
    x, y, name = load_data(args.data, args.target)
    if y is None:
        raise CLIError(f"--target: {args.data} needs a target column (--target NAME or index)")
    task = _task(y, name, args.task, args.target)
    xtr, xte, ytr, yte = _split(x, y, task, args.test_size, args.seed)
    xtr, xte = standardize(xtr), standardize(xte, fit=xtr)
    if not np.isfinite(xte).all():
        raise CLIError(f"--data: test rows of {args.data} lie too far outside the training range to standardise")
    if not 0 <= args.validation < 1:
        raise CLIError(f"--validation must be in [0, 1); got {args.validation}")
    if args.centers < 1:
        raise CLIError(f"--centers must be >= 1; got {args.centers}")
    if args.features < 2:
        raise CLIError(f"--features must be >= 2; got {args.features}")
    args.data_name = name
    solver, why = _choose_solver(args.solver, len(xtr))
    if args.arch == "cnn" and solver != "exact":
        raise CLIError(f"--arch cnn fits with the exact solver (--solver exact); {why} chose {solver}")
    if solver in ("cg", "features") and args.t is not None:
        raise CLIError("--t (a finite training time) needs --solver exact or falkon")
    print(f"solver: {solver} ({why})")
    classes = np.unique(ytr) if task == "classification" else None
    y_train = _targets_of(ytr, task, classes)
    fit = _fit(args, xtr, xte, y_train) if solver == "exact" else _fit_large(args, xtr, xte, y_train, solver)
    other = "nngp" if args.kernel == "ntk" else "ntk"
    report = {
        "data": name, "task": task, "target": args.target, "n_train": len(xtr), "n_test": len(xte), "d": x.shape[1],
        "network": {"arch": args.arch, "depth": args.depth, "activation": args.activation, "W_std": args.W_std,
                    "b_std": args.b_std, "parameterization": args.parameterization, "width": args.width,
                    **({"image_shape": list(_image_shape(args, x.shape[1], name)), "readout": args.readout}
                       if args.arch == "cnn" else {})},
        "kernel": args.kernel, "t": args.t, "diag_reg": fit["reg"], "solver": {**fit["solver"], "choice": why},
        "kernel_seconds": fit["kernel_seconds"],
        "test": _score(task, yte, fit["f_t"], classes),
        "test_t_infinity": _score(task, yte, fit["f_inf"], classes),
    }
    if solver == "exact":
        report[f"test_{other}"] = _score(task, yte, fit["f_other"], classes)
        report["test_rbf_kernel_ridge"] = _score(task, yte, fit["f_rbf"], classes)
        if fit["f_fc"] is not None:
            report[f"test_fc_{args.kernel}"] = _score(task, yte, fit["f_fc"], classes)
        report["spectrum"] = fit["spectrum"]
    if classes is not None:
        report["classes"] = [c.item() for c in classes]
    if fit["sel"] is not None:
        report["gcv"] = {"diag_regs": fit["sel"].diag_regs.tolist(), "gcv": fit["sel"].gcv.tolist(),
                         "n_points": fit["gcv_points"]}
    text = _json_text(report)  # before anything is written: no report with NaN in it
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred = classes[np.argmax(fit["f_t"], axis=1)] if task == "classification" else fit["f_t"][:, 0]
    _write_predictions(out_dir / "predictions.csv", yte, pred)
    (out_dir / "report.json").write_text(text)
    if solver == "exact":
        yte_m = _targets_of(yte, task, classes)
        loss = lambda f, yy: 0.5 * np.mean((f - yy) ** 2, axis=(-2, -1))  # noqa: E731
        _plots(out_dir, fit["eigenvalues"], fit["times"], loss(fit["ftr_t"], fit["y_train"]),
               loss(fit["fte_t"], yte_m), loss(fit["f_inf"], yte_m), args.kernel)
    elif solver == "features":
        _spectrum_plot(out_dir, fit["eigenvalues"], f"{args.kernel.upper()} of {fit['solver']['features']} random "
                                                    "features: spectrum of Φ Φᵀ (train)")
    else:
        _convergence_plot(out_dir, fit["solver"], args.kernel)
    _print_fit(args, report, name, task, other, out_dir)
    return 0


def _fit(args, xtr, xte, y_train):
    """Test outputs of the NTK/NNGP at t and t = ∞, of the other kernel and of RBF kernel ridge."""
    from . import predict

    kernel_fn, inputs = _network(args, xtr.shape[1], args.data_name)
    start = time.perf_counter()
    k_dd = kernel_fn(inputs(xtr), None, ("nngp", "ntk"), progress=not args.quiet)
    k_td = kernel_fn(inputs(xte), inputs(xtr), ("nngp", "ntk"), progress=not args.quiet)
    kernel_seconds = round(time.perf_counter() - start, 3)
    other = "nngp" if args.kernel == "ntk" else "ntk"
    k, k_test = getattr(k_dd, args.kernel), getattr(k_td, args.kernel)
    f_inf, reg, sel = _ridge(k, k_test, y_train, args.diag_reg)
    f_other = _ridge(getattr(k_dd, other), getattr(k_td, other), y_train, args.diag_reg)[0]
    f_fc = None
    if args.arch == "cnn":  # the fully-connected network's kernel beside it
        fc_fn = _network(args, xtr.shape[1], args.data_name, arch="fc")[0]
        f_fc = _ridge(fc_fn(xtr, None, args.kernel), fc_fn(xte, xtr, args.kernel), y_train, args.diag_reg)[0]
    gamma = 1.0 / xtr.shape[1]
    f_rbf = _ridge(_rbf(xtr, xtr, gamma), _rbf(xte, xtr, gamma), y_train, args.diag_reg)[0]
    predict_fn = predict.gradient_descent_mse(k, y_train, args.learning_rate, reg)
    s = predict.kernel_spectrum(k, reg)
    times = np.logspace(-1, np.log10(max(10.0, 100 * y_train.size / max(s.lambda_min, 1e-300))), 60)
    times = times[times < 1e15]
    ftr_t, fte_t = predict_fn(times, 0.0, 0.0, k_test)
    f_t = f_inf if args.t is None else predict_fn(args.t, 0.0, 0.0, k_test)[1]
    spectrum = {"lambda_max": s.lambda_max, "lambda_min": s.lambda_min, "effective_rank": s.effective_rank,
                "condition_number": s.condition_number if np.isfinite(s.condition_number) else None}  # None: λ_min 0
    return {"f_t": f_t, "f_inf": f_inf, "f_other": f_other, "f_rbf": f_rbf, "f_fc": f_fc, "reg": reg, "sel": sel,
            "gcv_points": len(xtr), "kernel_seconds": kernel_seconds, "spectrum": spectrum,
            "eigenvalues": s.eigenvalues, "times": times, "ftr_t": ftr_t, "fte_t": fte_t, "y_train": y_train,
            "solver": {"name": "exact"}}


#: Training points GCV picks the ridge on for the solvers without an eigendecomposition (cg, falkon).
GCV_SUBSET = 2000


def _fit_large(args, xtr, xte, y_train, solver):
    """Test outputs of kernel ridge by 'cg' or 'falkon' on kernel operators, or by ridge regression on
    ``--features`` random features ('features', K ≈ Φ Φᵀ): no N×N matrix.

    ``--diag-reg gcv`` picks the ridge by GCV on a random subset of GCV_SUBSET training points
    (one GCV_SUBSET² eigendecomposition). The NNGP/NTK and RBF baselines of the exact path, and
    its spectrum and loss curves, are skipped.
    """
    from . import features, predict, solvers
    from .sklearn import GCV_GRID

    kernel_fn, _ = _network(args, xtr.shape[1], args.data_name)
    start = time.perf_counter()
    op = solvers.KernelOperator(kernel_fn, xtr, get=args.kernel)
    op_test = solvers.KernelOperator(kernel_fn, xte, xtr, get=args.kernel)
    reg, sel, n_gcv = args.diag_reg, None, None
    if reg == "gcv":
        pick = np.sort(np.random.default_rng(args.seed).permutation(len(xtr))[:GCV_SUBSET])
        n_gcv = len(pick)
        sel = predict.select_diag_reg(op.block(pick, pick), y_train[pick], GCV_GRID)
        reg = float(sel.diag_reg)
    kw = {"k_test_train": op_test, "maxiter": args.maxiter, "seed": args.seed, "progress": not args.quiet}
    eigenvalues = None
    if solver == "features":
        fmap = features.random_features(kernel_fn, xtr.shape[1], args.kernel, args.features, seed=args.seed)
        phi = fmap.transform(xtr)
        fx_test = fmap.transform(xte) @ solvers.feature_ridge(phi, y_train, reg)
        eigenvalues = np.linalg.eigvalsh(phi.T @ phi)[::-1]  # the nonzero spectrum of Φ Φᵀ, from m×m
        info = {"name": "features", "features": fmap.n_out, "method": "random_features"}
    elif solver == "falkon":
        res = predict.kernel_ridge(op, y_train, reg, solver="falkon", n_centers=args.centers, sampling=args.sampling,
                                   validation=args.validation or None, **kw)
        sol = res.solution
        info = {"name": "falkon", "centers": len(res.centers), "sampling": args.sampling,
                "validation_rows": 0 if sol.validation_rows is None else len(sol.validation_rows),
                "iterations": sol.iterations, "best_iteration": sol.best_iteration, "converged": bool(sol.converged),
                "residuals": sol.residual_history.max(axis=1).tolist(),
                "validation_mse": None if sol.validation_history is None else sol.validation_history.tolist()}
        fx_test = res.fx_test
    else:
        res = predict.kernel_ridge(op, y_train, reg, solver="cg", preconditioner="nystrom" if reg else None,
                                   rank=min(200, len(xtr)), **kw)
        sol = res.solution
        info = {"name": "cg", "iterations": sol.iterations, "best_iteration": sol.best_iteration,
                "converged": bool(sol.converged), "residuals": sol.history.max(axis=1).tolist()}
        fx_test = res.fx_test
    f_inf, f_t = fx_test, fx_test
    if args.t is not None:  # falkon: gradient flow with the Nyström kernel of the same number of centres
        flow = predict.gradient_descent_mse_nystrom(op, y_train, args.centers, args.learning_rate, reg,
                                                    sampling=args.sampling, seed=args.seed, progress=not args.quiet)
        f_t = flow(args.t, None, 0.0, op_test)
        info["dynamics"] = {"method": "gradient flow with the Nyström kernel", "centers": len(flow.centers)}
    seconds = round(time.perf_counter() - start, 3)
    return {"f_t": f_t, "f_inf": f_inf, "reg": reg, "sel": sel, "gcv_points": n_gcv, "kernel_seconds": None,
            "eigenvalues": eigenvalues, "solver": {**info, "seconds": seconds}}  # kernel blocks inside the solve


def _convergence_plot(out_dir, info, kernel):
    """convergence.png: relative residual (and validation MSE) per iteration, where there is no spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    its = np.arange(len(info["residuals"]))
    ax.semilogy(its, np.maximum(info["residuals"], np.finfo(float).tiny), label="relative residual")
    ax.set(xlabel="iteration", ylabel="relative residual", title=f"{info['name']} on the {kernel.upper()} (train)")
    if info.get("validation_mse") is not None:
        other = ax.twinx()
        other.semilogy(its, info["validation_mse"], color="C1", label="validation MSE")
        other.axvline(info["best_iteration"], color="gray", ls="--")
        other.set(ylabel="validation MSE")
        other.legend(loc="upper right")
    ax.legend(loc="upper left" if info.get("validation_mse") is None else "lower left")
    fig.tight_layout()
    fig.savefig(out_dir / "convergence.png", dpi=120)
    plt.close(fig)


def _json_text(report):
    """report as JSON, or CLIError naming the entries that are NaN or inf (not valid JSON)."""
    try:
        return json.dumps(report, indent=2, allow_nan=False)
    except ValueError:
        bad = ", ".join(_non_finite(report))
        raise CLIError(f"the fit gave non-finite {bad}; nothing written (check the data and --diag-reg)") from None


def _non_finite(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _non_finite(v, f"{key}.{k}" if key else k)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _non_finite(v, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        yield f"{key} ({value})"


def _write_predictions(path, y_true, y_pred):
    """y_true,y_pred rows: class labels as they are (text or numbers), floats exactly (repr)."""
    text = lambda v: repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["y_true", "y_pred"])
        out.writerows(zip(map(text, y_true), map(text, y_pred)))


def _print_fit(args, report, name, task, other, out_dir):
    metric = "accuracy" if task == "classification" else "mse"
    info = report["solver"]
    arch = "" if args.arch == "fc" else f" CNN ({args.readout} readout)"
    print(f"{name}: {task}, {report['n_train']} train / {report['n_test']} test, d={report['d']}; "
          f"{args.activation}{arch} depth {args.depth}, diag_reg={report['diag_reg']:.3g}, solver {info['name']}")
    if info["name"] == "features":
        print(f"  {info['features']} random features, {info['seconds']:.1f} s")
    elif info["name"] != "exact":
        extra = f"{info['centers']} centres, " if info["name"] == "falkon" else ""
        print(f"  {extra}{info['iterations']} iterations (best {info['best_iteration']}), relative residual "
              f"{info['residuals'][info['best_iteration']]:.2e}, {info['seconds']:.1f} s")
    rows = [(f"{args.kernel.upper()} (t={args.t})", "test"), (f"{other.upper()}", f"test_{other}"),
            ("RBF kernel ridge", "test_rbf_kernel_ridge")]
    if args.arch == "cnn":
        rows.insert(2, (f"fully-connected {args.kernel.upper()}", f"test_fc_{args.kernel}"))
    for label, key in rows if info["name"] == "exact" else rows[:1]:
        print(f"  test {metric:8s} {report[key][metric]:.4f}  {label}")
    plots = {"exact": "spectrum.png, loss.png", "features": "spectrum.png"}.get(info["name"], "convergence.png")
    print(f"  wrote {out_dir}/report.json, predictions.csv, {plots}")


def make_parser():
    parser = argparse.ArgumentParser(prog="fastntk", description="Neural Tangent Kernels, fast.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("kernel", help="NNGP/NTK of a fully-connected network, written to .npy")
    p.add_argument("--data", default="digits", help=f"file (.npy/.npz/.csv/.parquet) or one of {', '.join(BUILTIN)}")
    _add_network_args(p)
    p.add_argument("--get", default="nngp,ntk", help="nngp, ntk or both (default nngp,ntk)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--no-standardize", action="store_true", help="use features as given")
    p.add_argument("--out", default="fastntk-out",
                   help="output folder (default ./fastntk-out): <name>.npy per kernel and kernel_manifest.json, the "
                        "record of finished blocks; the same command again resumes an interrupted run")
    p.add_argument("--block-size", type=int, default=None,
                   help="side of the square blocks written at a time (default: about 32 MiB per kernel)")
    p.add_argument("--restart", action="store_true",
                   help="discard the kernels in --out and start over (needed when the data or network changed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_kernel)

    p = sub.add_parser("fit", help="kernel regression with the NTK/NNGP of an infinite network")
    p.add_argument("--data", default="digits", help=f"file (.npy/.npz/.csv/.parquet) or one of {', '.join(BUILTIN)}")
    p.add_argument("--target", help="target column (name or index; npz: array name)")
    p.add_argument("--task", choices=("auto", "classification", "regression"), default="auto")
    p.add_argument("--test-size", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="train/test split seed")
    _add_network_args(p)
    p.add_argument("--kernel", choices=("ntk", "nngp"), default="ntk")
    p.add_argument("--t", type=_number, default=None, help="training time (default: infinity)")
    p.add_argument("--learning-rate", type=_number, default=1.0)
    p.add_argument("--diag-reg", type=_diag_reg, default="gcv", help="'gcv' (default) or a value >= 0")
    p.add_argument("--solver", choices=("auto", "exact", "cg", "falkon", "features"), default="auto",
                   help=f"auto (default): exact up to {AUTO_EXACT_MAX_N} training points and while its "
                        f"{EXACT_ARRAYS} N×N float64 arrays fit in memory, else falkon; cg, falkon and features "
                        "(ridge on random features of the kernel) form no N×N")
    p.add_argument("--centers", type=int, default=2000, help="Nyström centres M of --solver falkon (default 2000)")
    p.add_argument("--features", type=int, default=4096,
                   help="random features of --solver features (default 4096): ridge regression on them, O(N·M²)")
    p.add_argument("--sampling", choices=("uniform", "leverage"), default="uniform",
                   help="how falkon draws its centres (default uniform)")
    p.add_argument("--validation", type=float, default=0.1,
                   help="fraction of the training rows falkon holds out for early stopping (default 0.1; 0: none)")
    p.add_argument("--maxiter", type=int, default=None, help="iteration cap of cg/falkon (default 10·N / 100)")
    p.add_argument("--out", default="fastntk-fit", help="output folder (default ./fastntk-fit)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_fit)
    return parser


def _diag_reg(text):
    if text == "gcv":
        return text
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected 'gcv' or a number >= 0; got {text!r}")
    return value


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ValueError, TypeError, MemoryError, OSError) as e:
        print(f"fastntk {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
