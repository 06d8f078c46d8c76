"""Checks at the public boundary. Backends trust what passes here."""

from __future__ import annotations

import errno
import math
import numbers
import operator
import os
import sys

import numpy as np
from scipy.sparse.linalg import LinearOperator

__all__ = [
    "available_memory",
    "check_array",
    "check_block_rows",
    "check_get",
    "check_out",
    "check_out_array",
    "check_finite",
    "check_memory",
    "check_positive",
    "check_pair",
    "check_rows",
    "check_kernel_name",
    "reserve_disk",
    "check_initial",
    "check_integer",
    "check_kernel",
    "check_kernel_or_operator",
    "check_outputs",
    "check_symmetric",
    "check_targets",
    "check_dtype",
    "flatten_kernel",
    "TargetLayout",
    "check_test_operator",
    "check_times",
    "result_dtype",
    "uses_dask",
    "SYMMETRY_RTOL",
]

_FLOATS = (np.float32, np.float64)


def check_finite(x, name):
    """ValueError naming ``name`` if x holds NaN or inf (cheap sum test first, as scikit-learn)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum(dtype=np.float64)):
            return
    finite = np.isfinite(x)
    if finite.all():  # the sum overflowed; the entries are fine
        return
    bad = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise ValueError(f"{name} contains {'NaN' if bool(np.isnan(x[bad])) else 'inf'} (first at index {bad})")


def is_cupy(x):
    """Whether x is a CuPy array (never imports CuPy)."""
    return type(x).__module__.partition(".")[0] == "cupy"


def namespace_of(x):
    """The array module of x: CuPy for a CuPy array, else NumPy."""
    return sys.modules["cupy"] if is_cupy(x) else np


def check_array(x, name, *, ndim=2, dtype=None, allow_empty=False):
    """Return x as a C-contiguous float32/float64 ndarray of the given ndim, or raise.

    Integer, boolean, complex and object inputs raise TypeError: the kernels are defined
    for real floating point, and a silent cast would hide a mistake (pass ``x.astype(float)``).
    """
    if x is None:
        raise TypeError(f"{name} must be an array; got None")
    xp = namespace_of(x)
    arr = _check_meta(xp.asarray(x), name, ndim, allow_empty)
    if not arr.dtype.isnative:  # big-endian data (e.g. from a file): the kernels read native floats
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    check_finite(arr, name)
    return xp.ascontiguousarray(arr)


def _check_meta(x, name, ndim=2, allow_empty=False):
    """x itself after the checks of what its dtype and shape say (no value is read): float32 or
    float64, ``ndim`` axes, non-empty, and (for a dask array) known chunk sizes."""
    if x.dtype.kind != "f" or x.dtype.type not in _FLOATS:
        if x.dtype.kind == "f":  # float16 / longdouble: representable, not supported natively
            raise TypeError(f"{name} must be float32 or float64; got {x.dtype} (cast with .astype(np.float64))")
        raise TypeError(
            f"{name} must be a float32 or float64 array; got dtype {x.dtype}"
            + (" (complex inputs are not supported)" if x.dtype.kind == "c" else "")
        )
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D of shape (N, d); got {x.ndim}-D array of shape {x.shape}")
    if any(math.isnan(s) for s in x.shape):  # a dask array whose chunk sizes are not known yet
        raise ValueError(f"{name} has unknown chunk sizes (shape {x.shape}); call {name}.compute_chunk_sizes() first")
    if not allow_empty and math.prod(x.shape) == 0:
        raise ValueError(f"{name} must be non-empty; got shape {x.shape}")
    return x


def check_pair(x1, x2, dtype=None, *, lazy=False):
    """Validate x1 (N1, d) and x2 (N2, d) or None; return them with the result dtype.

    The result dtype follows the inputs: float32 if every input is float32, else float64,
    unless ``dtype`` is given. ``lazy``: x1 and x2 are arrays whose values are not read here
    (dask arrays): their dtypes and shapes are checked and they are returned as given, and
    :func:`check_rows` checks the values of each chunk of rows when it is computed.
    """
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.type not in _FLOATS:
            raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    check = _check_meta if lazy else check_array
    x1 = check(x1, "x1")
    if x2 is not None:
        x2 = check(x2, "x2")
        if x2.shape[1] != x1.shape[1]:
            raise ValueError(
                f"x2 must have the same number of features as x1 (d={x1.shape[1]}); got x2.shape={x2.shape}"
            )
    if dtype is None:
        dtype = np.result_type(x1.dtype, x2.dtype) if x2 is not None else x1.dtype
    if lazy:
        return x1, x2, np.dtype(dtype)
    x1 = _gram_in_range(x1.astype(dtype, copy=False), "x1", dtype)
    x2 = None if x2 is None else _gram_in_range(x2.astype(dtype, copy=False), "x2", dtype)
    return x1, x2, np.dtype(dtype)


def check_rows(x, name, dtype):
    """A chunk of rows of the input ``name`` (x1 or x2 of :func:`check_pair` with ``lazy``), of shape
    (n, d), checked as check_pair checks a whole input; returned C-contiguous in the result ``dtype``."""
    return _gram_in_range(check_array(x, name).astype(dtype, copy=False), name, dtype)


def _gram_in_range(x, name, dtype):
    """x (n, d) of ``dtype`` itself when the Gram x·x' stays finite: every |x|² · d below the largest float."""
    limit = np.sqrt(np.finfo(dtype).max / x.shape[1]) / 4
    top = float(abs(x).max())
    if top > limit:
        raise ValueError(f"{name} has entries up to {top:.3g}; the Gram x·x' would overflow "
                         f"{np.dtype(dtype).name} above {limit:.3g}: rescale the inputs")
    return x


