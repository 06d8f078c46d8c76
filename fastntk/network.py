"""The finite network over a spec: init, forward, JVP and VJP, one rule table per layer type.

Every consumer of the finite network walks the spec through this module: ``apply_fn``,
the structured empirical NTK, ``linearize`` and ``train_and_track``. A rule holds, for one
leaf type of :mod:`fastntk.spec`,

* ``init(layer, gen, shape) -> (shape, p)``: parameters as neural-tangents draws them
  (``gen.standard_normal`` is NumPy's, or, for a JAX key, :class:`_KeyDraws`);
* ``apply(layer, p, h) -> h'``: the forward map;
* ``jvp(layer, p, dp, h, dh) -> (h', dh')``: forward mode (``dh`` None: the input carries
  no tangent, e.g. the network's inputs);
* ``vjp(layer, p, h, ct) -> (grad_p, ct_in)``: reverse mode, ``ct`` the cotangent of h'.

Conventions are neural-tangents' (``stax.Dense``): in the 'ntk' parameterization W and b
are raw N(0, 1) draws and z = (W_std/√fan_in)·h W + b_std·b; in the 'standard' one,
init scales W by W_std/√fan_in and b by b_std, and z = h W + b. The array operations are
written against the array namespace of their inputs (``array_api_compat``), activations'
φ and φ' too (see :mod:`fastntk.activations`): JAX or PyTorch inputs and parameters give
their own arrays out, which ``jax.grad``/``jit``/``vmap`` and torch autograd trace through.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import sys
from typing import Callable, NamedTuple

import numpy as np
from array_api_compat import array_namespace

from .spec import Act, Dense, Identity, Serial, leaves

__all__ = ["RULES", "apply", "check_entries", "check_params", "dense_coefs", "entries", "forward", "generator", "init", "jvp",
           "pairs", "unflatten", "vjp"]


def generator(rng):
    """A numpy Generator from a seed, a Generator, a SeedSequence or a jax-style key array."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (np.random.SeedSequence, numbers.Integral)) or rng is None:
        return np.random.default_rng(rng)
    key = np.asarray(rng)
    if key.dtype.kind in "ui" and key.ndim == 1:
        return np.random.default_rng([int(k) for k in key])
    raise TypeError(f"rng must be an int seed, a numpy Generator or a key array; got {type(rng).__name__}")


def _jax_key(rng):
    """rng if it is a JAX PRNG key (a jax.Array), else None; never imports jax itself."""
    jax = sys.modules.get("jax")
    return rng if jax is not None and isinstance(rng, jax.Array) else None


class _KeyDraws:
    """One leaf's N(0, 1) draws as neural-tangents 0.6.5 makes them from its key:
    ``k1, k2 = random.split(key)``, the first array from k1, the second from k2."""

    def __init__(self, key):
        self._key, self._keys = key, None

    def standard_normal(self, shape):
        from jax import random

        if self._keys is None:
            self._keys = iter(random.split(self._key))
        return random.normal(next(self._keys), shape)


def _init_nt(layer, key, shape):
    """neural-tangents' init walk: a Serial splits ``key, layer_key = random.split(key)`` once
    per child (parameter-free children included); a leaf draws from the key it is given."""
    if not isinstance(layer, Serial):
        return RULES[type(layer)].init(layer, _KeyDraws(key), shape)
    from jax import random

    params = []
    for child in layer.layers:
        key, layer_key = random.split(key)
        shape, p = _init_nt(child, layer_key, shape)
        params.append(p)
    return shape, params


def _threefry_unpartitioned():
    """The context in which jax draws neural-tangents' bits: jax ≥ 0.5 made
    ``jax_threefry_partitionable`` True by default, which changes every random.normal."""
    import jax

    return jax.threefry_partitionable(False) if hasattr(jax, "threefry_partitionable") else contextlib.nullcontext()


def dense_coefs(layer, W):
    """(c, β) with z = c·h W + β·b for the Dense ``layer`` and its weights W (fan_in, out).

    'ntk': c = W_std/√fan_in, β = b_std (W, b are the raw N(0, 1) draws, neural-tangents'
    Dense.apply_fn); 'standard': c = β = 1 (init already scaled W and b).
    """
    if layer.parameterization == "ntk":
        return float(layer.W_std / math.sqrt(W.shape[0])), float(layer.b_std or 0.0)
    return 1.0, 1.0


