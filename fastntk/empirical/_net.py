"""The finite fastntk network as the empirical NTK reads it: the one module that sees the network spec.

Everything else in :mod:`fastntk.empirical` works with :class:`Net` (the leaves of an apply_fn's
:mod:`fastntk.spec` tree, Identity leaves dropped) and the bound layers of :meth:`Net.bind`
(:class:`Dense` with its c, β, W, b; :class:`Act` with φ and φ'); forward, JVP and VJP are
:mod:`fastntk.network`'s walks. A change to the spec or the network rules changes this file only.

The caller's parameters follow init_fn's tree (one entry per child of a serial, ``(W, b)`` for a
Dense layer with W of shape (fan_in, out_dim) and b of shape (1, out_dim) or None when
b_std=None, or for a Conv layer W (*filter_shape, C_in, out_chan) and b (1, ..., 1, out_chan),
``()`` for every other layer); :meth:`Net.check_params` returns them as a flat list
aligned with the leaves, the form every other function here takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import network as _network
from .. import spec as _spec
from .._validation import check_array, check_finite, check_pair


@dataclass(frozen=True, eq=False)
class Dense:
    """A Dense layer bound to its parameters: z = c·h W + β·b (b None: no bias); or a Conv layer,
    z = c·conv(h, W) + β·b, W of shape (*filter_shape, C_in, out_chan) (only in a branched network)."""

    W: np.ndarray
    b: np.ndarray | None
    c: float
    beta: float


class Act:
    """An activation layer: φ and φ' in the dtype of their argument."""

    __slots__ = ("_activation",)

    def __init__(self, leaf):
        self._activation = leaf.activation

    def phi(self, h):
        return np.asarray(self._activation.fn(h), dtype=h.dtype)

    def dphi(self, h):
        return np.asarray(self._activation.df(h), dtype=h.dtype)


