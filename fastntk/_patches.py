"""Windows over the spatial axes of (..., *S, C) arrays as explicit shifted slices, and their transposes.

A window layer (Conv, Pool) with ``k`` spatial axes reads the axes ``-(k + 1), ..., -2`` of its input
(any leading axes, the batch among them, ride along; so do a cotangent's extra output axes). Per
spatial axis, :func:`fastntk.spec.window_plan` gives (n_out, lo); output o at tap a reads input
o·s + a − lo (XLA's rule): zero outside for SAME, modulo n for CIRCULAR. Here that is

* :func:`pad`: the input extended to the L = n + t positions the taps read (t the total padding),
  zeros (SAME) or wrapped copies (CIRCULAR) outside;
* :func:`taps`: one strided slice of the padded input per tap, (..., *S_out, C) each, taps in
  row-major order of the window (the order of a Conv weight's leading axes), cross-correlation;

and their transposes :func:`untap` and :func:`unpad`, which map a cotangent of the slices back
onto the input. Array operations go through the namespace of the arrays (``array_api_compat``).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace, device

from .spec import window_plan


class Axis(NamedTuple):
    """One spatial axis of a window layer: input size n, window f, stride s, output size n_out,
    padding before the first input lo, padded length L (the positions the taps read)."""

    n: int
    f: int
    s: int
    n_out: int
    lo: int
    L: int


def plan(sizes, window, strides, padding):
    """The :class:`Axis` of every spatial axis, from :func:`fastntk.spec.window_plan`."""
    out = []
    for (n_out, lo), n, f, s in zip(window_plan(sizes, window, strides, padding), sizes, window, strides):
        out.append(Axis(n, f, s, n_out, lo, n if padding == "VALID" else max(n, (n_out - 1) * s + f)))
    return out


def _zeros(x, ax, size):
    """Zeros shaped like x with ``size`` entries along axis ``ax``, x's dtype and device."""
    xp = array_namespace(x)
    shape = list(x.shape)
    shape[ax] = size
    return xp.zeros(tuple(shape), dtype=x.dtype, device=device(x))


def _slice(x, ax, start, stop, step=1):
    index = [slice(None)] * x.ndim
    index[ax] = slice(start, stop, step)
    return x[tuple(index)]


def _axes(axes):
    """(axis, Axis) for each spatial axis, the axis counted from the end (the channels are -1)."""
    return [(k - len(axes) - 1, a) for k, a in enumerate(axes)]


def pad(h, axes, padding):
    """h (..., *S, C) extended to (..., *L, C): along each axis input index j − lo at padded position
    j, zero where it falls outside (SAME) or taken modulo n (CIRCULAR); VALID: h itself."""
    xp = array_namespace(h)
    for ax, a in _axes(axes):
        if padding == "SAME":
            h = xp.concat([_zeros(h, ax, a.lo), h, _zeros(h, ax, a.L - a.n - a.lo)], axis=ax)
        elif padding == "CIRCULAR":
            index = xp.asarray((np.arange(a.L) - a.lo) % a.n, device=device(h))
            h = xp.take(h, index, axis=h.ndim + ax)
    return h


def unpad(ct, axes, padding):
    """The transpose of :func:`pad`: ct (..., *L, C) onto (..., *S, C) (SAME drops the padding,
    CIRCULAR adds each wrapped copy onto the position it copies)."""
    xp = array_namespace(ct)
    for ax, a in _axes(axes):
        if padding == "SAME":
            ct = _slice(ct, ax, a.lo, a.lo + a.n)
        elif padding == "CIRCULAR":  # padded j holds input (j − lo) mod n: shift by (−lo) mod n, fold by n
            z = (-a.lo) % a.n
            m = -(-(a.L + z) // a.n)
            ct = xp.concat([_zeros(ct, ax, z), ct, _zeros(ct, ax, m * a.n - a.L - z)], axis=ax)
            ct = xp.sum(xp.reshape(ct, (*ct.shape[:ct.ndim + ax], m, a.n, *ct.shape[ct.ndim + ax + 1:])), axis=ax - 1)
    return ct


def offsets(axes):
    """The taps of the window: every offset tuple (a_1, ..., a_k), row-major."""
    return list(itertools.product(*[range(a.f) for a in axes]))


def taps(hp, axes):
    """One strided slice (..., *S_out, C) of the padded hp (..., *L, C) per tap (row-major):
    position o of tap (a_1, ..., a_k) is hp at (o_1·s_1 + a_1, ..., o_k·s_k + a_k)."""
    out = []
    for offset in offsets(axes):
        x = hp
        for (ax, a), d in zip(_axes(axes), offset):
            x = _slice(x, ax, d, d + (a.n_out - 1) * a.s + 1, a.s)
        out.append(x)
    return out


def untap(cts, axes):
    """The transpose of :func:`taps`: the cotangents (..., *S_out, C) of the taps summed onto the
    padded positions they read, (..., *L, C)."""
    xp = array_namespace(*cts)
    total = None
    for offset, x in zip(offsets(axes), cts):
        for (ax, a), d in zip(_axes(axes), offset):
            if a.s > 1:  # s − 1 zeros after every output position
                x = xp.stack([x, *[xp.zeros_like(x)] * (a.s - 1)], axis=ax)
                x = xp.reshape(x, (*x.shape[:x.ndim + ax - 1], a.n_out * a.s, *x.shape[x.ndim + ax + 1:]))
                x = _slice(x, ax, 0, (a.n_out - 1) * a.s + 1)
            x = xp.concat([_zeros(x, ax, d), x, _zeros(x, ax, a.L - d - (a.n_out - 1) * a.s - 1)], axis=ax)
        total = x if total is None else total + x
    return total
