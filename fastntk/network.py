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

from .spec import (Act, Dense, Dropout, FanInConcat, FanInProd, FanInSum, FanOut, Flatten, Identity, Parallel, Repeat,
                   Serial, _shapes, arity, leaves, places)

__all__ = ["RULES", "map_dense", "Bound", "apply", "backward", "check_entries", "check_params", "dense_coefs", "entries", "forward",
           "generator", "init", "jvp", "leaf_keys", "pairs", "spec_shapes", "unflatten", "vjp"]


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


def _init_nt(layer, key, shapes):
    """neural-tangents' init walk over the branches' ``shapes`` (a list): a Serial splits ``key,
    layer_key = random.split(key)`` once per child (parameter-free children included), a Parallel
    ``random.split(key, n)``, one key per child; a Repeat (after neural-tangents' shape check, an
    init whose params it drops) as ``lax.scan`` does n times ``key, layer_key = random.split(key)``
    and stacks; a leaf draws from the key it is given. ``shapes``: the input branches' shapes."""
    from jax import random

    if isinstance(layer, Serial):
        params = []
        for child in layer.layers:
            key, layer_key = random.split(key)
            shapes, p = _init_nt(child, layer_key, shapes)
            params.append(p)
        return shapes, params
    if isinstance(layer, Parallel):
        keys = random.split(key, len(layer.layers))
        out = [_init_nt(child, k, [s]) for child, k, s in zip(layer.layers, keys, shapes)]
        return [shape for shapes_k, _ in out for shape in shapes_k], tuple(p for _, p in out)
    if isinstance(layer, Repeat):
        spec_shapes(layer, shapes)
        draws = []
        for _ in range(layer.n):
            key, layer_key = random.split(key)
            draws.append(_init_nt(layer.layer, layer_key, shapes)[1])
        return shapes, _stack(layer.layer, draws, _init_nt(layer.layer, key, shapes)[1] if not draws else None)
    return _leaf_init(layer, _KeyDraws(key), shapes)


def _init_gen(layer, gen, shapes):
    """The init walk with NumPy draws from ``gen``, leaf after leaf in the order they apply."""
    if isinstance(layer, Serial):
        params = []
        for child in layer.layers:
            shapes, p = _init_gen(child, gen, shapes)
            params.append(p)
        return shapes, params
    if isinstance(layer, Parallel):
        out = [_init_gen(child, gen, [s]) for child, s in zip(layer.layers, shapes)]
        return [shape for shapes_k, _ in out for shape in shapes_k], tuple(p for _, p in out)
    if isinstance(layer, Repeat):
        spec_shapes(layer, shapes)
        draws = [_init_gen(layer.layer, gen, shapes)[1] for _ in range(layer.n)]
        return shapes, _stack(layer.layer, draws, _init_gen(layer.layer, gen, shapes)[1] if not draws else None)
    return _leaf_init(layer, gen, shapes)


def _leaf_init(leaf, gen, shapes):
    """(shapes out, params) of a leaf: its rule's init, or () for a leaf without parameters."""
    if type(leaf) in RULES:
        shape, p = RULES[type(leaf)].init(leaf, gen, shapes[0])
        return [shape], p
    return _shapes(leaf, shapes), ()


def spec_shapes(layer, shapes):
    """The branches' shapes out of ``layer`` (spec's shape inference, which checks they fit)."""
    return _shapes(layer, list(shapes))


def _stack(layer, trees, empty=None):
    """The params tree of ``layer`` whose arrays stack those of ``trees`` on a new leading axis (a
    Repeat's); with no trees, ``empty``'s arrays with a leading axis of length 0."""
    if isinstance(layer, (Serial, Parallel)):
        kind = list if isinstance(layer, Serial) else tuple
        if not trees:
            return kind(_stack(c, [], e) for c, e in zip(layer.layers, empty))
        return kind(_stack(c, [t[k] for t in trees]) for k, c in enumerate(layer.layers))
    if isinstance(layer, Repeat):
        if not trees:
            return _stack(layer.layer, [], empty)
        return _stack(layer.layer, trees)
    if not isinstance(layer, Dense):
        return ()
    if not trees:
        return tuple(None if a is None else a[None][:0] for a in empty)
    xp = array_namespace(trees[0][0])
    return tuple(None if trees[0][i] is None else xp.stack([t[i] for t in trees]) for i in range(2))


def _threefry_unpartitioned():
    """The context in which jax draws neural-tangents' bits: jax ≥ 0.5 made
    ``jax_threefry_partitionable`` True by default, which changes every random.normal."""
    import jax

    return jax.threefry_partitionable(False) if hasattr(jax, "threefry_partitionable") else contextlib.nullcontext()