class Net:
    """The layers of a fastntk network (no parameters): forward, JVP and VJP at given parameters."""

    def __init__(self, layer_spec):
        self._spec = layer_spec
        all_leaves = _spec.leaves(layer_spec)
        #: A network with branching layers (FanOut, FanIn, Dropout, Flatten) keeps all its leaves and their
        #: places in the list of branches; the structured and Jacobian paths then read :meth:`features`.
        self.branched = any(not isinstance(leaf, (_spec.Dense, _spec.Act, _spec.Identity)) for leaf in all_leaves)
        self._kept = [self.branched or not isinstance(leaf, _spec.Identity) for leaf in all_leaves]
        self._items = tuple(leaf for leaf, k in zip(all_leaves, self._kept) if k)
        self._places = _spec.places(layer_spec) if self.branched else None
        #: Inputs (N, *S, C) with spatial axes (a Conv, pooling or LayerNorm layer), not (N, d).
        self.spatial = _spec.is_spatial(layer_spec)
        for leaf in all_leaves:
            if isinstance(leaf, _spec.Dropout) and leaf.mode == "train":
                raise ValueError("the empirical NTK of a network with Dropout in mode 'train' depends on the dropout "
                                 "mask; build the network with Dropout(rate, mode='test')")
        if _spec.arity(layer_spec) != 1:
            raise ValueError("the network ends in several branches; merge them with a FanIn layer")

    @property
    def has_dense(self):
        return any(isinstance(it, _network.PARAMETERIZED) for it in self._items)

    @property
    def out_dim(self):
        """O, the width of the last Dense layer."""
        return _spec.readout_dim(self._spec)

    def check_inputs(self, x1, x2):
        """(x1, x2, dtype) validated: (N1, d) and (N2, d) or None (:func:`check_pair`); for a network
        with spatial layers (N1, *S, C) and (N2, *S, C), the outputs (N, O) (ValueError otherwise)."""
        if not self.spatial:
            return check_pair(x1, x2)
        out = _spec.output_shape(self._spec, np.shape(x1))  # ValueError naming the input shape a layer needs
        x1 = check_array(x1, "x1", ndim=np.ndim(x1))
        x2 = None if x2 is None else check_array(x2, "x2", ndim=x1.ndim)
        if x2 is not None and x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x2 must have the shape of x1 but the batch, (N2, {', '.join(map(str, x1.shape[1:]))}); "
                             f"got x2.shape={x2.shape}")
        if len(out) != 2:
            raise ValueError(f"the empirical NTK needs outputs of shape (N, O); this network maps x1 of shape "
                             f"{x1.shape} to {out}: end it with Flatten() or GlobalAvgPool() and a Dense layer")
        dtype = np.result_type(x1.dtype, x2.dtype) if x2 is not None else x1.dtype
        return x1.astype(dtype, copy=False), None if x2 is None else x2.astype(dtype, copy=False), np.dtype(dtype)

    def refuse_spatial(self, what):
        """NotImplementedError for ``what`` (a function taking (N, d) inputs only) on a spatial network."""
        if self.spatial:
            raise NotImplementedError(f"{what} takes networks of (N, d) inputs; this one has Conv, pooling or "
                                      "LayerNorm layers (empirical_ntk_fn, empirical_nngp_fn and empirical_ntk_vp_fn "
                                      "take them)")

    def check_params(self, params, d=None, dtype=None, name="params", x_name="x1"):
        """``params`` validated for inputs with d features (None: those of the first W); a list.

        Every W and b is checked for shape, dtype and finite values, and cast to ``dtype`` if given.
        """
        if _spec.layout(self._spec, 2) != (0, 1):
            raise NotImplementedError("the empirical NTK takes inputs (N, d) with the features last; this network's "
                                      "Dense layers have batch_axis=1, channel_axis=0: transpose the inputs and "
                                      "build the network with the defaults")
        out = []
        # structure and shapes, with errors naming the entry (params[2][0]) and the input
        for (it, p, path), kept in zip(_network.check_entries(self._spec, params, d, name, x_name), self._kept):
            if not kept:
                continue
            if not isinstance(it, _network.PARAMETERIZED):
                out.append(p)
                continue
            W = _param_array(p[0], f"{path}[0] (W)", dtype)
            b = None if p[1] is None else _param_array(p[1], f"{path}[1] (b)", dtype)
            out.append((W, b))
        return out

    def bind(self, params):
        """The layers with their (checked) parameters: a tuple of :class:`Dense` and :class:`Act`
        (of a branched network: its Dense, Conv and Act leaves in order, without the other ones)."""
        layers = []
        for it, p in zip(self._items, params):
            if isinstance(it, _network.PARAMETERIZED):
                c, beta = _network.dense_coefs(it, p[0])
                layers.append(Dense(p[0], p[1], c, beta))
            elif isinstance(it, _spec.Act):
                layers.append(Act(it))
        return tuple(layers)

    def _bound(self, params):
        items = list(zip(self._items, params))
        return _network.Bound(items, self._places) if self.branched else items

    def forward(self, params, x):
        """``(f, [h_0, h_1, ...])``: outputs (N, O) and the input of every layer (of a branched
        network: the list of branches into every leaf)."""
        return _network.forward(self._bound(params), x)

    def jvp(self, params, dparams, x):
        """(f(params, x), J(x)·dparams) by forward mode (network's rule table)."""
        return _network.jvp(self._bound(params), dparams, x)

    def vjp(self, params, x, ct):
        """Σᵢ ctᵢ·∂f(xᵢ)/∂θ for cotangents ct (N, O), a flat list aligned with ``params``."""
        return _network.vjp(self._bound(params), x, ct)

    def features(self, params, x, readout=None):
        """Per Dense or Conv layer in order: (A its inputs (N, fan_in), c², β² or None, ("dense", G))
        with G = ∂(R f)/∂z (N, O, width) by one reverse pass carrying an output axis (R = I without
        ``readout`` (O', O)); and f (N, O). The structured empirical NTK's form of any network.

        A layer whose weights are shared over positions (a Conv, or a Dense layer on (N, *S, C)
        inputs) enters by its per-sample Jacobian, J_W[i, a] = c Σ_p A_i(p) ⊗ G_ia(p) and
        J_b[i, a] = β Σ_p G_ia(p) (A the patches): (ones (N, 1), 1, None, ("dense", [J_W, J_b]))."""
        net = self._bound(params)
        f, inputs = _network.forward(net, x)
        R = np.eye(f.shape[1], dtype=f.dtype) if readout is None else np.asarray(readout, dtype=f.dtype)
        feats = []

        def at_params(k, leaf, p, h, ct):  # ct (O', N, *S_out, width)
            c, beta = _network.dense_coefs(leaf, p[0])
            G = ct.transpose(1, 0, *range(2, ct.ndim))
            if h.ndim == 2:
                feats.append((h, c * c, None if p[1] is None else beta * beta, ("dense", np.ascontiguousarray(G))))
            else:
                A = _network.conv_patches(leaf, h) if isinstance(leaf, _spec.Conv) else h
                n, o, width = G.shape[0], G.shape[1], G.shape[-1]
                A, G = A.reshape(n, -1, A.shape[-1]), G.reshape(n, o, -1, width)
                J = [c * np.einsum("ipu,iapk->iauk", A, G).reshape(n, o, -1)]
                if p[1] is not None:
                    J.append(beta * G.sum(axis=2))
                feats.append((np.ones((n, 1), f.dtype), 1.0, None, ("dense", np.concatenate(J, axis=2))))
            return _network.input_cotangent(leaf, p, h, ct)

        _network.backward(net, inputs, np.broadcast_to(R[:, None, :], (R.shape[0], *f.shape)), None, at_params)
        return feats[::-1], f

    def feature_bytes(self, params, x, n, n_out):
        """Bytes that :meth:`features` holds for n points like x[:1] (found by one forward pass of it):
        f, and per Dense or Conv layer its A and G (or, shared over positions, its J_W and J_b)."""
        _, inputs = _network.forward(self._bound(params), x[:1])
        per_row = n_out
        for (it, p), h in zip(self._bound(params), inputs):
            if isinstance(it, _network.PARAMETERIZED):
                if h.ndim == 2:
                    per_row += h.shape[1] + n_out * it.width
                else:
                    per_row += 1 + n_out * (np.size(p[0]) + (0 if p[1] is None else it.width))
        return n * per_row * x.dtype.itemsize