# --------------------------------------------------------------------------- rules
class Rule(NamedTuple):
    init: Callable
    apply: Callable
    jvp: Callable
    vjp: Callable


def _dense_init(layer, gen, shape):
    fan_in = shape[-1]
    W = gen.standard_normal((fan_in, layer.out_dim))
    b = None if layer.b_std is None else gen.standard_normal((1, layer.out_dim))
    if layer.parameterization == "standard":  # init scales; apply does not
        W = W * float(layer.W_std / np.sqrt(fan_in))
        b = None if b is None else b * layer.b_std
    return (*shape[:-1], layer.out_dim), (W, b)


def _dense_apply(layer, p, h):
    W, b = p
    c, beta = dense_coefs(layer, W)
    z = h @ W if c == 1.0 else c * (h @ W)
    return z if b is None else z + (beta * b if beta != 1.0 else b)


def _dense_jvp(layer, p, dp, h, dh):
    (W, b), (dW, db) = p, dp
    c, beta = dense_coefs(layer, W)
    tangent = h @ dW if dh is None else dh @ W + h @ dW
    z, dz = c * (h @ W), c * tangent
    if b is not None:
        z, dz = z + beta * b, dz + beta * db
    return z, dz


def _dense_vjp(layer, p, h, ct):
    W, b = p
    xp = array_namespace(h, ct)
    c, beta = dense_coefs(layer, W)
    h2, ct2 = xp.reshape(h, (-1, h.shape[-1])), xp.reshape(ct, (-1, ct.shape[-1]))
    grad = (c * (h2.T @ ct2), None if b is None else beta * xp.sum(ct2, axis=0, keepdims=True))
    return grad, ct @ (c * W).T


def _of_dtype(y, h):
    """y (φ or φ' of h) in h's dtype and namespace (a NumPy φ may widen float32 or give a scalar)."""
    if isinstance(h, np.ndarray):
        return np.asarray(y, dtype=h.dtype)
    return y if y.dtype == h.dtype else array_namespace(h).astype(y, h.dtype)


def _act_apply(layer, p, h):
    return _of_dtype(layer.activation.fn(h), h)


def _act_prime(layer, h):
    return _of_dtype(layer.activation.df(h), h)


def _act_jvp(layer, p, dp, h, dh):
    return _act_apply(layer, p, h), None if dh is None else _act_prime(layer, h) * dh


def _act_vjp(layer, p, h, ct):
    return (), ct * _act_prime(layer, h)


def _no_params_init(layer, gen, shape):
    return shape, ()


RULES = {
    Dense: Rule(_dense_init, _dense_apply, _dense_jvp, _dense_vjp),
    Act: Rule(_no_params_init, _act_apply, _act_jvp, _act_vjp),
    Identity: Rule(_no_params_init, lambda layer, p, h: h, lambda layer, p, dp, h, dh: (h, dh),
                   lambda layer, p, h, ct: ((), ct)),
}


# --------------------------------------------------------------------------- the parameter tree
def pairs(layer, params):
    """[(leaf, p)] in the order the leaves apply, pairing ``params`` (a tree as init returns)
    with the spec; ValueError naming the entry (``params[2]``) whose structure is off."""
    return [(leaf, p) for leaf, p, _ in entries(layer, params, "params")]


def entries(layer, params, path="params"):
    """[(leaf, p, path)]: pairs(...) with each entry's place in the tree (``params[1][0]``), the
    name the caller's argument is given by ``path``."""
    if isinstance(layer, Serial):
        if not isinstance(params, (list, tuple)) or len(params) != len(layer.layers):
            got = f"{len(params)} entries" if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(f"{path} must be a list with one entry per layer ({len(layer.layers)}); got {got}")
        return [leaf for k, child in enumerate(layer.layers) for leaf in entries(child, params[k], f"{path}[{k}]")]
    if isinstance(layer, Dense):
        if not isinstance(params, (list, tuple)) or len(params) != 2:
            raise ValueError(f"{path} must be a (W, b) pair for a Dense layer; got {type(params).__name__}")
    elif not isinstance(params, (list, tuple)) or len(params):
        raise ValueError(f"{path} must be () for a {type(layer).__name__} layer, which has no parameters; "
                         f"got {type(params).__name__}")
    return [(layer, params, path)]