def dense_coefs(layer, W):
    """(c, β) with z = c·h W + β·b for the Dense ``layer`` and its weights W (fan_in, out).

    'ntk': c = W_std/√fan_in, β = b_std (W, b are the raw N(0, 1) draws, neural-tangents'
    Dense.apply_fn); 'standard': c = 1/√s_in, β = 1 (init already scaled W and b).
    """
    if layer.parameterization == "ntk":
        return float(layer.W_std / math.sqrt(W.shape[0])), float(layer.b_std or 0.0)
    return 1.0 / math.sqrt(layer.s[0]), 1.0


# --------------------------------------------------------------------------- rules
class Rule(NamedTuple):
    init: Callable
    apply: Callable
    jvp: Callable
    vjp: Callable


def _dense_init(layer, gen, shape):
    fan_in = shape[-1]
    W = gen.standard_normal((fan_in, layer.width))
    b = None if layer.b_std is None else gen.standard_normal((*[1] * (len(shape) - 1), layer.width))
    if layer.parameterization == "standard":  # init scales; apply does not
        W = W * float(layer.W_std / np.sqrt(layer.n_in(fan_in)))
        b = None if b is None else b * layer.b_std
    return (*shape[:-1], layer.width), (W, b)


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
class Bound(list):
    """pairs(layer, params): ``[(leaf, p)]`` in the order the leaves apply, and ``places``: per leaf
    ``(r, m)``, the first of the m branches it takes in the network's list of branches (a plain
    list of pairs is a network without branches: every leaf takes branch 0)."""

    def __init__(self, items, places):
        super().__init__(items)
        self.places = tuple(places)


def pairs(layer, params):
    """:class:`Bound` pairs [(leaf, p)] in the order the leaves apply, pairing ``params`` (a tree as
    init returns) with the spec; ValueError naming the entry (``params[2]``) whose structure is off."""
    return Bound([(leaf, p) for leaf, p, _ in entries(layer, params, "params")], places(layer))


def entries(layer, params, path="params"):
    """[(leaf, p, path)]: pairs(...) with each entry's place in the tree (``params[1][0]``), the
    name the caller's argument is given by ``path``; a Repeat's k-th slice is ``params[...][k]``."""
    if isinstance(layer, (Serial, Parallel)):
        what = "list" if isinstance(layer, Serial) else "tuple (or list)"
        if not isinstance(params, (list, tuple)) or len(params) != len(layer.layers):
            got = f"{len(params)} entries" if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(f"{path} must be a {what} with one entry per layer ({len(layer.layers)}); got {got}")
        return [leaf for k, child in enumerate(layer.layers) for leaf in entries(child, params[k], f"{path}[{k}]")]
    if isinstance(layer, Repeat):
        return [leaf for k in range(layer.n) for leaf in entries(layer.layer, _take(layer.layer, params, k, layer.n,
                                                                                    path), f"{path}[{k}]")]
    if isinstance(layer, Dense):
        if not isinstance(params, (list, tuple)) or len(params) != 2:
            raise ValueError(f"{path} must be a (W, b) pair for a Dense layer; got {type(params).__name__}")
    elif not isinstance(params, (list, tuple)) or len(params):
        raise ValueError(f"{path} must be () for a {type(layer).__name__} layer, which has no parameters; "
                         f"got {type(params).__name__}")
    return [(layer, params, path)]


def _take(layer, params, k, n, path):
    """Slice k of a Repeat's stacked params tree (its layer's tree, each array of shape (n, ...))."""
    if isinstance(layer, (Serial, Parallel)):
        if not isinstance(params, (list, tuple)) or len(params) != len(layer.layers):
            return params  # entries() names the entry
        return type(params)(_take(c, p, k, n, f"{path}[{i}]") for i, (c, p) in enumerate(zip(layer.layers, params)))
    if isinstance(layer, Repeat):
        return _take(layer.layer, params, k, n, path)
    if not isinstance(layer, Dense) or not isinstance(params, (list, tuple)) or len(params) != 2:
        return params
    for name, a in zip(("W", "b"), params):
        if a is not None and (len(np.shape(a)) < 1 or np.shape(a)[0] != n):
            raise ValueError(f"{path} ({name}) of a layer repeated {n} times must stack one array per repetition "
                             f"on axis 0 (shape ({n}, ...)); got shape {np.shape(a)}")
    return tuple(None if a is None else a[k] for a in params)


