"""Data files for the ``fastntk`` command: .csv, .npy, .npz, .parquet or a built-in dataset.

Every read checks what it reads and says where a value is wrong (file, row, column) in a
:class:`CLIError`, which the command prints as one line with exit status 2.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

__all__ = ["BUILTIN", "CLIError", "load_data", "standardize"]

BUILTIN = ("digits", "breast_cancer", "wine", "iris", "diabetes")
_MISSING = frozenset({"", "nan", "na", "n/a", "null"})  # cells read as missing, compared lower-case


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


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
