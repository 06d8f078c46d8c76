"""Backend dispatch: the one place that decides which code computes a block.

``select(*arrays, backend='auto')`` returns the backend object for the caller's arrays; the
drivers (``fastntk.infinite``) call its methods and never branch on array types themselves.
Today there is one backend, ``'cpu'`` (:mod:`fastntk._backend.cpu`: the C++ module for
closed-form layers, Numba for quadrature, NumPy for user-given dual kernels); a CUDA backend
will join it under the same interface.
"""

from __future__ import annotations

from . import cpu

__all__ = ["BACKENDS", "get_num_threads", "select", "set_num_threads"]

#: Backends by name.
BACKENDS = {"cpu": cpu.BACKEND}


def select(*arrays, backend="auto"):
    """The backend that computes on ``arrays`` (None entries are ignored).

    backend : 'auto' (by the arrays' type: NumPy arrays and anything NumPy converts → 'cpu')
        or the name of a backend in BACKENDS.
    """
    if backend != "auto" and backend not in BACKENDS:
        choices = ", ".join(map(repr, ("auto", *BACKENDS)))
        raise ValueError(f"unknown backend {backend!r}; supported: {choices}")
    for a in arrays:
        if type(a).__module__.partition(".")[0] == "cupy":
            raise TypeError("CuPy arrays need the CUDA backend, which this version of fastntk does not have; "
                            "pass NumPy arrays (cupy.asnumpy(x))")
    return BACKENDS["cpu" if backend == "auto" else backend]


def set_num_threads(n):
    """Threads of fastntk's compiled kernels (OpenMP). BLAS keeps its own setting."""
    cpu.set_num_threads(n)


def get_num_threads():
    """Threads of fastntk's compiled kernels (OpenMP)."""
    return cpu.get_num_threads()
