"""Backend dispatch: the one place that decides which code computes a block.

``select(*arrays, backend='auto')`` returns the backend object for the caller's arrays; the
drivers (``fastntk.infinite``) call its methods and never branch on array types themselves.
Two backends share one interface: ``'cpu'`` (:mod:`fastntk._backend.cpu`: the C++ module for
closed-form layers, Numba for quadrature, NumPy for user-given dual kernels) and ``'cuda'``
(:mod:`fastntk._backend.cuda`: CuPy arrays, cuBLAS and NVRTC-compiled kernels of the same formulas).
"""

from __future__ import annotations

import numpy as np

from .._validation import is_cupy
from . import cpu, cuda
from .cuda import NO_SPATIAL

__all__ = ["BACKENDS", "NO_SPATIAL", "get_num_threads", "move", "select", "set_num_threads"]

#: Backends by name: each a function returning the backend object (the CUDA one built on first use).
BACKENDS = {"cpu": lambda: cpu.BACKEND, "cuda": cuda.cupy_backend}


def select(*arrays, backend="auto"):
    """The backend that computes on ``arrays`` (None entries are ignored).

    backend : 'auto' (by the arrays' type: CuPy arrays → 'cuda'; NumPy arrays and anything NumPy
        converts → 'cpu') or the name of a backend in BACKENDS, whose arrays the results then are.
        'cuda' raises ImportError without CuPy and RuntimeError without a GPU.
    """
    if backend != "auto" and backend not in BACKENDS:
        choices = ", ".join(map(repr, ("auto", *BACKENDS)))
        raise ValueError(f"unknown backend {backend!r}; supported: {choices}")
    if backend == "auto":
        backend = "cuda" if any(is_cupy(a) for a in arrays) else "cpu"
    return BACKENDS[backend]()


def move(x, be):
    """x (an array or None) as an array of backend ``be``'s namespace: a CuPy array copied to the
    host for the CPU backend, a host array copied to the GPU for the CUDA one, else x itself."""
    if x is None or is_cupy(x) == (be.xp is not np):
        return x
    return x.get() if is_cupy(x) else be.from_host(x)


def set_num_threads(n):
    """Threads of fastntk's compiled kernels (OpenMP). BLAS keeps its own setting."""
    cpu.set_num_threads(n)


def get_num_threads():
    """Threads of fastntk's compiled kernels (OpenMP)."""
    return cpu.get_num_threads()
