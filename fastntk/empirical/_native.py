"""The empirical kernels of fastntk networks (NumPy): validation, then structured or Jacobian paths.

Called by the public front end, by the torch adapter for nn.Sequential stacks and by the training
tracker; every entry validates its inputs and checks the memory before any pass over the data.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_block_rows
from . import _axes, _jacobian, _memory, _structured
from ._axes import NtkImplementation


def prepare(net, x1, x2, params):
    """(params cast to the result dtype, x1, x2), all validated."""
    x1, x2, dtype = net.check_inputs(x1, x2)
    return net.check_params(params, x1.shape[-1], dtype), x1, x2


def ntk(net, params, x1, x2, trace, diag, implementation, readout=None, block_rows=None):
    """Θ̂(x1, x2) for canonical axes, from validated inputs (params in the dtype of x1)."""
    n1, n2 = x1.shape[0], x1.shape[0] if x2 is None else x2.shape[0]
    _axes.check_batch_axes(trace, diag, n1, n2)
    if implementation == NtkImplementation.JACOBIAN_CONTRACTION:
        return _axes.reduce_full(_jacobian.full(net, params, x1, x2, readout), trace, diag)
    out = _structured.structured(net, params, x1, x2, _axes.mode(trace, diag) or "full", readout, block_rows)
    return _axes.finish(out, trace, diag, net.out_dim if readout is None else readout.shape[0])


def ntk_fn(net, trace, diag, implementation):
    """``ntk_fn(x1, x2, params, block_rows=None)`` of a fastntk network."""
    def ntk_fn(x1, x2, params, block_rows=None):
        block_rows = check_block_rows(block_rows)
        params, x1, x2 = prepare(net, x1, x2, params)
        return ntk(net, params, x1, x2, trace, diag, implementation, block_rows=block_rows)

    ntk_fn.__doc__ = "Empirical NTK of x1 (N1, d) vs x2 (N2, d) or None at params; see empirical_ntk_fn."
    return ntk_fn


def pseudo_ntk(net, x1, x2, params, implementation, block_rows):
    """NTK of g(x) = Σ_a f_a(x)/√O, shape (N1, N2): the trace NTK with the readout R = 1ᵀ/√O."""
    params, x1, x2 = prepare(net, x1, x2, params)
    n_out = net.out_dim
    R = np.full((1, n_out), 1 / np.sqrt(n_out), dtype=x1.dtype)
    return ntk(net, params, x1, x2, (1,), (), implementation, readout=R, block_rows=block_rows)


def nngp_fn(net, trace, diag):
    """``nngp_fn(x1, x2, params)``: the outer product of the outputs f(x1) f(x2)ᵀ, traced axes averaged."""

    def nngp_fn(x1, x2, params):
        params, x1, x2 = prepare(net, x1, x2, params)
        n1, n2, n_out = x1.shape[0], x1.shape[0] if x2 is None else x2.shape[0], net.out_dim
        _axes.check_batch_axes(trace, diag, n1, n2)
        shape = (n1, n2) if (trace, diag) == ((1,), ()) else (n1, n2, n_out, n_out)
        _memory.check("the empirical NNGP", shape, x1.dtype, (n1 + n2) * n_out * x1.dtype.itemsize)
        f1 = net.forward(params, x1)[0]
        f2 = f1 if x2 is None else net.forward(params, x2)[0]
        if (trace, diag) == ((1,), ()):
            return (f1 @ f2.T) / f1.shape[1]
        return _axes.reduce_full(np.einsum("ia,jb->ijab", f1, f2), trace, diag)

    nngp_fn.__doc__ = "Empirical NNGP of x1 (N1, d) vs x2 (N2, d) or None at params; see empirical_nngp_fn."
    return nngp_fn