def map_dense(layer, params, fn):
    """The params tree with each Dense layer's (W, b) replaced by fn(W, b); a Repeat's stacked arrays
    are given to fn as they are. Entries of another structure are left for check_entries to name."""
    if isinstance(layer, (Serial, Parallel)) and isinstance(params, (list, tuple)) and len(params) == len(layer.layers):
        return type(params)(map_dense(c, p, fn) for c, p in zip(layer.layers, params))
    if isinstance(layer, Repeat):
        return map_dense(layer.layer, params, fn)
    if isinstance(layer, Dense) and isinstance(params, (list, tuple)) and len(params) == 2:
        return tuple(fn(*params))
    return params


def unflatten(layer, flat):
    """The params tree of ``layer`` from a flat list aligned with ``leaves(layer)`` (inverse of pairs;
    a Repeat of n = 0 needs its stacked arrays, which no flat list holds)."""
    it = iter(flat)

    def build(node):
        if isinstance(node, Serial):
            return [build(child) for child in node.layers]
        if isinstance(node, Parallel):
            return tuple(build(child) for child in node.layers)
        if isinstance(node, Repeat):
            if not node.n:
                raise ValueError("unflatten cannot rebuild the params of a layer repeated 0 times")
            return _stack(node.layer, [build(node.layer) for _ in range(node.n)])
        return next(it)

    return build(layer)


def check_entries(layer, params, d=None, name="params", x_name="inputs"):
    """entries(layer, params, name), with every Dense entry's shapes checked for ``x_name`` with d
    features (None: whatever the first W takes); ValueError naming the entry and the input."""
    out = entries(layer, params, name)
    widths, first = [d], True
    for (leaf, p, path), (r, m) in zip(out, places(layer)):
        if isinstance(leaf, FanOut):
            widths[r:r + 1] = widths[r:r + 1] * leaf.num
        elif isinstance(leaf, (FanInSum, FanInProd, FanInConcat)):
            ws = widths[r:r + m]
            if isinstance(leaf, FanInConcat):  # of the features: the sum; of another axis (or unknown): None
                widths[r:r + m] = [None if None in ws or leaf.axis != -1 else sum(ws)]
            else:
                widths[r:r + m] = ws[:1]
        elif isinstance(leaf, Flatten):
            widths[r] = None
        if not isinstance(leaf, Dense):
            continue
        fan_in = widths[r]
        W, b = p
        shape = np.shape(W)
        if shape[1:] != (leaf.width,) or (fan_in is not None and shape[0] != fan_in):
            want = f"({'fan_in' if fan_in is None else fan_in}, {leaf.width})"
            where = f" for {x_name} with {d} features" if first and d is not None else ""
            why = (f" ({x_name} has {d} features but the first Dense layer expects {shape[0]})"
                   if where and len(shape) == 2 and shape[1:] == (leaf.width,) else "")
            raise ValueError(f"{path}[0] (W) must have shape {want}{where}; got {shape}{why}")
        b_ok = b is not None and np.ndim(b) >= 2 and np.shape(b)[-1] == leaf.width and set(np.shape(b)[:-1]) == {1}
        if (b is None) != (leaf.b_std is None) or (b is not None and not b_ok):
            want = ("None (b_std=None)" if leaf.b_std is None else
                    f"of shape (1, {leaf.width}) (one leading 1 per further input axis, as neural-tangents)")
            raise ValueError(f"{path}[1] (b) must be {want}; got {None if b is None else np.shape(b)}")
        widths[r], first = leaf.width, False
    return out


def check_params(layer, params, d):
    """pairs(layer, params), the shapes checked by :func:`check_entries` for inputs with d features."""
    return Bound([(leaf, p) for leaf, p, _ in check_entries(layer, params, d)], places(layer))


# --------------------------------------------------------------------------- the walks
def init(layer, rng, input_shape):
    """(output_shape, params) for inputs of shape ``input_shape``.

    ``rng`` a seed or Generator: NumPy arrays drawn by it. A JAX PRNG key
    (``jax.random.PRNGKey(k)``): the JAX arrays neural-tangents 0.6.5 draws from that key
    (its split per Serial child, per Parallel, per Repeat and per Dense, and its threefry bits),
    in jax's default dtype. ``output_shape`` is a tuple, or a list of them for several branches.
    """
    arity(layer)
    key = _jax_key(rng)
    if key is not None:
        with _threefry_unpartitioned():
            shapes, params = _init_nt(layer, key, [tuple(input_shape)])
    else:
        shapes, params = _init_gen(layer, generator(rng), [tuple(input_shape)])
    return (shapes[0] if len(shapes) == 1 else shapes), params


def _places_of(net):
    return getattr(net, "places", None) or [(0, 1)] * len(net)


