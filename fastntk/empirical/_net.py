"""The finite fastntk network as the empirical NTK reads it: the one module that sees stax's internals.

Everything else in :mod:`fastntk.empirical` works with :class:`Net` (the layers of an apply_fn,
without parameters) and the bound layers of :meth:`Net.bind` (:class:`Dense` with its c, β, W, b;
:class:`Act` with φ and φ'), so a change to stax's representation of a network changes this file only.

Parameters follow init_fn's layout: one entry per layer, ``(W, b)`` for a Dense layer (W of shape
(fan_in, out_dim), b of shape (1, out_dim) or None when b_std=None), ``()`` for an activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import activations as _act
from .._validation import check_finite
from ..stax import _DenseSpec, _Network, dense_coefs, forward as _forward


@dataclass(frozen=True, eq=False)
class Dense:
    """A Dense layer bound to its parameters: z = c·h W + β·b (b None: no bias)."""

    W: np.ndarray
    b: np.ndarray | None
    c: float
    beta: float


class Act:
    """An activation layer: φ and φ' in the dtype of their argument."""

    __slots__ = ("_item",)

    def __init__(self, item):
        self._item = item

    def phi(self, h):
        return np.asarray(self._item.fn(h), dtype=h.dtype)

    def dphi(self, h):
        return np.asarray(_act.derivative(self._item.layer)(h), dtype=h.dtype)


class Net:
    """The layers of a fastntk network (no parameters): forward, JVP and VJP at given parameters."""

    def __init__(self, network):
        self._items = network.items

    @property
    def has_dense(self):
        return any(isinstance(it, _DenseSpec) for it in self._items)

    @property
    def out_dim(self):
        """O, the width of the last Dense layer."""
        return [it for it in self._items if isinstance(it, _DenseSpec)][-1].out_dim

    def check_params(self, params, d=None, dtype=None, name="params", x_name="x1"):
        """``params`` validated for inputs with d features (None: those of the first W); a list.

        Every W and b is checked for shape, dtype and finite values, and cast to ``dtype`` if given.
        """
        items = self._items
        if not isinstance(params, (list, tuple)) or len(params) != len(items):
            got = f"{len(params)} entries" if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(f"{name} must be a list with one entry per layer ({len(items)}), as init_fn returns; "
                             f"got {got}")
        out, fan_in, first = [], d, True
        for k, (it, p) in enumerate(zip(items, params)):
            if not isinstance(it, _DenseSpec):
                out.append(p)
                continue
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise ValueError(f"{name}[{k}] must be a (W, b) pair for a Dense layer; got {type(p).__name__}")
            shape = np.shape(p[0])
            if shape[1:] != (it.out_dim,) or (fan_in is not None and shape[0] != fan_in):
                want = f"({'fan_in' if fan_in is None else fan_in}, {it.out_dim})"
                hint = f" for {x_name} with {d} features" if first and d is not None else ""
                raise ValueError(f"{name}[{k}][0] (W) must have shape {want}{hint}; got {shape}")
            W = _param_array(p[0], f"{name}[{k}][0] (W)", dtype)
            if (p[1] is None) != (it.b_std is None) or (p[1] is not None and np.shape(p[1]) != (1, it.out_dim)):
                want = "None (b_std=None)" if it.b_std is None else f"of shape {(1, it.out_dim)}"
                raise ValueError(f"{name}[{k}][1] (b) must be {want}; got {None if p[1] is None else np.shape(p[1])}")
            b = None if p[1] is None else _param_array(p[1], f"{name}[{k}][1] (b)", dtype)
            out.append((W, b))
            fan_in, first = it.out_dim, False
        return out

    def bind(self, params):
        """The layers with their (checked) parameters: a tuple of :class:`Dense` and :class:`Act`."""
        layers = []
        for it, p in zip(self._items, params):
            if isinstance(it, _DenseSpec):
                c, beta = dense_coefs(it, p[0])
                layers.append(Dense(p[0], p[1], c, beta))
            else:
                layers.append(Act(it))
        return tuple(layers)

    def forward(self, params, x):
        """``(f, [h_0, h_1, ...])``: outputs (N, O) and the input of every layer."""
        return _forward(self._items, params, x)

    def jvp(self, params, dparams, x):
        """(f(params, x), J(x)·dparams) by forward mode through the stack: two GEMMs per Dense."""
        h, dh = x, None
        for L, dp in zip(self.bind(params), dparams):
            if isinstance(L, Dense):
                dW, db = dp
                tangent = h @ dW if dh is None else dh @ L.W + h @ dW
                h, dh = L.c * (h @ L.W), L.c * tangent
                if L.b is not None:
                    h, dh = h + L.beta * L.b, dh + L.beta * db
            else:
                dh = None if dh is None else L.dphi(h) * dh
                h = L.phi(h)
        return h, dh

    def vjp(self, params, x, ct):
        """Σᵢ ctᵢ·∂f(xᵢ)/∂θ for cotangents ct (N, O), as a params-shaped list."""
        _, inputs = self.forward(params, x)
        layers = self.bind(params)
        grads, delta = [() for _ in params], ct
        for k in range(len(layers) - 1, -1, -1):
            L, h = layers[k], inputs[k]
            if isinstance(L, Dense):
                grads[k] = (L.c * (h.T @ delta), None if L.b is None else L.beta * delta.sum(0, keepdims=True))
                delta = delta @ (L.c * L.W).T
            else:
                delta = delta * L.dphi(h)
        return grads


def _param_array(value, name, dtype):
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array; got dtype {arr.dtype}")
    check_finite(arr, name)
    return arr if dtype is None else arr.astype(dtype, copy=False)


def is_network(f):
    """True if ``f`` carries a fastntk network (``f.network`` or one in its closure)."""
    return _find_network(f) is not None


def network_of(f, name="f"):
    """The :class:`Net` behind the apply_fn ``f``; TypeError naming ``name`` otherwise."""
    network = _find_network(f)
    if network is None:
        raise TypeError(
            f"{name} must be the apply_fn of a fastntk.stax network (fully-connected Dense and activation layers); "
            f"got {getattr(f, '__qualname__', type(f).__name__)}"
        )
    net = Net(network)
    if not net.has_dense:
        raise ValueError(f"{name}'s network has no Dense layer, hence no parameters and no NTK")
    return net


def _find_network(f):
    net = getattr(f, "network", None)
    if isinstance(net, _Network):
        return net
    for cell in getattr(f, "__closure__", None) or ():
        try:
            val = cell.cell_contents
        except ValueError:  # empty cell
            continue
        if isinstance(val, _Network):
            return val
    return None


def standard_dense(out_dim, bias):
    """A Dense layer z = h W + b ('standard' parameterization, c = β = 1), for nn.Linear."""
    return _DenseSpec(int(out_dim), 1.0, 0.0 if bias else None, "standard")


def network(layers):
    """A :class:`Net` of layers from :func:`standard_dense` and fastntk Activations."""
    return Net(_Network(layers))