def _param_array(value, name, dtype):
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array; got dtype {arr.dtype}")
    check_finite(arr, name)
    return arr if dtype is None else arr.astype(dtype, copy=False)


def is_network(f):
    """True if ``f`` carries a fastntk network spec (``f.spec``)."""
    return _find_network(f) is not None


def network_of(f, name="f"):
    """The :class:`Net` behind the apply_fn ``f``; TypeError naming ``name`` otherwise."""
    network = _find_network(f)
    if network is None:
        raise TypeError(
            f"{name} must be the apply_fn of a fastntk.stax network; "
            f"got {getattr(f, '__qualname__', type(f).__name__)}"
        )
    net = Net(network)
    if not net.has_dense:
        raise ValueError(f"{name}'s network has no Dense or Conv layer, hence no parameters and no NTK")
    return net


def _find_network(f):
    layer_spec = getattr(f, "spec", None)
    return layer_spec if isinstance(layer_spec, _spec.Layer.__args__) else None


def standard_dense(out_dim, bias):
    """A Dense layer z = h W + b ('standard' parameterization, c = β = 1), for nn.Linear."""
    return _spec.Dense(int(out_dim), 1.0, 0.0 if bias else None, "standard")


def network(layers):
    """A :class:`Net` of layers from :func:`standard_dense` and fastntk Activations, applied in order."""
    return Net(_spec.Serial(tuple(it if isinstance(it, _spec.Dense) else _spec.Act(it) for it in layers)))