def uses_dask(*values):
    """True if any of ``values`` (or of the arrays of a Kernel among them) is a dask collection. Never
    imports dask: no dask collection exists unless dask has been imported."""
    dask = sys.modules.get("dask")
    return dask is not None and any(dask.is_dask_collection(v) or (isinstance(v, tuple) and uses_dask(*v))
                                    for v in values)


def check_positive(value, name, *, allow_zero=False, allow_none=False):
    """A finite real number > 0 (or >= 0 with allow_zero); returns it as float."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; got {value}")
    return value


def available_memory():
    """Bytes of memory available to a new allocation (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(nbytes, what, alternatives, available=None):
    """MemoryError before allocating ``nbytes`` if it exceeds the bytes ``available()`` returns (a
    function returning bytes or None for unknown; default :func:`available_memory`, the host's)."""
    avail = (available or available_memory)()
    if avail is not None and nbytes > avail:
        raise MemoryError(
            f"{what} needs {nbytes / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB is available; "
            f"alternatives: {alternatives}"
        )


def check_get(get, allowed=("nngp", "ntk")):
    """Names requested by ``get`` (None: nngp and ntk; a name; a tuple of distinct names), lower-cased
    as neural-tangents does (``'NTK'`` is ``'ntk'``)."""
    if get is None:
        return ("nngp", "ntk")
    names = (get,) if isinstance(get, str) else tuple(get) if isinstance(get, (tuple, list)) else ()
    names = tuple(g.lower() if isinstance(g, str) else g for g in names)
    if not names or any(not isinstance(g, str) or g not in allowed for g in names) or len(set(names)) != len(names):
        choices = ", ".join(map(repr, allowed))
        raise ValueError(f"unknown get {get!r}: get must be None, {choices} (any case) or a tuple of distinct ones")
    return names


def check_kernel_name(get):
    """The one kernel ``get`` names, 'nngp' or 'ntk' (any case), for what computes one kernel at a time."""
    names = check_get(get)
    if len(names) != 1:
        raise ValueError(f"get must name one kernel, 'nngp' or 'ntk'; got {get!r}")
    return names[0]


def check_block_rows(block_rows):
    """None or a positive integer (rows of x1 per tile)."""
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, numbers.Integral)
                                   or block_rows < 1):
        raise ValueError(f"block_rows must be a positive integer; got {block_rows!r}")
    return block_rows


