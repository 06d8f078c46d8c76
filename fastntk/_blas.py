"""BLAS as fastntk's compiled kernels call it: the GEMM they call per sub-tile, the three routines of
the blocked Cholesky, and one BLAS thread.

The fused pass (``_core.fc_gram_tile``) computes each sub-tile's Gram with BLAS ``?gemm`` from
inside its own OpenMP threads, so that the ops read the Gram from cache. Those calls must each run
on one thread: a multithreaded BLAS would start its own threads per call, and after any threaded
call OpenBLAS's idle threads spin for ~0.1 s (2^28 cycles, its THREAD_TIMEOUT) on the cores the
OpenMP pass needs. :func:`one_blas_thread` limits every loaded BLAS to one thread while a kernel
runs; it nests, and concurrent kernels in several Python threads share one limit (the first to
enter sets it, the last to leave restores the caller's setting).
"""

from __future__ import annotations

import contextlib
import threading

import scipy.linalg.cython_blas
import scipy.linalg.cython_lapack
from threadpoolctl import ThreadpoolController

__all__ = ["CHOLESKY_BLAS", "GEMM", "one_blas_thread"]

#: The Fortran ?gemm of SciPy's BLAS by NumPy dtype character, as PyCapsules (C function pointers).
GEMM = {"d": scipy.linalg.cython_blas.__pyx_capi__["dgemm"], "f": scipy.linalg.cython_blas.__pyx_capi__["sgemm"]}

#: dpotrf, dtrsm, dgemm as capsules, for ``_core.cholesky_upper`` (threaded as the caller sets the BLAS).
CHOLESKY_BLAS = (scipy.linalg.cython_lapack.__pyx_capi__["dpotrf"], scipy.linalg.cython_blas.__pyx_capi__["dtrsm"],
                 GEMM["d"])

_lock = threading.Lock()
_state = {"users": 0, "limiter": None, "controller": None}


@contextlib.contextmanager
def one_blas_thread():
    """Every loaded BLAS on one thread inside the block (threadpoolctl), restored after the last user."""
    with _lock:
        if _state["users"] == 0:
            if _state["controller"] is None:  # the libraries loaded by now (SciPy's BLAS is, above)
                _state["controller"] = ThreadpoolController()
            _state["limiter"] = _state["controller"].limit(limits=1, user_api="blas")
        _state["users"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0:
                _state["limiter"].restore_original_limits()
                _state["limiter"] = None
