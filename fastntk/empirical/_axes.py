"""Output axes of the empirical NTK: neural-tangents' trace/diagonal axes and implementation enum.

A kernel of f: (N, d) -> (N, O) has the full form Θ̂[i, j, a, b] (N1, N2, O, O). ``trace_axes``
contract an axis pair (batch 0 or output 1) and *average* it (divide by its size), as
neural-tangents does; ``diagonal_axes`` keep only its diagonal. Every path computes one of three
modes directly ('trace': Σ_a Θ̂[i, j, a, a], 'diag': Θ̂[i, j, a, a], 'full') and :func:`finish`
turns it into the caller's axes.
"""

from __future__ import annotations

import enum
import numbers
from collections.abc import Iterable

import numpy as np


class NtkImplementation(enum.IntEnum):
    """neural-tangents' enum; AUTO and NTK_VECTOR_PRODUCTS run the structured path."""

    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


def check_implementation(implementation):
    try:
        return NtkImplementation(implementation)
    except (ValueError, TypeError):
        raise ValueError(f"implementation must be one of 0, 1, 2, 3 (NtkImplementation); got {implementation!r}") from None


def check_vmap_axes(vmap_axes):
    if vmap_axes not in (None, 0, (0, 0, {}), (0, 0, None)):
        raise ValueError(f"vmap_axes must be None or 0 (inputs and outputs batched along axis 0); got {vmap_axes!r}")


def canonical_axes(trace_axes, diagonal_axes):
    """Canonical (trace, diagonal) axes of the 2-D output (batch axis 0, output axis 1)."""
    out = []
    for name, axes in (("trace_axes", trace_axes), ("diagonal_axes", diagonal_axes)):
        seq = (axes,) if isinstance(axes, numbers.Integral) else axes
        if not isinstance(seq, Iterable) or isinstance(seq, str):
            raise TypeError(f"{name} must be an int or a tuple of ints; got {axes!r}")
        seq = tuple(seq)
        if any(isinstance(a, bool) or not isinstance(a, numbers.Integral) or not -2 <= a <= 1 for a in seq):
            raise ValueError(f"{name} must hold axes of the (N, O) outputs, in [-2, 1]; got {axes!r}")
        out.append(tuple(sorted({int(a) % 2 for a in seq})))
    if set(out[0]) & set(out[1]):
        raise ValueError(f"trace_axes and diagonal_axes must be disjoint; got {trace_axes!r} and {diagonal_axes!r}")
    return out[0], out[1]


def mode(trace, diag):
    """'trace', 'diag' or 'full': the form a path computes for canonical axes (None: full, then reduced)."""
    return {((1,), ()): "trace", ((), (1,)): "diag", ((), ()): "full"}.get((trace, diag))


def check_batch_axes(trace, diag, n1, n2):
    """Axis 0 traced or kept diagonal pairs x1ᵢ with x2ᵢ: it needs N1 == N2."""
    if (0 in trace or 0 in diag) and n1 != n2:
        raise ValueError(f"axis 0 in trace_axes or diagonal_axes needs N1 == N2; got N1={n1}, N2={n2}")


def reduce_full(full, trace, diag, xp=np):
    """Apply trace/diagonal axes to a full kernel (N1, N2, O, O); traced axes are averaged.

    ``xp``: the namespace of ``full`` (NumPy, or jax.numpy for the JAX paths)."""
    check_batch_axes(trace, diag, full.shape[0], full.shape[1])
    sub_in, sub_out = "", ""
    for ax, (l1, l2) in enumerate((("i", "j"), ("a", "b"))):
        tied = ax in trace or ax in diag
        sub_in += l1 + (l1 if tied else l2)
        sub_out += "" if ax in trace else l1 if tied else l1 + l2
    size = float(np.prod([full.shape[2 * ax] for ax in trace]))
    return xp.einsum(f"{sub_in}->{sub_out}", full) / size


def result_shape(trace, diag, n1, n2, n_out):
    """Shape of the kernel for canonical axes: per axis (batch: N1, N2; output: O, O) both sizes,
    one (diagonal) or none (traced), in the order of :func:`reduce_full`."""
    shape = ()
    for ax, sizes in enumerate(((n1, n2), (n_out, n_out))):
        shape += () if ax in trace else sizes[:1] if ax in diag else sizes
    return shape


def finish(out, trace, diag, n_out):
    """The kernel for the caller's axes from ``out`` computed in ``mode(trace, diag) or 'full'``.

    'trace' holds Σ_a Θ̂[i, j, a, a] and is averaged over the O = ``n_out`` outputs in place.
    """
    m = mode(trace, diag)
    if m is None:
        return reduce_full(out, trace, diag)
    if m == "trace":
        out /= out.dtype.type(n_out)
    return out