def check_out(out, get, names, shape, dtype, inputs, xp=np):
    """``out=`` of kernel_fn as a dict name -> array; ValueError unless every array is an ndarray of
    the backend's namespace ``xp`` (NumPy or CuPy) with ``shape`` and ``dtype``, contiguous rows, and
    overlaps neither another output nor an input (``inputs``: name -> array or None), since the pass
    reads inputs while it writes outputs."""
    if out is None:
        return {}
    if get is None:
        raise ValueError("out needs an explicit get ('nngp', 'ntk' or a tuple) to say which array is which")
    if isinstance(get, str):
        out = {names[0]: out}
    elif isinstance(out, dict):
        if set(out) - set(names):
            raise ValueError(f"out has keys {sorted(out)} not all in get={names}")
    else:
        out = tuple(out)
        if len(out) != len(names):
            raise ValueError(f"out must hold one array per name in get={names}; got {len(out)}")
        out = dict(zip(names, out))
    for name, arr in out.items():
        check_out_array(arr, f"out[{name!r}]", shape, dtype, xp)
    others = [(f"out[{n!r}]", a) for n, a in out.items()] + [(n, a) for n, a in inputs.items() if a is not None]
    for i, (name, arr) in enumerate(others[: len(out)]):
        for other, b in others[i + 1:]:
            if xp.shares_memory(arr, b):
                raise ValueError(f"{name} shares memory with {other}; each output needs a buffer of its own "
                                 "that overlaps no input")
    return out


def check_out_array(arr, name, shape, dtype, xp=np):
    """ValueError naming ``name`` unless ``arr`` is a writeable ``xp.ndarray`` (np.memmap included) of
    ``shape`` (2-D) and ``dtype`` with contiguous rows, as the compiled passes write rows with unit stride."""
    if not isinstance(arr, xp.ndarray) or arr.shape != shape or arr.dtype != dtype:
        got = f"{type(arr).__name__} of shape {getattr(arr, 'shape', None)} and dtype {getattr(arr, 'dtype', None)}"
        where = "" if xp is np else f" of {xp.__name__} (the backend's arrays)"
        raise ValueError(f"{name} must be an ndarray{where} of shape {shape} and dtype {np.dtype(dtype)}; got {got}")
    if not getattr(arr.flags, "writeable", True) or (shape[1] > 1 and arr.strides[1] != arr.itemsize) or arr.strides[0] < 0:
        raise ValueError(f"{name} must be writeable with contiguous rows")


def _memmap_file(arr):
    """(path, byte offset, bytes) of the file region behind a view of a np.memmap, or None."""
    base = arr
    while base is not None and not (isinstance(base, np.memmap) and getattr(base, "filename", None)):
        base = base.base
    if base is None or base._mmap is None:
        return None
    start = base.offset + (arr.__array_interface__["data"][0] - base.__array_interface__["data"][0])
    span = (arr.shape[0] - 1) * arr.strides[0] + arr.shape[1] * arr.itemsize if arr.size else 0
    return base.filename, start, span


def reserve_disk(arr, name):
    """Reserve the disk space behind ``arr`` when it is a file-backed np.memmap, so that a full disk
    is an OSError naming ``name`` before any work, not a SIGBUS that kills the interpreter when a
    page of a sparse file is first written."""
    region = _memmap_file(arr)
    if region is None or not hasattr(os, "posix_fallocate"):
        return
    path, start, span = region
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return  # opened read-only elsewhere or gone: the memmap itself reports that on write
    try:
        os.posix_fallocate(fd, start, span)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # a file system without fallocate: nothing to reserve with
        raise OSError(err.errno, f"{name} is a memmap of {path} whose {span / 2**30:.2f} GiB could not be "
                                 f"reserved on its disk ({err.strerror}); free space or write elsewhere") from None
    finally:
        os.close(fd)
# ---------------------------------------------------------------------------------------------
# kernels, targets and times (fastntk.predict, fastntk.spectrum, fastntk.solvers)

#: A kernel K counts as symmetric when max|K − Kᵀ| ≤ SYMMETRY_RTOL·eps·√N·max|K| (eps of K's dtype).
#: fastntk's own kernels are symmetric to within 1 eps (mirrored triangle, or BLAS rounding when
#: x2 is passed); the Cholesky and eigendecomposition paths read different triangles, so a real
#: asymmetry would make them disagree.
SYMMETRY_RTOL = 100.0