def leaf_keys(layer, rng):
    """The random key (or NumPy Generator) of every leaf in the order they apply, for ``rng``: a JAX
    key split as ``jax.example_libraries.stax`` does at apply (``random.split(key, n)`` per Serial
    and per Parallel of n children, the same key for every repetition of a Repeat); a seed or
    Generator: a SeedSequence per leaf drawn from it (so a forward and a backward pass draw one
    mask); None: None."""
    if rng is None:
        return [None] * len(leaves(layer))
    key = _jax_key(rng)
    if key is None:
        gen = generator(rng)
        return [np.random.SeedSequence(int(gen.integers(2**63))) for _ in leaves(layer)]
    from jax import random

    def walk(node, k):
        if isinstance(node, (Serial, Parallel)):
            return [x for child, ck in zip(node.layers, random.split(k, len(node.layers))) for x in walk(child, ck)]
        if isinstance(node, Repeat):
            return walk(node.layer, k) * node.n
        return [k]

    with _threefry_unpartitioned():
        return walk(layer, key)


def _dropout_keep(leaf, key, h):
    """The keep mask of a Dropout leaf in mode 'train' for h (``random.bernoulli(key, rate, h.shape)``)."""
    if key is None:
        raise ValueError("Dropout in mode 'train' needs a random key: call apply_fn(params, inputs, rng=key) "
                         "with a jax.random.PRNGKey (or an int seed / numpy Generator)")
    if isinstance(key, np.random.SeedSequence):
        keep = np.random.default_rng(key).random(tuple(h.shape)) < leaf.rate
    else:
        from jax import random

        with _threefry_unpartitioned():
            keep = random.bernoulli(key, leaf.rate, tuple(h.shape))
        if _jax_key(h) is not None:  # a JAX array (or tracer): the mask as drawn
            return keep
        keep = np.array(keep)  # a writable copy (torch refuses read-only buffers)
    return keep if isinstance(h, np.ndarray) else array_namespace(h).asarray(keep)


def _dropout(leaf, key, h):
    """neural-tangents' Dropout: where(keep, h / rate, 0) in mode 'train', h in 'test'."""
    if leaf.mode != "train":
        return h
    xp = array_namespace(h)
    return xp.where(_dropout_keep(leaf, key, h), h / leaf.rate, xp.zeros_like(h))


def _fan_in(leaf, hs):
    xp = array_namespace(*hs)
    if isinstance(leaf, FanInConcat):
        return xp.concat(list(hs), axis=leaf.axis)
    out = hs[0]
    for h in hs[1:]:
        out = out + h if isinstance(leaf, FanInSum) else out * h
    return out


def _step(leaf, p, key, hs, r, m):
    """The branches after ``leaf`` (taking hs[r:r + m]), a new list."""
    if isinstance(leaf, FanOut):
        return [*hs[:r], *[hs[r]] * leaf.num, *hs[r + 1:]]
    if isinstance(leaf, (FanInSum, FanInProd, FanInConcat)):
        return [*hs[:r], _fan_in(leaf, hs[r:r + m]), *hs[r + m:]]
    if isinstance(leaf, Identity):
        return hs
    h = hs[r]
    if isinstance(leaf, Dropout):
        h = _dropout(leaf, key, h)
    elif isinstance(leaf, Flatten):
        h = array_namespace(h).reshape(h, (h.shape[0], -1))
    else:
        h = RULES[type(leaf)].apply(leaf, p, h)
    return [*hs[:r], h, *hs[r + 1:]]


def forward(net, x, keys=None):
    """Outputs and the input of every leaf: ``(f, [h_0, h_1, ...])``, h_k an array (the list of the
    branches a FanIn takes); ``net`` = pairs(...), ``keys`` = leaf_keys(...) (or None)."""
    inputs, hs = [], [x]
    for (leaf, p), (r, m), key in zip(net, _places_of(net), keys or [None] * len(net)):
        inputs.append(hs[r] if m == 1 else hs[r:r + m])
        hs = _step(leaf, p, key, hs, r, m)
    return (hs[0] if len(hs) == 1 else hs), inputs


def apply(net, x, keys=None):
    """Outputs of the network ``net`` = pairs(layer, params) on x."""
    return forward(net, x, keys)[0]


