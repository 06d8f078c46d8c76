"""Backend dispatch: the one place that decides which compiled code runs.

CPU: closed-form layers run in the C++ module ``fastntk._core`` (OpenMP); layers whose
dual kernels are Python functions run in Numba (``numba_kernels``, imported on first
use) or, for user-given dual kernels, in NumPy. Every function works in place on arrays
that ``fastntk.kernels`` allocated.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

try:
    from fastntk import _core
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        "fastntk's compiled module fastntk._core is missing; reinstall with `pip install .` "
        "from a source checkout (it needs a C++17 compiler and CMake)"
    ) from e

#: Op codes of the compiled fused pass by name ("input", "dense_ntk", ..., "gelu").
OP_KINDS = dict(_core.op_kinds)

__all__ = [
    "OP_KINDS",
    "fc_diagonal",
    "fc_tile",
    "get_num_threads",
    "layer_diagonal",
    "layer_tile",
    "mirror_upper",
    "progress_bar",
    "set_num_threads",
]


def fc_tile(sigma, nngp, ntk, var1, var2, ops, rho_tol):
    """Closed-form layers over a tile in place (see cpp/include/fastntk/fc.hpp)."""
    _core.fc_tile(sigma, nngp, ntk, var1, var2, ops, rho_tol)


def fc_diagonal(k, t, var, ops):
    """Closed-form layers over per-point values in place; fills var."""
    _core.fc_diagonal(k, t, var, ops)


def mirror_upper(a):
    """a[j, i] = a[i, j] for j > i, in place."""
    _core.mirror_upper(a)


def layer_tile(layer, k, t, v1, v2):
    """A layer whose dual kernels are Python functions, over a tile in place."""
    if layer[0] == "numerical":
        from . import numba_kernels

        numba_kernels.quad_tile(layer, k, t, v1, v2)
    else:  # ("elementwise", fn, nngp_fn, d_nngp_fn)
        _, _, nngp_fn, d_nngp_fn = layer
        k64 = k.astype(np.float64)
        if t is not None:
            t *= d_nngp_fn(k64, v1[:, None], v2[None, :])
        k[...] = nngp_fn(k64, v1[:, None], v2[None, :])


def layer_diagonal(layer, k, t):
    """Same for per-point values k = Σ(x, x), t = Θ(x, x) (float64, in place)."""
    if layer[0] == "numerical":
        from . import numba_kernels

        numba_kernels.quad_diag(layer, k, t)
    else:
        _, _, nngp_fn, d_nngp_fn = layer
        if t is not None:
            t *= d_nngp_fn(k, k, k)
        k[...] = nngp_fn(k, k, k)


def set_num_threads(n):
    """Threads of fastntk's compiled kernels (OpenMP). BLAS keeps its own setting."""
    _core.set_num_threads(int(n))


def get_num_threads():
    return _core.get_num_threads()


@contextlib.contextmanager
def progress_bar(total, enabled, desc="kernel rows"):
    """A tqdm bar when enabled, else an object whose update() does nothing."""
    if not enabled:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="row") as bar:
        yield bar


def _numba_serial_after_fork():
    """In a fork()ed child, compile the Numba quadrature without threads (DESIGN §3).

    Numba's 'omp' threading layer on GNU OpenMP terminates (SIGTERM) a child of the
    process that started its threads at the child's first parallel region, whatever the
    thread count. Such a child runs the same kernel compiled with ``parallel=False``: rows
    are independent, so the results are the same bit for bit. The parent, and a child of
    a process whose Numba threads never started, keep the parallel kernel. (The OpenMP
    pool of ``_core`` is handled in ``src/core.cpp``.)
    """
    numba = sys.modules.get("numba")
    if numba is None:
        return
    try:
        if numba.threading_layer() != "omp":  # tbb and workqueue survive fork()
            return
    except ValueError:  # Numba's threads have not started
        return
    from . import numba_kernels

    numba_kernels._quad_tile = numba.njit(nogil=True)(numba_kernels._quad_tile.py_func)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_numba_serial_after_fork)


class _NoBar:
    def update(self, n):
        pass
