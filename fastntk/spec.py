"""The typed network spec: what a network is, read by every consumer.

``fastntk.stax`` builds these frozen dataclasses; the infinite-width driver, the NumPy
reference, the backends, the finite network and the empirical NTK read them. No numerics
live here, only structure and shape inference.

A network is a tree: :class:`Serial` nodes hold their children in order, :class:`Parallel`
nodes one child per branch, :class:`Repeat` one child applied n times; the leaves are
layers (:class:`Dense`, :class:`Conv`, :class:`Pool`, :class:`GlobalPool`, :class:`LayerNorm`,
:class:`Act`, :class:`Identity`, :class:`Dropout`, :class:`Flatten`)
and the branching layers (:class:`FanOut`, :class:`FanInSum`, :class:`FanInProd`,
:class:`FanInConcat`). Between a FanOut and a FanIn the network carries a list of branches:
every node takes ``arity`` branches in and gives :func:`arity` out (a Parallel child takes
one and gives one). The parameter pytree mirrors the tree exactly as neural-tangents'
does: a list per ``Serial`` and a tuple per ``Parallel`` with one entry per child, the
child's tree with every array stacked on a new leading axis of length n per ``Repeat``
(neural-tangents' ``lax.scan``), a ``(W, b)`` pair per Dense layer and ``()`` for a layer
without parameters (every other leaf), so parameters move between the two libraries
unchanged (a Conv's ``(W, b)`` too: W of shape (*filter_shape, C_in, out_chan), b (1, ..., 1, out_chan) as
``jax.example_libraries.stax.GeneralConv`` draws it, one 1 per non-channel axis; (out_chan,) is
accepted too).

Inputs with spatial axes are (N, *S, C), channels last (neural-tangents' NHWC); ``S`` has as
many axes as a Conv's or Pool's window. :func:`window_plan` is the one place of the output-size
and padding rule (XLA's, which neural-tangents follows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

from .activations import Activation

__all__ = ["Act", "Conv", "Dense", "Dropout", "FanInConcat", "FanInProd", "FanInSum", "FanOut", "Flatten", "GlobalPool",
           "Identity", "Layer", "LayerNorm", "PADDINGS", "Parallel", "Pool", "Repeat", "Serial", "arity", "is_spatial",
           "layout", "leaves", "output_shape", "places", "readout_dim", "window_plan"]

#: The paddings of Conv and Pool: zeros beyond the border ('SAME'), none ('VALID'), wrap-around ('CIRCULAR').
PADDINGS = ("VALID", "SAME", "CIRCULAR")


@dataclass(frozen=True)
class Dense:
    """Fully-connected layer z = h W + b acting on the features (the last axis once ``spec.layout``
    has ordered the inputs; ``batch_axis`` and ``channel_axis`` name them in the caller's layout).

    out_dim : int, the width. W_std : float > 0. b_std : float ≥ 0 or None (no bias
    parameter at all, which differs from 0.0 in the 'standard' NTK). parameterization :
    'ntk' (Jacot et al. 2018: W, b ~ N(0, 1), scaled in the forward pass) or 'standard'
    (Sohl-Dickstein et al. 2020: the scale is in the initial distribution).
    """

    out_dim: int
    W_std: float
    b_std: float | None
    parameterization: str
    s: tuple = (1, 1)
    batch_axis: int = 0
    channel_axis: int = -1

    @property
    def width(self):
        """Features of the layer's output: out_dim, times s_out in the 'standard' parameterization
        (neural-tangents' ``s``: W has shape (s_in·n_in, s_out·out_dim))."""
        return self.out_dim * self.s[1] if self.parameterization == "standard" else self.out_dim

    def n_in(self, fan_in):
        """The 'standard' parameterization's input width for an input of ``fan_in`` features: fan_in / s_in."""
        return fan_in / self.s[0] if self.parameterization == "standard" else fan_in


@dataclass(frozen=True)
class Conv:
    """Convolution over the spatial axes of (N, *S, C) inputs (cross-correlation, as XLA's and
    neural-tangents' ``stax.Conv``), one weight per (tap, C_in, out_chan) shared by every position.

    out_chan : int, the output channels. filter_shape, strides : tuples of ints, one per spatial
    axis. padding : one of :data:`PADDINGS`. W_std, b_std, parameterization : as :class:`Dense`, with
    fan in C_in·prod(filter_shape): 'ntk' z = W_std/√fan_in·conv(h, W) + b_std·b, W, b ~ N(0, 1).
    """

    out_chan: int
    filter_shape: tuple
    strides: tuple
    padding: str
    W_std: float
    b_std: float | None
    parameterization: str

    @property
    def width(self):
        """Channels of the output."""
        return self.out_chan

    def fan_in(self, channels):
        """The 'standard' parameterization's fan in for an input of ``channels`` channels: C_in·|F|."""
        return channels * math.prod(self.filter_shape)


@dataclass(frozen=True)
class Pool:
    """Window pooling over the spatial axes: ``kind`` 'sum' (SumPool) or 'avg' (AvgPool: the sum
    divided by the window size, or with ``normalize_edges`` by the number of its positions inside
    the input). window_shape, strides : one int per spatial axis; padding : one of :data:`PADDINGS`."""

    kind: str
    window_shape: tuple
    strides: tuple
    padding: str
    normalize_edges: bool = False


@dataclass(frozen=True)
class GlobalPool:
    """Sum ('sum') or mean ('avg') over all spatial positions: (N, *S, C) -> (N, C)."""

    kind: str


@dataclass(frozen=True)
class LayerNorm:
    """(h − mean) / √(var + eps) over ``axis`` (non-batch axes of the input, the channel axis among
    them; a tuple of ints as the caller gave them, negative counting from the end)."""

    axis: tuple
    eps: float


@dataclass(frozen=True)
class Act:
    """A pointwise activation (see :mod:`fastntk.activations`)."""

    activation: Activation


@dataclass(frozen=True)
class Identity:
    """No-op layer: no parameters (an empty entry in the params list) and no kernel op."""


@dataclass(frozen=True)
class Serial:
    """Children applied one after the other; params are a list with one entry per child."""

    layers: tuple


@dataclass(frozen=True)
class Parallel:
    """Child k applied to branch k; params are a tuple with one entry per child."""

    layers: tuple


@dataclass(frozen=True)
class Repeat:
    """``layer`` applied n times (n ≥ 0) with parameters of its own each time; its output shape must be
    its input shape. Params are ``layer``'s tree with each array stacked: shape (n, ...)."""

    layer: object
    n: int


@dataclass(frozen=True)
class FanOut:
    """One branch in, ``num`` copies out."""

    num: int


@dataclass(frozen=True)
class FanInSum:
    """All branches in, their sum out."""


@dataclass(frozen=True)
class FanInProd:
    """All branches in, their elementwise product out."""


@dataclass(frozen=True)
class FanInConcat:
    """All branches in, their concatenation along ``axis`` out (-1: the features)."""

    axis: int


@dataclass(frozen=True)
class Flatten:
    """(N, ...) → (N, prod(...)): all non-batch axes into one (a no-op on (N, d))."""


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout (neural-tangents', ``jax.example_libraries.stax``'s): in mode 'train' each
    entry is kept with probability ``rate`` (the keep rate) and divided by it; 'test': identity."""

    rate: float
    mode: str


Layer = Union[Dense, Conv, Pool, GlobalPool, LayerNorm, Act, Identity, Serial, Parallel, Repeat, FanOut, FanInSum,
              FanInProd, FanInConcat, Flatten, Dropout]
_SPATIAL = (Conv, Pool, GlobalPool, LayerNorm)


def is_spatial(layer):
    """Whether ``layer`` holds a layer of the spatial family (Conv, Pool, GlobalPool, LayerNorm), whose
    kernels the convolutional driver computes."""
    return any(isinstance(leaf, _SPATIAL) for leaf in leaves(layer))


def window_plan(sizes, window, strides, padding):
    """Per spatial axis ``(n_out, lo)``: the output size and the padding before the first input
    (XLA's rule). VALID: n_out = ⌊(n − f)/s⌋ + 1, lo = 0; SAME and CIRCULAR: n_out = ⌈n/s⌉, the
    total padding t = max((n_out − 1)·s + f − n, 0), lo = ⌊t/2⌋. Output o at tap a reads input
    o·s + a − lo (zero outside for SAME, modulo n for CIRCULAR). ValueError where a VALID window
    is larger than the input."""
    plan = []
    for n, f, s in zip(sizes, window, strides):
        if padding == "VALID":
            if f > n:
                raise ValueError(f"a VALID window of {tuple(window)} does not fit inputs of spatial shape "
                                 f"{tuple(sizes)}")
            plan.append(((n - f) // s + 1, 0))
        else:
            n_out = -(-n // s)
            plan.append((n_out, max((n_out - 1) * s + f - n, 0) // 2))
    return tuple(plan)
_FAN_IN = (FanInSum, FanInProd, FanInConcat)


def leaves(layer):
    """The leaf layers of ``layer`` in the order they apply: Serial and Parallel trees flattened
    depth first (a Parallel's children one after the other), a Repeat's child n times."""
    if isinstance(layer, (Serial, Parallel)):
        return [leaf for child in layer.layers for leaf in leaves(child)]
    if isinstance(layer, Repeat):
        return leaves(layer.layer) * layer.n
    return [layer]


def arity(layer, m=1):
    """Branches out of ``layer`` for ``m`` branches in; ValueError where the tree does not fit.

    FanOut takes one branch, a FanIn any number, Identity any; a Parallel takes one branch per
    child and each child maps one branch to one; a Repeat's child maps one to one; every other
    leaf takes one.
    """
    if isinstance(layer, Serial):
        for child in layer.layers:
            m = arity(child, m)
        return m
    if isinstance(layer, Parallel):
        if m != len(layer.layers):
            raise ValueError(f"parallel of {len(layer.layers)} layers receives {m} branch(es); it needs one per "
                             f"layer (e.g. after FanOut({len(layer.layers)}))")
        for k, child in enumerate(layer.layers):
            if arity(child, 1) != 1:
                raise ValueError(f"layer {k} of a parallel must map one branch to one; close its FanOut with a FanIn")
        return m
    if isinstance(layer, Repeat):
        if m != 1 or arity(layer.layer, 1) != 1:
            raise ValueError("repeat's layer must map one branch to one")
        return 1
    if isinstance(layer, _FAN_IN):
        return 1
    if isinstance(layer, Identity):
        return m
    if m != 1:
        raise ValueError(f"{type(layer).__name__} receives {m} branches; it takes one (merge them with a FanIn layer "
                         "first)")
    return layer.num if isinstance(layer, FanOut) else 1


def places(layer):
    """``(r, m)`` per leaf of ``layer`` in the order they apply: the leaf takes the m branches r, ...,
    r + m − 1 of the network's list of branches (a FanOut puts its copies at r, ..., a FanIn its
    result at r); ValueError where the tree does not fit (see :func:`arity`)."""
    arity(layer)  # the tree fits
    out = []

    def walk(node, r, m):
        if isinstance(node, Serial):
            for child in node.layers:
                m = walk(child, r, m)
            return m
        if isinstance(node, Parallel):
            for k, child in enumerate(node.layers):
                walk(child, r + k, 1)
            return m
        if isinstance(node, Repeat):
            for _ in range(node.n):
                walk(node.layer, r, 1)
            return 1
        out.append((r, m))
        return arity(node, m)

    walk(layer, 0, 1)
    return out


def output_shape(layer, input_shape):
    """Shape of the output of ``layer`` for inputs of shape ``input_shape`` (a tuple); a list of
    shapes where the network ends in several branches. ValueError where the shapes do not fit."""
    return _shapes(layer, [tuple(input_shape)])[0] if arity(layer) == 1 else _shapes(layer, [tuple(input_shape)])


def _shapes(layer, shapes):
    """Shapes of the branches out of ``layer`` for branches in of ``shapes`` (a list of tuples)."""
    if isinstance(layer, Serial):
        for child in layer.layers:
            shapes = _shapes(child, shapes)
        return shapes
    if isinstance(layer, Parallel):
        return [_shapes(child, [s])[0] for child, s in zip(layer.layers, shapes)]
    if isinstance(layer, Repeat):
        out = _shapes(layer.layer, shapes)
        if layer.n and out != shapes:
            raise ValueError(f"repeat's layer maps shape {shapes[0]} to {out[0]}; it must keep the shape (use "
                             "serial(*[layer] * n) instead)")
        return shapes
    if isinstance(layer, Dense):
        return [(*shapes[0][:-1], layer.width)]
    if isinstance(layer, (Conv, Pool)):
        window = layer.filter_shape if isinstance(layer, Conv) else layer.window_shape
        name = "Conv" if isinstance(layer, Conv) else f"{layer.kind.capitalize()}Pool"
        if len(shapes[0]) != len(window) + 2:
            raise ValueError(f"{name} with a {len(window)}-D window needs inputs of shape (N, "
                             f"{', '.join('HWD'[:len(window)] if len(window) <= 3 else ['S'] * len(window))}, C) "
                             f"(channels last); got shape {shapes[0]}")
        spatial = tuple(n for n, _ in window_plan(shapes[0][1:-1], window, layer.strides, layer.padding))
        return [(shapes[0][0], *spatial, layer.width if isinstance(layer, Conv) else shapes[0][-1])]
    if isinstance(layer, GlobalPool):
        if len(shapes[0]) < 3:
            raise ValueError(f"Global{layer.kind.capitalize()}Pool needs inputs with spatial axes (N, ..., C); "
                             f"got shape {shapes[0]}")
        return [(shapes[0][0], shapes[0][-1])]
    if isinstance(layer, LayerNorm):
        nd = len(shapes[0])
        axes = {a % nd for a in layer.axis if -nd <= a < nd}
        if len(axes) != len(layer.axis) or 0 in axes or nd - 1 not in axes:
            raise ValueError(f"LayerNorm(axis={layer.axis}) needs distinct non-batch axes of inputs of shape "
                             f"{shapes[0]}, the channel axis (-1) among them")
        return shapes
    if isinstance(layer, FanOut):
        return shapes * layer.num
    if isinstance(layer, Flatten):
        return [(shapes[0][0], math.prod(shapes[0][1:]))]
    if isinstance(layer, (FanInSum, FanInProd)):
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"{type(layer).__name__} needs branches of one shape; got {shapes}")
        return shapes[:1]
    if isinstance(layer, FanInConcat):
        nd = len(shapes[0])
        if any(len(s) != nd for s in shapes) or not -nd <= layer.axis < nd:
            raise ValueError(f"FanInConcat(axis={layer.axis}) does not fit branches of shapes {shapes}")
        ax = layer.axis % nd
        if any(s[:ax] + s[ax + 1:] != shapes[0][:ax] + shapes[0][ax + 1:] for s in shapes):
            raise ValueError(f"FanInConcat(axis={layer.axis}) needs branches equal off the axis; got {shapes}")
        return [(*shapes[0][:ax], sum(s[ax] for s in shapes), *shapes[0][ax + 1:])]
    return shapes


def layout(layer, ndim):
    """The order of the axes of ``ndim``-D inputs that puts the batch first and the features last (how
    fastntk computes): a permutation tuple, the identity for neural-tangents' defaults (batch_axis=0,
    channel_axis=-1). Every Dense layer must name the same two axes (ValueError otherwise); layers
    that name axes of their own (FanInConcat, Flatten, the spatial family) need the defaults
    (NotImplementedError)."""
    axes = {(leaf.batch_axis % ndim, leaf.channel_axis % ndim) for leaf in leaves(layer) if isinstance(leaf, Dense)}
    if len(axes) > 1:
        raise ValueError(f"the Dense layers name different (batch_axis, channel_axis) for {ndim}-D inputs: "
                         f"{sorted(axes)}; a network has one layout")
    batch, channel = axes.pop() if axes else (0, ndim - 1)
    if batch == channel:
        raise ValueError(f"batch_axis and channel_axis are the same axis ({batch}) of {ndim}-D inputs")
    order = (batch, *[a for a in range(ndim) if a not in (batch, channel)], channel)
    if order != tuple(range(ndim)) and any(isinstance(leaf, (FanInConcat, Flatten, *_SPATIAL))
                                           for leaf in leaves(layer)):
        raise NotImplementedError("FanInConcat, Flatten, Conv, pooling and LayerNorm name axes of their own; with "
                                  "them, keep the Dense "
                                  "layers' defaults batch_axis=0, channel_axis=-1 (move the axes with np.moveaxis)")
    return order


def readout_dim(layer):
    """O, the width of the network's output (its last axis) when a Dense layer sets it; None without
    one. FanInConcat of the features sums the widths of its branches."""
    return _readout(layer, [None])[0]


def _readout(layer, widths):
    """The widths (None: the input's) of the branches out of ``layer``, for branches in of ``widths``."""
    if isinstance(layer, Serial):
        for child in layer.layers:
            widths = _readout(child, widths)
        return widths
    if isinstance(layer, Parallel):
        return [_readout(child, [w])[0] for child, w in zip(layer.layers, widths)]
    if isinstance(layer, Repeat):
        return _readout(layer.layer, widths) if layer.n else widths
    if isinstance(layer, (Dense, Conv)):
        return [layer.width]
    if isinstance(layer, FanOut):
        return widths * layer.num
    if isinstance(layer, FanInConcat):  # another axis than -1 may be the features too: unknown
        return [None if None in widths or layer.axis != -1 else sum(widths)]
    if isinstance(layer, _FAN_IN):
        return widths[:1]
    return widths