def check_symmetric(k, name):
    """ValueError naming ``name`` unless max|K − Kᵀ| ≤ SYMMETRY_RTOL·eps·√N·max|K|.

    Compares pairs of (256, 256) blocks: extra memory one block, no N×N temporary.
    """
    n, b = k.shape[0], 256
    buf = np.empty((min(b, n), min(b, n)), dtype=k.dtype)
    worst, top = 0.0, max(float(k.max()), -float(k.min()))
    for i in range(0, n, b):
        for j in range(i, n, b):
            upper = k[i:i + b, j:j + b]
            diff = np.subtract(upper, k[j:j + b, i:i + b].T, out=buf[:upper.shape[0], :upper.shape[1]])
            worst = max(worst, float(diff.max()), -float(diff.min()))
    tol = SYMMETRY_RTOL * np.finfo(k.dtype).eps * np.sqrt(n)
    if worst > tol * top:
        raise ValueError(f"{name} must be symmetric: max|K − Kᵀ| = {worst:.3g} exceeds {tol:.2g}·max|K| = "
                         f"{tol * top:.3g} (tolerance {SYMMETRY_RTOL:g}·eps·√N); pass (K + K.T) / 2 if the "
                         "asymmetry is rounding")


def check_kernel(k, name, shape=None, *, symmetric=False):
    """``k`` as a finite 2-D float array, square unless ``shape`` says otherwise (and symmetric if asked).

    ``shape``: the expected (rows, columns); None for rows means any number of rows.
    """
    if k is not None and np.ndim(k) != 2:
        want = "(N, N)" if shape is None else "(" + ", ".join("N1" if w is None else str(w) for w in shape) + ")"
        raise ValueError(f"{name} must be a 2-D kernel of shape {want}; got shape {np.shape(k)}")
    k = check_array(k, name)
    want = (k.shape[0], k.shape[0]) if shape is None else tuple(k.shape[0] if w is None else w for w in shape)
    if k.shape != tuple(want):
        what = "square (N, N)" if shape is None else f"of shape {tuple(want)}"
        raise ValueError(f"{name} must be {what}; got shape {k.shape}")
    if symmetric:
        check_symmetric(k, name)
    return k


def check_kernel_or_operator(k, name, diag_reg, absolute):
    """(kernel, absolute regularizer) for a symmetric array or a square LinearOperator.

    A relative ``diag_reg`` (× trace(K)/N) needs K's diagonal: an operator must have ``diagonal()``
    (as fastntk.solvers.KernelOperator has), or ``absolute`` must be set.
    """
    if isinstance(k, LinearOperator):
        if len(k.shape) != 2 or k.shape[0] != k.shape[1]:
            raise ValueError(f"{name} must be square (N, N); got shape {k.shape}")
        if diag_reg and not absolute:
            if not callable(getattr(k, "diagonal", None)):
                raise ValueError(f"diag_reg relative to trace(K)/N needs K's diagonal: pass "
                                 f"diag_reg_absolute_scale=True with a LinearOperator {name} that has no diagonal()")
            diag = np.asarray(k.diagonal(), dtype=np.float64)
            check_finite(diag, f"{name}.diagonal()")
            return k, diag_reg * float(diag.mean())
        return k, diag_reg
    k = check_kernel(k, name, symmetric=True)
    return k, diag_reg if absolute else diag_reg * float(np.trace(k, dtype=np.float64)) / k.shape[0]


def check_test_operator(k, name, n_train):
    """``k`` as an (N_test, n_train) array (check_kernel) or a LinearOperator with n_train columns."""
    if isinstance(k, LinearOperator):
        if len(k.shape) != 2 or k.shape[1] != n_train:
            raise ValueError(f"{name} must have {n_train} columns (N_test, {n_train}); got shape {k.shape}")
        return k
    return check_kernel(k, name, (None, n_train))


