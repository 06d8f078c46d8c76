"""The typed network spec: what a network is, read by every consumer.

``fastntk.stax`` builds these frozen dataclasses; the infinite-width driver, the NumPy
reference, the backends, the finite network and the empirical NTK read them. No numerics
live here, only structure and shape inference.

A network is a tree: :class:`Serial` nodes hold their children in order; the leaves are
layers (:class:`Dense`, :class:`Act`, :class:`Identity`). The parameter pytree mirrors the
tree exactly as neural-tangents' does: a list per ``Serial`` with one entry per child, a
``(W, b)`` pair per Dense layer and ``()`` for a layer without parameters (Identity and
activations included), so parameters move between the two libraries unchanged.
Convolutions, pooling, branching (FanOut/FanInSum/FanInConcat/Parallel) and LayerNorm join
as further leaf and node types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .activations import Activation

__all__ = ["Act", "Dense", "Identity", "Layer", "Serial", "is_gaussian", "leaves", "output_shape", "readout_dim"]


@dataclass(frozen=True)
class Dense:
    """Fully-connected layer z = h W + b acting on the last axis.

    out_dim : int, the width. W_std : float > 0. b_std : float ≥ 0 or None (no bias
    parameter at all, which differs from 0.0 in the 'standard' NTK). parameterization :
    'ntk' (Jacot et al. 2018: W, b ~ N(0, 1), scaled in the forward pass) or 'standard'
    (Sohl-Dickstein et al. 2020: the scale is in the initial distribution).
    """

    out_dim: int
    W_std: float
    b_std: float | None
    parameterization: str


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


Layer = Union[Dense, Act, Identity, Serial]


def leaves(layer):
    """The leaf layers of ``layer`` in the order they apply (Serial trees flattened)."""
    if isinstance(layer, Serial):
        return [leaf for child in layer.layers for leaf in leaves(child)]
    return [layer]


def output_shape(layer, input_shape):
    """Shape of the output of ``layer`` for inputs of shape ``input_shape`` (a tuple)."""
    shape = tuple(input_shape)
    for leaf in leaves(layer):
        if isinstance(leaf, Dense):
            shape = (*shape[:-1], leaf.out_dim)
    return shape


def readout_dim(layer):
    """O, the width of the last Dense layer (the network's output size); None without one."""
    dense = [leaf for leaf in leaves(layer) if isinstance(leaf, Dense)]
    return dense[-1].out_dim if dense else None


def is_gaussian(layer):
    """Whether the outputs of ``layer`` are Gaussian given its inputs (neural-tangents' ``is_gaussian``):
    its last layer that changes the kernel is affine (Dense). The raw inputs are not."""
    acting = [leaf for leaf in leaves(layer) if not isinstance(leaf, Identity)]
    return bool(acting) and isinstance(acting[-1], Dense)
