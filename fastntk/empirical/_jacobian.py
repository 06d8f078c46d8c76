"""Explicit Jacobian contraction (implementation 1): the cross-check of the structured path.

J(x) of shape (N, O, P) is formed by reverse mode, one output at a time, and Θ̂ = J(x1) J(x2)ᵀ by
einsum. Memory O(N·O·P + N1·N2·O²): small models only, checked before any pass.
"""

from __future__ import annotations

import numpy as np

from . import _memory
from ._net import Dense


def _jacobian(net, params, x, readout=None):
    """Per-sample Jacobian (N, O, P) by reverse mode, one output at a time (P in params order, b before W;
    a branched network's from its features, W before b: Θ̂ does not depend on the order of P)."""
    if net.branched:
        feats, f = net.features(params, x, readout)
        cols = []
        for h, c2, b2, (_, G) in feats:  # ∂z/∂W = c·h ⊗ ·, ∂z/∂b = β (c, β ≥ 0)
            cols.append((np.sqrt(c2) * h[:, None, :, None] * G[:, :, None, :]).reshape(*G.shape[:2], -1))
            if b2 is not None:
                cols.append(np.sqrt(b2) * G)
        return np.concatenate(cols, axis=2)
    f, inputs = net.forward(params, x)
    layers = net.bind(params)
    R = np.eye(f.shape[1], dtype=f.dtype) if readout is None else readout
    J = np.empty((x.shape[0], R.shape[0], _n_params(layers)), f.dtype)
    for a in range(R.shape[0]):
        delta = np.broadcast_to(R[a], f.shape).copy()  # ∂(R f)_a / ∂z at the top
        cols = []
        for k in range(len(layers) - 1, -1, -1):
            L, h = layers[k], inputs[k]
            if isinstance(L, Dense):
                if L.b is not None:
                    cols.append(L.beta * delta)
                cols.append((L.c * h[:, :, None] * delta[:, None, :]).reshape(len(h), -1))
                delta = delta @ (L.c * L.W).T
            else:
                delta = delta * L.dphi(h)
        J[:, a, :] = np.concatenate(cols[::-1], axis=1)
    return J


def _n_params(layers):
    return sum(L.W.size + (0 if L.b is None else L.b.size) for L in layers if isinstance(L, Dense))


def full(net, params, x1, x2, readout=None):
    """Θ̂[i, j, a, b] (N1, N2, O, O) = Σ_p J(x1)[i, a, p] J(x2)[j, b, p]."""
    n_out = net.out_dim if readout is None else readout.shape[0]
    n1, n2 = x1.shape[0], x1.shape[0] if x2 is None else x2.shape[0]
    jac_bytes = (n1 + (0 if x2 is None else n2)) * n_out * _n_params(net.bind(params)) * x1.dtype.itemsize
    _memory.check("the explicit Jacobians (implementation=1) and the full empirical NTK",
                  (n1, n2, n_out, n_out), x1.dtype, jac_bytes)
    J1 = _jacobian(net, params, x1, readout)
    J2 = J1 if x2 is None else _jacobian(net, params, x2, readout)
    return np.einsum("iap,jbp->ijab", J1, J2)