def flatten_kernel(k, name, n_pairs=None):
    """A kernel of neural-tangents' paired layout as the matrix it stands for (NT's ``utils.make_2d``).

    ``k`` of shape (N1, N2, O1, O1, O2, O2, ...) (``n_pairs`` pairs, None: ndim / 2; the points, then
    one per output axis kept) is the (N1·O1·O2⋯, N2·O1·O2⋯) matrix whose rows run over
    (N1, O1, O2, ...) in C order. A 2-D kernel is returned as is (check_array).
    """
    ndim = np.ndim(k)
    if n_pairs is None:
        n_pairs = max(ndim // 2, 1) if ndim % 2 == 0 else 0
    if k is not None and ndim != 2 * n_pairs:
        raise ValueError(f"{name} must be a kernel of shape (N1, N2) or (N1, N2, O1, O1, ...); got shape {np.shape(k)}")
    k = check_array(k, name, ndim=ndim if k is not None else 2)
    if n_pairs == 1:
        return k
    outs = k.shape[2:]
    if outs[::2] != outs[1::2]:
        raise ValueError(f"{name} must pair each output axis with itself, shape (N1, N2, O1, O1, ...); "
                         f"got shape {k.shape}")
    rows = k.shape[0] * int(np.prod(outs[::2]))
    return np.ascontiguousarray(k.transpose(0, *range(2, k.ndim, 2), 1, *range(3, k.ndim, 2))).reshape(rows, -1)


class TargetLayout:
    """How ``y_train``'s axes meet the kernels', as in neural-tangents.

    The axes of ``y_train`` (N, ...) not in ``trace_axes`` (always the first, then the "kept" output
    axes, sizes ``kept``) pair up in every kernel: shape (N1, N2, O1, O1, ...), read as the matrix
    :func:`flatten_kernel` returns, of side ``N·P`` (P = ∏ kept). The traced axes (``M`` = ∏ of
    their sizes) are independent columns: the kernel of the whole output is ``K ⊗ I_M``. An array
    shaped like ``y_train`` (any N) is handled as the (N·P, M) matrix :meth:`to_2d` returns.

    Attributes: ``shape`` of y_train, ``kept`` (sizes of the kept output axes), ``y`` (N·P, M)
    float64, ``dtype`` of y_train, ``n`` = N.
    """

    def __init__(self, y, traced):
        self.shape, self.dtype, self.n = y.shape, y.dtype, y.shape[0]
        kept = tuple(a for a in range(1, y.ndim) if a not in traced)
        self.kept = tuple(y.shape[a] for a in kept)
        self._perm = (0, *kept, *traced)
        self._inverse = tuple(int(a) for a in np.argsort(self._perm))
        self._tail = tuple(y.shape[a] for a in traced)
        self.p, self.m = int(np.prod(self.kept)), int(np.prod(self._tail))
        self.y = self.to_2d(y.astype(np.float64))

    def shape_of(self, n):
        """The shape of y_train with n points."""
        return (n, *self.shape[1:])

    def to_2d(self, a):
        """a (N', *y_train.shape[1:]) as the (N'·P, M) matrix (the kept axes with the points)."""
        return np.ascontiguousarray(a.transpose(self._perm)).reshape(-1, self.m)

    def from_2d(self, a, lead=()):
        """(*lead, N'·P, M) back to (*lead, N', *y_train.shape[1:])."""
        a = a.reshape(*lead, -1, *self.kept, *self._tail)
        return a.transpose(*range(len(lead)), *(len(lead) + i for i in self._inverse))

    def cov_from_2d(self, c, lead=()):
        """(*lead, N'·P, N'·P) covariance as neural-tangents' (*lead, N', N', O1, O1, ...)."""
        c = c.reshape(*lead, -1, *self.kept, c.shape[-1] // self.p, *self.kept)
        pairs = len(self.kept) + 1
        zipped = [len(lead) + a for i in range(pairs) for a in (i, pairs + i)]
        return c.transpose(*range(len(lead)), *zipped)

    def kernel(self, k, name, rows=None, cols=None, *, symmetric=False):
        """The (N1·P, N2·P) matrix of kernel ``k`` (N1, N2, O1, O1, ...) (:func:`flatten_kernel`).

        ``rows``: the expected N1 (None: any); ``cols``: the expected N2 (None: N1, a square kernel).
        """
        pairs = tuple(o for o in self.kept for _ in range(2))
        if k is not None and np.ndim(k) != 2 + len(pairs):
            want = "(N1, N2" + "".join(f", {o}" for o in pairs) + ")"
            raise ValueError(f"{name} must have shape {want}: a pair of axes for the points, then one per axis of "
                             f"y_train {self.shape} not in trace_axes, as in neural-tangents (use "
                             f"trace_axes=(-1,) with an (N, N) kernel); got shape {np.shape(k)}")
        k2 = flatten_kernel(k, name, 1 + len(self.kept))
        got = np.shape(k)
        n1 = got[0] if rows is None else rows
        want = (n1, n1 if cols is None else cols, *pairs)
        if got != want:
            square = "square, " if rows is None and cols is None else ""
            raise ValueError(f"{name} must be {square}of shape {want}; got shape {got}")
        if symmetric:
            check_symmetric(k2, name)
        return k2

    def train_kernel(self, k, name):
        """:meth:`kernel` for the symmetric train-train kernel, whose N must be y_train's."""
        k2 = self.kernel(k, name, symmetric=True)
        if np.shape(k)[0] != self.n:
            raise ValueError(f"y_train must have {np.shape(k)[0]} rows to match the kernel; got shape {self.shape}")
        return k2


def check_targets(y_train, trace_axes):
    """The :class:`TargetLayout` of y_train (N, ...) for ``trace_axes`` (ints; not the first axis).

    A 1-D y_train (N,) is one output per point whatever ``trace_axes`` says.
    """
    y = check_array(y_train, "y_train", ndim=max(np.ndim(y_train), 1))
    try:
        axes = (trace_axes,) if isinstance(trace_axes, numbers.Integral) else tuple(trace_axes)
        axes = sorted({operator.index(a) % y.ndim for a in axes}) if y.ndim > 1 else []
    except TypeError:
        raise TypeError(f"trace_axes must be an int or a tuple of ints; got {trace_axes!r}") from None
    if 0 in axes:
        raise ValueError(f"trace_axes must not hold the first axis of y_train (the points); got "
                         f"trace_axes={trace_axes!r} for y_train.shape={y.shape}")
    return TargetLayout(y, tuple(axes))


def check_outputs(y_train, n_rows):
    """y_train (n_rows, ...) as float64 (n_rows, M), its trailing shape and dtype (all axes but the first: outputs)."""
    y = check_array(y_train, "y_train", ndim=max(np.ndim(y_train), 1))
    if y.shape[0] != n_rows:
        raise ValueError(f"y_train must have {n_rows} rows to match the kernel; got shape {y.shape}")
    return y.reshape(n_rows, -1).astype(np.float64), y.shape[1:], y.dtype


def check_dtype(dtype):
    """None (the default rule: :func:`result_dtype`), or float32 / float64 as a NumPy type."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.type not in _FLOATS:
        raise TypeError(f"dtype must be None, np.float32 or np.float64; got {dtype!r}")
    return dt.type


def _as_float64(x, name, what):
    if x is None or isinstance(x, (str, bytes)) or np.asarray(x).dtype.kind not in "biuf":
        raise TypeError(f"{name} must be {what}; got {type(x).__name__}"
                        + (f" of dtype {np.asarray(x).dtype}" if isinstance(x, np.ndarray) else ""))
    return np.asarray(x, dtype=np.float64)


def check_initial(fx, name, shape):
    """fx (scalar or real array) broadcast to ``shape`` as float64."""
    arr = _as_float64(fx, name, "a real number or array")
    try:
        arr = np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(f"{name} must broadcast to shape {shape}; got shape {arr.shape}") from None
    check_finite(arr, name)
    return arr


def check_times(t, name="t", integer=False):
    """t as a float64 array of times ≥ 0 (inf allowed; whole numbers when ``integer``)."""
    arr = _as_float64(t, name, "a real number or an array of times")
    if np.isnan(arr).any() or (arr < 0).any() or (integer and not np.all(np.isfinite(arr) & (arr % 1 == 0))):
        kind = "whole numbers of steps >= 0" if integer else "times >= 0 (not NaN)"
        raise ValueError(f"{name} must hold {kind}; got {t!r}")
    return arr


def check_integer(value, name, *, minimum=1, maximum=None, allow_none=False):
    """An int in [minimum, maximum] (bool refused); None passes with ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}; got {value}")
    return int(value)


def check_map_input(x, d, dtype):
    """x (N, d) for a feature map of d input features: check_array (cast to the map's ``dtype``),
    and ValueError naming both widths otherwise."""
    x = check_array(x, "x", dtype=dtype, allow_empty=True)
    if x.shape[1] != d:
        raise ValueError(f"x must have {d} features (the map's d); got shape {x.shape}")
    return x


def check_seed(seed, name="seed"):
    """A numpy Generator from ``seed``: an int >= 0, a Generator (used as is) or None (fresh entropy)."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int >= 0, a numpy.random.Generator or None; got {seed!r}") from None


def result_dtype(*arrays, dtype=None):
    """``dtype`` if given (check_dtype), else float32 when every array is float32, else float64 (DESIGN §5)."""
    if dtype is not None:
        return dtype
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
