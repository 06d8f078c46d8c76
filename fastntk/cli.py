"""The ``fastntk`` command line.

``fastntk kernel``: NNGP/NTK of a fully-connected network on a data file or a built-in
dataset, written to .npy with a progress bar and a summary.
"""

from __future__ import annotations

import argparse
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


def load_data(source, target=None):
    """Features (and target if any) from a built-in dataset name or a .npy/.npz/.csv/.parquet file.

    Returns ``(x, y, name)``: x float64 (N, d); y (N,) or None. For files, ``target`` names
    the target column (CSV/parquet header name or integer index; npz key), else there is none.
    Raises CLIError with a one-line message on any problem.
    """
    if source in BUILTIN:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{source}")()
        return bunch.data.astype(np.float64), bunch.target, source
    path = Path(source)
    if not path.exists():
        raise CLIError(f"--data: no file {source!r} and no built-in dataset of that name ({', '.join(BUILTIN)})")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            table, columns = np.load(path, allow_pickle=False), None
        elif suffix == ".npz":
            z = np.load(path, allow_pickle=False)
            key = next((k for k in ("x", "X", "data") if k in z.files), z.files[0] if z.files else None)
            if key is None:
                raise CLIError(f"--data: {source} holds no arrays")
            x = np.asarray(z[key])
            if target is not None and target not in z.files:
                raise CLIError(f"--target: {source} has no array {target!r}; it has {z.files}")
            return _features(x, source), (None if target is None else z[target]), path.stem
        elif suffix in (".csv", ".parquet"):
            table, columns = _read_table(path, suffix)
        else:
            raise CLIError(f"--data: unsupported file type {suffix!r}; use .npy, .npz, .csv or .parquet")
    except (OSError, ValueError) as e:
        raise CLIError(f"--data: cannot read {source}: {e}") from None
    table = np.asarray(table)
    if table.ndim != 2:
        raise CLIError(f"--data: expected a 2-D table; {source} has shape {table.shape}")
    y = None
    if target is not None:
        col = _column_index(target, columns, table.shape[1])
        y = table[:, col]
        table = np.delete(table, col, axis=1)
    return _features(table, source), y, path.stem


def _read_table(path, suffix):
    if suffix == ".parquet":
        try:
            import pandas as pd
        except ImportError:
            raise CLIError("--data: reading .parquet needs pandas and pyarrow (pip install pandas pyarrow)") from None
        frame = pd.read_parquet(path)
        return frame.to_numpy(), list(map(str, frame.columns))
    with open(path) as f:
        first = f.readline()
    cells = [c.strip() for c in first.split(",")]
    has_header = any(not _is_number(c) for c in cells)
    table = np.genfromtxt(path, delimiter=",", skip_header=int(has_header), dtype=np.float64)
    if table.ndim == 1:
        table = table[:, None] if len(cells) == 1 else table[None, :]
    return table, (cells if has_header else None)


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _column_index(target, columns, n_columns):
    if columns is not None and target in columns:
        return columns.index(target)
    if target.lstrip("-").isdigit() and -n_columns <= int(target) < n_columns:
        return int(target) % n_columns
    listing = f"; columns are {columns}" if columns is not None else f" (the table has {n_columns} columns)"
    raise CLIError(f"--target: no column {target!r}{listing}")


def _features(x, source):
    if x.dtype.kind not in "fiub":
        raise CLIError(f"--data: {source} has non-numeric values (dtype {x.dtype})")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise CLIError(f"--data: expected a non-empty (N, d) table; {source} has shape {x.shape}")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise CLIError(f"--data: {source} has a missing or non-numeric value at row {bad[0]}, column {bad[1]}")
    return x


def standardize(x):
    """Columns to mean 0 and variance 1 (constant columns to 0)."""
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


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
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ValueError, TypeError, MemoryError, OSError) as e:
        print(f"fastntk {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
