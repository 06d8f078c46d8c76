"""``batch``: neural-tangents' ``nt.batch``, for code that wraps its kernel functions in it.

neural-tangents computes a kernel in blocks of ``batch_size`` rows only when asked (and
then needs N divisible by it), to fit the device. fastntk always computes in blocks sized
by its own memory model (``fastntk._tiles``), so ``batch`` only sets that block height: it
never changes a result beyond rounding, never requires divisibility, and ``batch_size=0``
returns the function itself.
"""

from __future__ import annotations

import functools
import inspect
import numbers

__all__ = ["batch"]


def batch(kernel_fn, batch_size=0, device_count=-1, store_on_device=True):
    """``kernel_fn`` computed in row blocks of ``batch_size`` (neural-tangents' signature).

    Parameters
    ----------
    kernel_fn : callable
        A ``kernel_fn`` of :mod:`fastntk.stax` or an ``ntk_fn`` of :mod:`fastntk.empirical`
        (any function with a ``block_rows`` keyword); any other callable is returned as is.
    batch_size : int ≥ 0
        Rows of x1 per block; 0 keeps fastntk's own choice (about 32 MiB of each result).
    device_count, store_on_device :
        Accepted for compatibility: fastntk runs on one device and returns host arrays.

    Returns
    -------
    callable with the signature and attributes of ``kernel_fn``.
    """
    if not callable(kernel_fn):
        raise TypeError(f"kernel_fn must be callable; got {type(kernel_fn).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative integer; got {batch_size!r}")
    if isinstance(device_count, bool) or not isinstance(device_count, numbers.Integral):
        raise ValueError(f"device_count must be an integer (-1: all devices); got {device_count!r}")
    if not isinstance(store_on_device, bool):
        raise ValueError(f"store_on_device must be True or False; got {store_on_device!r}")
    if batch_size == 0 or not _takes_block_rows(kernel_fn):
        return kernel_fn

    @functools.wraps(kernel_fn)
    def batched(*args, **kwargs):
        kwargs.setdefault("block_rows", int(batch_size))
        return kernel_fn(*args, **kwargs)

    return batched


def _takes_block_rows(fn):
    try:
        return "block_rows" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin)
        return False