def unflatten(layer, flat):
    """The params tree of ``layer`` from a flat list aligned with ``leaves(layer)`` (inverse of pairs)."""
    it = iter(flat)

    def build(node):
        return [build(child) for child in node.layers] if isinstance(node, Serial) else next(it)

    return build(layer)


def check_entries(layer, params, d=None, name="params", x_name="inputs"):
    """entries(layer, params, name), with every Dense entry's shapes checked for ``x_name`` with d
    features (None: whatever the first W takes); ValueError naming the entry and the input."""
    out, fan_in, first = entries(layer, params, name), d, True
    for leaf, p, path in out:
        if not isinstance(leaf, Dense):
            continue
        W, b = p
        shape = np.shape(W)
        if shape[1:] != (leaf.out_dim,) or (fan_in is not None and shape[0] != fan_in):
            want = f"({'fan_in' if fan_in is None else fan_in}, {leaf.out_dim})"
            where = f" for {x_name} with {d} features" if first and d is not None else ""
            why = (f" ({x_name} has {d} features but the first Dense layer expects {shape[0]})"
                   if where and len(shape) == 2 and shape[1:] == (leaf.out_dim,) else "")
            raise ValueError(f"{path}[0] (W) must have shape {want}{where}; got {shape}{why}")
        if (b is None) != (leaf.b_std is None) or (b is not None and np.shape(b) != (1, leaf.out_dim)):
            want = "None (b_std=None)" if leaf.b_std is None else f"of shape {(1, leaf.out_dim)}"
            raise ValueError(f"{path}[1] (b) must be {want}; got {None if b is None else np.shape(b)}")
        fan_in, first = leaf.out_dim, False
    return out


def check_params(layer, params, d):
    """pairs(layer, params), the shapes checked by :func:`check_entries` for inputs with d features."""
    return [(leaf, p) for leaf, p, _ in check_entries(layer, params, d)]


# --------------------------------------------------------------------------- the walks
def init(layer, rng, input_shape):
    """(output_shape, params) for inputs of shape ``input_shape``.

    ``rng`` a seed or Generator: NumPy arrays drawn by it. A JAX PRNG key
    (``jax.random.PRNGKey(k)``): the JAX arrays neural-tangents 0.6.5 draws from that key
    (its split per Serial child and per Dense, and its threefry bits), in jax's default dtype.
    """
    key = _jax_key(rng)
    if key is not None:
        with _threefry_unpartitioned():
            return _init_nt(layer, key, tuple(input_shape))
    gen, shape, flat = generator(rng), tuple(input_shape), []
    for leaf in leaves(layer):
        shape, p = RULES[type(leaf)].init(leaf, gen, shape)
        flat.append(p)
    return shape, unflatten(layer, flat)


def forward(net, x):
    """Outputs and the input of every leaf: ``(f, [h_0, h_1, ...])``; ``net`` = pairs(...)."""
    inputs, h = [], x
    for leaf, p in net:
        inputs.append(h)
        h = RULES[type(leaf)].apply(leaf, p, h)
    return h, inputs


def apply(net, x):
    """Outputs of the network ``net`` = pairs(layer, params) on x."""
    for leaf, p in net:
        x = RULES[type(leaf)].apply(leaf, p, x)
    return x


def jvp(net, dparams, x):
    """(f(x), J(x)·dparams) by forward mode; dparams a flat list aligned with ``net``."""
    h, dh = x, None
    for (leaf, p), dp in zip(net, dparams):
        h, dh = RULES[type(leaf)].jvp(leaf, p, dp, h, dh)
    return h, dh


def vjp(net, x, ct):
    """Σᵢ ctᵢ·∂f(xᵢ)/∂θ, a flat list of gradients aligned with ``net`` (reverse mode)."""
    _, inputs = forward(net, x)
    grads = [()] * len(net)
    for k in range(len(net) - 1, -1, -1):
        leaf, p = net[k]
        grads[k], ct = RULES[type(leaf)].vjp(leaf, p, inputs[k], ct)
    return grads
