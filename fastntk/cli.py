"""The ``fastntk`` command line.

``fastntk fit``: kernel regression with the NTK (or NNGP) of an infinitely wide network on a
data file or a built-in dataset: standardise, build the kernels, pick the ridge, fit, and
report test accuracy/MSE beside an RBF kernel-ridge baseline, with predictions, a JSON
report and plots. ``fastntk kernel``: the NNGP/NTK alone, written to .npy.
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

__all__ = ["load_data", "main"]

BUILTIN = ("digits", "breast_cancer", "wine", "iris", "diabetes")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _number(text):
    """float from '1.5', 'sqrt2', 'sqrt(2)'."""
    t = text.strip().lower().replace("(", "").replace(")", "")
    try:
        return math.sqrt(float(t[4:])) if t.startswith("sqrt") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1.5 or sqrt2; got {text!r}") from None


_MISSING = frozenset({"", "nan", "na", "n/a", "null"})  # cells read as missing, compared lower-case


def load_data(source, target=None):
    """Features (and target if any) from a built-in dataset name or a .npy/.npz/.csv/.parquet file.

    Returns ``(x, y, name)``: x float64 (N, d), all finite; y of shape (N,), float64 or (text
    class labels) str, or None. For files, ``target`` names the target column (CSV/parquet
    header name or integer index from 0; npz: array name), else there is none. Raises CLIError
    with a one-line message naming the file and, for a bad cell, its row and column.
    """
    if source in BUILTIN:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{source}")()
        return bunch.data.astype(np.float64), bunch.target, source
    path = Path(source)
    if not path.is_file():
        raise CLIError(f"--data: no file {source!r} and no built-in dataset of that name ({', '.join(BUILTIN)})")
    readers = {".npy": _load_npy, ".npz": _load_npz, ".csv": _load_csv, ".parquet": _load_parquet}
    suffix = path.suffix.lower()
    if suffix not in readers:
        raise CLIError(f"--data: unsupported file type {suffix!r}; use .npy, .npz, .csv or .parquet")
    try:
        x, y = readers[suffix](path, target)
    except (OSError, ValueError, csv.Error) as e:
        if "allow_pickle" in str(e):
            raise CLIError(f"--data: {path} holds an object array (Python objects), which fastntk does not "
                           f"unpickle; save numbers, e.g. np.save(path, x.astype(np.float64))") from None
        raise CLIError(f"--data: cannot read {path}: {' '.join(str(e).split())}") from None
    if x.shape[1] == 0:
        besides = f" besides --target {target}" if target is not None else ""
        raise CLIError(f"--data: {path} has no feature columns{besides}")
    return x, y, path.stem


def _load_npy(path, target):
    table = np.load(path, allow_pickle=False)
    _check_array(table, str(path))
    col = None if target is None else _column_index(target, None, table.shape[1], path)
    _check_finite(table, str(path), col, target)
    if col is None:
        return table.astype(np.float64), None
    return np.delete(table, col, axis=1).astype(np.float64), table[:, col].astype(np.float64)


def _load_npz(path, target):
    with np.load(path, allow_pickle=False) as z:
        if target is not None and target not in z.files:
            raise CLIError(f"--target: {path} has no array {target!r}; it has {z.files}")
        rest = [k for k in z.files if k != target]
        key = next((k for k in ("x", "X", "data") if k in rest), rest[0] if len(rest) == 1 else None)
        if key is None:
            raise CLIError(f"--data: {path} has no feature array named 'x', 'X' or 'data' (nor a single "
                           f"array besides --target); it has {z.files}")
        x, y = z[key], (None if target is None else z[target])
    where = f"{path}[{key!r}]"
    _check_array(x, where)
    _check_finite(x, where)
    return x.astype(np.float64), (None if y is None else _target_array(y, f"{path}[{target!r}]", target, len(x)))


def _check_array(a, where):
    """An (N, d) numeric table with N, d >= 1, or CLIError."""
    if a.dtype.kind not in "fiub":
        raise CLIError(f"--data: {where} holds {a.dtype} values; expected numbers (float or int)")
    if a.ndim != 2 or a.shape[0] == 0:
        hint = {1: "; for one feature save x.reshape(-1, 1), for one point x.reshape(1, -1)",
                3: "; flatten each point first, x.reshape(len(x), -1)"}.get(a.ndim, "")
        raise CLIError(f"--data: expected a non-empty 2-D array (N, d); {where} has shape {a.shape}{hint}")


def _check_finite(a, where, col=None, target=None):
    """CLIError at the first NaN/inf of ``a``, blaming --target if it lies in column ``col``."""
    with np.errstate(over="ignore", invalid="ignore"):
        if a.dtype.kind in "iub" or np.isfinite(a.sum()):
            return
    bad = np.argwhere(~np.isfinite(a))
    if bad.size == 0:  # the sum overflowed, the values are finite
        return
    i, j = bad[0]
    who = f"--target {target}" if j == col else "--data"
    raise CLIError(f"{who}: {where} has {a[i, j]} at [{i}, {j}] (0-based index); every value must be a finite number")


def _target_array(y, where, target, n):
    """An npz target as (N,) float64 or str, or CLIError."""
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or len(y) != n:
        raise CLIError(f"--target {target}: {where} has shape {y.shape}; expected ({n},), one value per row of x")
    if y.dtype.kind in "US":
        y = y.astype(str)
        missing = [i for i, v in enumerate(y) if v.strip().lower() in _MISSING]
        if missing:
            i = missing[0]
            raise CLIError(f"--target {target}: {where}[{i}] (0-based index) is missing ({str(y[i])!r})")
        return y
    if y.dtype.kind not in "fiub":
        raise CLIError(f"--target {target}: {where} holds {y.dtype} values; expected numbers or text labels")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise CLIError(f"--target {target}: {where}[{bad[0]}] (0-based index) is {y[bad[0]]}; expected a finite number")
    return y.astype(np.float64)


def _column_index(target, header, n_columns, path):
    """Index of the --target column: a header name, or an integer index from 0 (negative from the end)."""
    if header is not None and target in header:
        if header.count(target) > 1:
            raise CLIError(f"--target: {path} has {header.count(target)} columns named {target!r}; give an index")
        return header.index(target)
    text = str(target).strip()
    if text.lstrip("-").isdigit() and -n_columns <= int(text) < n_columns:
        return int(text) % n_columns
    names = ", ".join(map(repr, header)) if header is not None else "no header"
    raise CLIError(f"--target: no column {target!r} in {path}; it has {n_columns} columns ({names}); "
                   f"an index is 0..{n_columns - 1} (or -{n_columns}..-1)")


class _Grid:
    """Cells of a text table (stripped strings), with the row number a spreadsheet shows for each."""

    def __init__(self, path, header, rows, numbers, note):
        self.path, self.header, self.rows, self.numbers, self.note = path, header, rows, numbers, note

    def at(self, i, j):
        column = repr(self.header[j]) if self.header is not None else f"{j + 1}"
        return f"{self.path} row {self.numbers[i]}, column {column}"

    def bad_cell(self, who, i, j):
        cell = self.rows[i][j]
        if cell.lower() in _MISSING:
            what = "missing value (empty cell)" if cell == "" else f"missing value ({cell!r})"
        else:
            what = f"{cell!r} is not finite" if _is_number(cell) else f"{cell!r} is not a number"
        return CLIError(f"{who}: {self.at(i, j)}: {what} {self.note}")

    def split(self, col, target):
        """(x, y): float64 features, and the target column as float64 or (text labels) str."""
        features = [j for j in range(len(self.rows[0])) if j != col]
        x = np.empty((len(self.rows), len(features)))
        for i, cells in enumerate(self.rows):
            for k, j in enumerate(features):
                x[i, k] = v = _finite_or_nan(cells[j])
                if v != v:
                    raise self.bad_cell("--data", i, j)
        if col is None:
            return x, None
        y = [cells[col] for cells in self.rows]
        for i, cell in enumerate(y):
            if cell.lower() in _MISSING or (_is_number(cell) and not math.isfinite(float(cell))):
                raise self.bad_cell(f"--target {target}", i, col)
        return x, (np.array(y, dtype=np.float64) if all(map(_is_number, y)) else np.array(y, dtype=str))


def _finite_or_nan(text):
    try:
        v = float(text)
    except ValueError:
        return math.nan
    return v if math.isfinite(v) else math.nan


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _kind(cell):
    return "missing" if cell.lower() in _MISSING else "number" if _is_number(cell) else "word"


def _has_header(first, second):
    """Whether row ``first`` names the columns: it holds a word, and either no number or a word above
    a number of the next row (so '0,1,label' over '0.5,2,1' is a header; '1,2,cat' over '3,4,dog' is not)."""
    kinds = [_kind(c) for c in first]
    if "word" not in kinds:
        return False
    if "number" not in kinds or second is None:
        return True
    return any(k == "word" and _kind(c) == "number" for k, c in zip(kinds, second))


def _csv_rows(path, limit=None):
    """Up to ``limit`` records of stripped cells with the file row (from 1) of each; blank lines skipped."""
    rows, numbers = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: drop the byte-order mark Excel writes
        reader = csv.reader(f)
        for cells in reader:
            if len(cells) <= 1 and not "".join(cells).strip():
                continue
            rows.append([c.strip() for c in cells])
            numbers.append(reader.line_num)
            if len(rows) == limit:
                break
    return rows, numbers


def _load_csv(path, target):
    head, numbers = _csv_rows(path, limit=2)
    if not head:
        raise CLIError(f"--data: {path} is empty")
    header = head[0] if _has_header(head[0], head[1] if len(head) > 1 else None) else None
    if header is not None and len(head) == 1:
        raise CLIError(f"--data: {path} has a header ({','.join(header)}) but no data rows")
    n_columns = len(head[0])
    sep = next((s for s in ";\t|" if n_columns == 1 and s in head[0][0]), None)
    if sep is not None:
        raise CLIError(f"--data: {path} seems to separate values by {sep!r}; fastntk reads comma-separated files")
    col = None if target is None else _column_index(target, header, n_columns, path)
    try:  # the fast path, for a clean numeric file
        table = np.loadtxt(path, delimiter=",", skiprows=numbers[0] if header else 0, ndmin=2, comments=None,
                           quotechar='"', encoding="utf-8-sig")
    except ValueError:
        table = None
    if table is not None and table.shape[1] == n_columns and np.isfinite(table).all():
        if col is None:
            return table, None
        return np.delete(table, col, axis=1), table[:, col]
    return _csv_grid(path, header).split(col, target)  # text labels, or a precise error


def _csv_grid(path, header):
    rows, numbers = _csv_rows(path)
    note = "(rows count from 1 at the header)" if header is not None else "(rows and columns count from 1)"
    if header is not None:
        rows, numbers = rows[1:], numbers[1:]
    n_columns = len(header) if header is not None else len(rows[0])
    for cells, number in zip(rows, numbers):
        if len(cells) != n_columns:
            first = "the header has" if header is not None else f"row {numbers[0]} has"
            raise CLIError(f"--data: {path} row {number} has {len(cells)} values; {first} {n_columns} {note}")
    return _Grid(path, header, rows, numbers, note)


def _load_parquet(path, target):
    try:
        import pandas as pd
    except ImportError:
        raise CLIError("--data: reading .parquet needs pandas and pyarrow (pip install pandas pyarrow)") from None
    frame = pd.read_parquet(path)
    header = [str(c) for c in frame.columns]
    if frame.shape[0] == 0:
        raise CLIError(f"--data: {path} has no rows (columns {', '.join(header)})")
    col = None if target is None else _column_index(target, header, len(header), path)
    if all(t.kind in "fiub" for t in frame.dtypes):
        table = frame.to_numpy(dtype=np.float64)
        if np.isfinite(table).all():
            return (table, None) if col is None else (np.delete(table, col, axis=1), table[:, col])
    rows = [["" if pd.isna(v) else str(v).strip() for v in row] for row in frame.itertuples(index=False)]
    grid = _Grid(path, header, rows, list(range(1, len(rows) + 1)), "(data rows count from 1)")
    return grid.split(col, target)


def standardize(x, fit=None):
    """Columns to mean 0 and variance 1 by the statistics of ``fit`` (default x); constant columns to 0.

    Each column is first divided by its largest magnitude in ``fit``, so that values near the ends
    of the float64 range (1e200, 1e-300) neither overflow nor underflow when squared: the result is
    that of the same data times any power of 2, and to rounding of any other factor.
    """
    fit = x if fit is None else fit
    scale = np.abs(fit).max(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    f = fit / scale
    constant = np.ptp(f, axis=0) == 0  # exactly: std() of identical values can be 1e-17, not 0
    mean = np.where(constant, f[0], f.mean(axis=0))
    return (x / scale - mean) / np.where(constant, 1.0, f.std(axis=0))


def _add_network_args(p):
    p.add_argument("--depth", type=int, default=3, help="hidden layers (default 3)")
    p.add_argument("--activation", default="relu", help="relu, erf, gelu, tanh, ... (default relu)")
    p.add_argument("--W-std", type=_number, default=math.sqrt(2), help="weight std (default sqrt2)")
    p.add_argument("--b-std", type=_number, default=0.1, help="bias std (default 0.1)")
    p.add_argument("--parameterization", choices=("ntk", "standard"), default="ntk")
    p.add_argument("--width", type=int, default=512, help="hidden width (enters 'standard' only)")


def _top_eigenvalues(k, count=5):
    n = k.shape[0]
    if n <= 4000:
        return np.linalg.eigvalsh(np.asarray(k, dtype=np.float64))[::-1][:count]
    from scipy.sparse.linalg import eigsh

    return np.sort(eigsh(k, k=min(count, n - 1), which="LA", return_eigenvectors=False))[::-1]


def cmd_kernel(args):
    from numpy.lib.format import open_memmap

    x, _, name = load_data(args.data)
    if not args.no_standardize:
        x = standardize(x)
    dtype = np.dtype(args.dtype)
    get = tuple(g.strip() for g in args.get.split(","))
    from . import stax

    _, _, kernel_fn = stax.fc_network(args.depth, args.activation, args.W_std, args.b_std, args.parameterization,
                                    args.width)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = x.shape[0]
    files = {g: out_dir / f"{g}.npy" for g in get}
    start = time.perf_counter()
    try:
        outs = tuple(open_memmap(files[g], mode="w+", dtype=dtype, shape=(n, n)) for g in get)
        kernel_fn(x.astype(dtype), None, get, out=outs, progress=not args.quiet)
    except BaseException:
        for f in files.values():  # nothing half-written is left behind
            f.unlink(missing_ok=True)
        raise
    elapsed = time.perf_counter() - start
    summary = {"data": name, "N": n, "d": x.shape[1], "dtype": dtype.name, "seconds": round(elapsed, 3),
               "files": {g: str(f) for g, f in files.items()}}
    for g, arr in zip(get, outs):
        arr.flush()
        summary[f"{g}_top_eigenvalues"] = [float(v) for v in _top_eigenvalues(arr)]
    (out_dir / "kernel_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{name}: N={n}, d={x.shape[1]}, {args.activation} depth {args.depth}, {dtype.name}: "
          f"{', '.join(get)} ({n}x{n}) in {elapsed:.2f} s")
    for g in get:
        top = ", ".join(f"{v:.4g}" for v in summary[f"{g}_top_eigenvalues"])
        print(f"  {g}: {files[g]}  top eigenvalues: {top}")
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

    sel = None
    if diag_reg == "gcv":
        sel = predict.select_diag_reg(k_train, y, np.logspace(-8, 1, 37))
        diag_reg = sel.diag_reg
    f = predict.kernel_ridge(k_train, y, diag_reg, k_test_train=k_test).fx_test
    return f, float(diag_reg), sel


def _rbf(x1, x2, gamma):
    sq = (x1 * x1).sum(1)[:, None] + (x2 * x2).sum(1)[None, :] - 2 * x1 @ x2.T
    return np.exp(-gamma * np.maximum(sq, 0.0))


def _plots(out_dir, spectrum, times, loss_train, loss_test, limit, kernel):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(np.arange(1, len(spectrum) + 1), np.maximum(spectrum, np.finfo(float).tiny))
    ax.set(xlabel="index", ylabel="eigenvalue", title=f"{kernel.upper()} spectrum (train)")
    fig.tight_layout()
    fig.savefig(out_dir / "spectrum.png", dpi=120)
    plt.close(fig)
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


def cmd_fit(args):
    x, y, name = load_data(args.data, args.target)
    if y is None:
        raise CLIError(f"--target: {args.data} needs a target column (--target NAME or index)")
    task = _task(y, name, args.task, args.target)
    xtr, xte, ytr, yte = _split(x, y, task, args.test_size, args.seed)
    xtr, xte = standardize(xtr), standardize(xte, fit=xtr)
    if not np.isfinite(xte).all():
        raise CLIError(f"--data: test rows of {args.data} lie too far outside the training range to standardise")
    classes = np.unique(ytr) if task == "classification" else None
    fit = _fit(args, xtr, xte, _targets_of(ytr, task, classes))
    other = "nngp" if args.kernel == "ntk" else "ntk"
    report = {
        "data": name, "task": task, "target": args.target, "n_train": len(xtr), "n_test": len(xte), "d": x.shape[1],
        "network": {"depth": args.depth, "activation": args.activation, "W_std": args.W_std, "b_std": args.b_std,
                    "parameterization": args.parameterization, "width": args.width},
        "kernel": args.kernel, "t": args.t, "diag_reg": fit["reg"], "kernel_seconds": fit["kernel_seconds"],
        "test": _score(task, yte, fit["f_t"], classes),
        "test_t_infinity": _score(task, yte, fit["f_inf"], classes),
        f"test_{other}": _score(task, yte, fit["f_other"], classes),
        "test_rbf_kernel_ridge": _score(task, yte, fit["f_rbf"], classes),
        "spectrum": fit["spectrum"],
    }
    if classes is not None:
        report["classes"] = [c.item() for c in classes]
    if fit["sel"] is not None:
        report["gcv"] = {"diag_regs": fit["sel"].diag_regs.tolist(), "gcv": fit["sel"].gcv.tolist()}
    text = _json_text(report)  # before anything is written: no report with NaN in it
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred = classes[np.argmax(fit["f_t"], axis=1)] if task == "classification" else fit["f_t"][:, 0]
    _write_predictions(out_dir / "predictions.csv", yte, pred)
    (out_dir / "report.json").write_text(text)
    yte_m = _targets_of(yte, task, classes)
    loss = lambda f, yy: 0.5 * np.mean((f - yy) ** 2, axis=(-2, -1))  # noqa: E731
    _plots(out_dir, fit["eigenvalues"], fit["times"], loss(fit["ftr_t"], fit["y_train"]), loss(fit["fte_t"], yte_m),
           loss(fit["f_inf"], yte_m), args.kernel)
    _print_fit(args, report, name, task, other, out_dir)
    return 0


def _fit(args, xtr, xte, y_train):
    """Test outputs of the NTK/NNGP at t and t = ∞, of the other kernel and of RBF kernel ridge."""
    from . import predict, stax

    _, _, kernel_fn = stax.fc_network(args.depth, args.activation, args.W_std, args.b_std, args.parameterization,
                                      args.width)
    start = time.perf_counter()
    k_dd = kernel_fn(xtr, None, ("nngp", "ntk"), progress=not args.quiet)
    k_td = kernel_fn(xte, xtr, ("nngp", "ntk"), progress=not args.quiet)
    kernel_seconds = round(time.perf_counter() - start, 3)
    other = "nngp" if args.kernel == "ntk" else "ntk"
    k, k_test = getattr(k_dd, args.kernel), getattr(k_td, args.kernel)
    f_inf, reg, sel = _ridge(k, k_test, y_train, args.diag_reg)
    f_other = _ridge(getattr(k_dd, other), getattr(k_td, other), y_train, args.diag_reg)[0]
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
    return {"f_t": f_t, "f_inf": f_inf, "f_other": f_other, "f_rbf": f_rbf, "reg": reg, "sel": sel,
            "kernel_seconds": kernel_seconds, "spectrum": spectrum, "eigenvalues": s.eigenvalues, "times": times,
            "ftr_t": ftr_t, "fte_t": fte_t, "y_train": y_train}


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
    print(f"{name}: {task}, {report['n_train']} train / {report['n_test']} test, d={report['d']}; "
          f"{args.activation} depth {args.depth}, diag_reg={report['diag_reg']:.3g}")
    for label, key in ((f"{args.kernel.upper()} (t={args.t})", "test"), (f"{other.upper()}", f"test_{other}"),
                       ("RBF kernel ridge", "test_rbf_kernel_ridge")):
        print(f"  test {metric:8s} {report[key][metric]:.4f}  {label}")
    print(f"  wrote {out_dir}/report.json, predictions.csv, spectrum.png, loss.png")


def make_parser():
    parser = argparse.ArgumentParser(prog="fastntk", description="Neural Tangent Kernels, fast.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("kernel", help="NNGP/NTK of a fully-connected network, written to .npy")
    p.add_argument("--data", default="digits", help=f"file (.npy/.npz/.csv/.parquet) or one of {', '.join(BUILTIN)}")
    _add_network_args(p)
    p.add_argument("--get", default="nngp,ntk", help="nngp, ntk or both (default nngp,ntk)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--no-standardize", action="store_true", help="use features as given")
    p.add_argument("--out", default="fastntk-out", help="output folder (default ./fastntk-out)")
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