def jvp(net, dparams, x, keys=None):
    """(f(x), J(x)·dparams) by forward mode; dparams a flat list aligned with ``net``."""
    hs, dhs = [x], [None]
    for (leaf, p), dp, (r, m), key in zip(net, dparams, _places_of(net), keys or [None] * len(net)):
        if isinstance(leaf, (Dense, Act)):
            h, dh = RULES[type(leaf)].jvp(leaf, p, dp, hs[r], dhs[r])
            hs, dhs = [*hs[:r], h, *hs[r + 1:]], [*dhs[:r], dh, *dhs[r + 1:]]
            continue
        new = _step(leaf, p, key, hs, r, m)
        if isinstance(leaf, FanOut):
            dhs = [*dhs[:r], *[dhs[r]] * leaf.num, *dhs[r + 1:]]
        elif isinstance(leaf, (FanInSum, FanInProd, FanInConcat)):
            dhs = [*dhs[:r], _fan_in_jvp(leaf, hs[r:r + m], dhs[r:r + m]), *dhs[r + m:]]
        elif isinstance(leaf, (Dropout, Flatten)) and dhs[r] is not None:
            dhs = [*dhs[:r], _step(leaf, p, key, dhs, r, m)[r], *dhs[r + 1:]]  # linear in h
        hs = new
    return hs[0], dhs[0]


def _fan_in_jvp(leaf, hs, dhs):
    if all(dh is None for dh in dhs):
        return None
    xp = array_namespace(*hs)
    dhs = [xp.zeros_like(h) if dh is None else dh for h, dh in zip(hs, dhs)]
    if not isinstance(leaf, FanInProd):
        return _fan_in(leaf, dhs)
    return sum(_fan_in(leaf, [*hs[:i], dh, *hs[i + 1:]]) for i, dh in enumerate(dhs))


def _fan_in_vjp(leaf, hs, ct):
    """The cotangents of a FanIn's inputs hs from that of its output ct (which may have extra leading axes)."""
    if isinstance(leaf, FanInSum):
        return [ct] * len(hs)
    if isinstance(leaf, FanInProd):
        return [_fan_in(leaf, [ct, *hs[:i], *hs[i + 1:]]) for i in range(len(hs))]
    ax = leaf.axis % hs[0].ndim - hs[0].ndim  # from the end: ct may have leading axes
    ends = np.cumsum([h.shape[ax] for h in hs])
    index = [slice(None)] * ct.ndim
    out = []
    for a, b in zip([0, *ends[:-1]], ends):
        index[ax] = slice(int(a), int(b))
        out.append(ct[tuple(index)])
    return out


def backward(net, inputs, ct, keys=None, at_dense=None):
    """The reverse pass from the cotangent ct of the outputs (any leading axes, e.g. one per output).

    ``inputs``: forward(...)'s; ``at_dense(k, leaf, p, h, ct) -> ct_in`` is called at every Dense leaf
    k with its input h and the cotangent of its output, and returns the cotangent of its input.
    Returns the cotangent of the network's input.
    """
    cts, keys = [ct], keys or [None] * len(net)
    pl = _places_of(net)
    for k in range(len(net) - 1, -1, -1):
        (leaf, p), (r, m), h = net[k], pl[k], inputs[k]
        if isinstance(leaf, FanOut):
            total = cts[r]
            for c in cts[r + 1:r + leaf.num]:
                total = total + c
            cts = [*cts[:r], total, *cts[r + leaf.num:]]
        elif isinstance(leaf, (FanInSum, FanInProd, FanInConcat)):
            cts = [*cts[:r], *_fan_in_vjp(leaf, h if m > 1 else [h], cts[r]), *cts[r + 1:]]
        elif isinstance(leaf, Dropout):
            if leaf.mode == "train":  # h's mask: the same key and shape
                xp = array_namespace(cts[r])
                cts[r] = xp.where(_dropout_keep(leaf, keys[k], h), cts[r] / leaf.rate, xp.zeros_like(cts[r]))
        elif isinstance(leaf, Flatten):
            c = cts[r]
            cts[r] = array_namespace(c).reshape(c, (*c.shape[:c.ndim - 2], *h.shape))
        elif isinstance(leaf, Dense):
            cts[r] = at_dense(k, leaf, p, h, cts[r])
        elif isinstance(leaf, Act):
            cts[r] = RULES[Act].vjp(leaf, p, h, cts[r])[1]
    return cts[0]


def vjp(net, x, ct, keys=None):
    """Σᵢ ctᵢ·∂f(xᵢ)/∂θ, a flat list of gradients aligned with ``net`` (reverse mode)."""
    _, inputs = forward(net, x, keys)
    grads = [()] * len(net)

    def at_dense(k, leaf, p, h, c):
        grads[k], c_in = RULES[Dense].vjp(leaf, p, h, c)
        return c_in

    backward(net, inputs, ct, keys, at_dense)
    return grads
