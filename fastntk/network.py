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

Conventions are neural-tangents' (``stax.Dense``, ``stax.Conv``): in the 'ntk' parameterization W
and b are raw N(0, 1) draws and z = (W_std/√fan_in)·h W + b_std·b; in the 'standard' one,
init scales W by W_std/√fan_in and b by b_std, and z = h W + b. A Conv is the same on the patches
of its input (im2col: fan_in = C_in·|F|, W of shape (*filter_shape, C_in, out_chan) read as the
(|F|·C_in, out_chan) matrix, b of shape (1, ..., 1, out_chan)), the patches explicit shifted
slices of the padded input (:mod:`fastntk._patches`, the rule of :func:`fastntk.spec.window_plan`).
Pooling, global pooling and LayerNorm have no parameters; their JVP and VJP are written out
(pooling is linear; LayerNorm's Jacobian (I − 11ᵀ/n − y yᵀ/n)/σ is symmetric). The array operations are
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
from array_api_compat import array_namespace, device

from . import _patches
from .spec import (Act, Conv, Dense, Dropout, FanInConcat, FanInProd, FanInSum, FanOut, Flatten, GlobalPool, Identity,
                   LayerNorm, Parallel, Pool, Repeat, Serial, _shapes, arity, leaves, places)

__all__ = ["PARAMETERIZED", "RULES", "map_dense", "Bound", "apply", "backward", "check_entries", "check_params",
           "conv_patches", "dense_coefs", "entries", "forward", "generator", "init", "input_cotangent", "jvp",
           "leaf_keys", "pairs", "spec_shapes", "unflatten", "vjp"]

#: The leaf types with parameters, a ``(W, b)`` pair each (every other leaf holds ``()``).
PARAMETERIZED = (Dense, Conv)


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
    if not isinstance(layer, PARAMETERIZED):
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
    """(c, β) with z = c·h W + β·b for the Dense ``layer`` and its weights W (fan_in, out), or
    z = c·conv(h, W) + β·b for a Conv and its W (*filter_shape, C_in, out_chan), fan_in = C_in·|F|.

    'ntk': c = W_std/√fan_in, β = b_std (W, b are the raw N(0, 1) draws, neural-tangents'
    Dense.apply_fn and Conv.apply_fn); 'standard': c = 1/√s_in, β = 1 (init already scaled W and b).
    """
    if layer.parameterization == "ntk":
        return float(layer.W_std / math.sqrt(math.prod(W.shape[:-1]))), float(layer.b_std or 0.0)
    return 1.0 / math.sqrt(layer.s[0]) if isinstance(layer, Dense) else 1.0, 1.0


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
    grad = (c * (h2.T @ ct2), None if b is None else xp.reshape(beta * xp.sum(ct2, axis=0), tuple(b.shape)))
    return grad, input_cotangent(layer, p, h, ct)


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
    return spec_shapes(layer, [shape])[0], ()


def _linear(apply_fn, transpose):
    """The jvp and vjp rules of a parameter-free leaf linear in h (Pool, GlobalPool): ``apply_fn``
    maps the tangent, ``transpose(layer, h, ct)`` the cotangent (any extra leading axes)."""
    return (lambda layer, p, dp, h, dh: (apply_fn(layer, p, h), None if dh is None else apply_fn(layer, p, dh)),
            lambda layer, p, h, ct: ((), transpose(layer, h, ct)))


# Conv, Pool: explicit shifted slices of the padded input (fastntk._patches), XLA's rule of window_plan
def _window_axes(layer, h):
    """The :class:`fastntk._patches.Axis` of each spatial axis of h (N, *S, C) (ValueError naming the
    expected input shape where h has another rank)."""
    spec_shapes(layer, [tuple(h.shape)])
    window = layer.filter_shape if isinstance(layer, Conv) else layer.window_shape
    return _patches.plan(tuple(h.shape[1:-1]), window, layer.strides, layer.padding)


def conv_patches(layer, h):
    """The patches (im2col) of h (N, *S, C) for the Conv or Pool ``layer``: (N, *S_out, |F|·C), the
    taps in row-major order of the window, channels fastest (a Conv weight's (*filter_shape, C_in) order)."""
    axes = _window_axes(layer, h)
    return array_namespace(h).concat(_patches.taps(_patches.pad(h, axes, layer.padding), axes), axis=-1)


def _flat(W):
    """A Conv weight (*filter_shape, C_in, out_chan) as the matrix (|F|·C_in, out_chan) of the patches."""
    return W.reshape((-1, W.shape[-1]))


def _conv_init(layer, gen, shape):
    out_shape = spec_shapes(layer, [shape])[0]
    W = gen.standard_normal((*layer.filter_shape, shape[-1], layer.out_chan))
    b = None if layer.b_std is None else gen.standard_normal((*[1] * (len(shape) - 1), layer.out_chan))
    if layer.parameterization == "standard":  # init scales; apply does not
        W = W * float(layer.W_std / np.sqrt(layer.fan_in(shape[-1])))
        b = None if b is None else b * layer.b_std
    return out_shape, (W, b)


def _conv_apply(layer, p, h):
    W, b = p
    c, beta = dense_coefs(layer, W)
    z = c * (conv_patches(layer, h) @ _flat(W))
    return z if b is None else z + beta * b


def _conv_jvp(layer, p, dp, h, dh):
    (W, b), (dW, db) = p, dp
    c, beta = dense_coefs(layer, W)
    patches = conv_patches(layer, h)
    tangent = patches @ _flat(dW)
    if dh is not None:
        tangent = tangent + conv_patches(layer, dh) @ _flat(W)
    z, dz = c * (patches @ _flat(W)), c * tangent
    if b is not None:
        z, dz = z + beta * b, dz + beta * db
    return z, dz


def _conv_vjp(layer, p, h, ct):
    W, b = p
    xp = array_namespace(h, ct)
    c, beta = dense_coefs(layer, W)
    patches = conv_patches(layer, h)
    p2, ct2 = xp.reshape(patches, (-1, patches.shape[-1])), xp.reshape(ct, (-1, ct.shape[-1]))
    grad_b = None if b is None else xp.reshape(beta * xp.sum(ct2, axis=0), tuple(b.shape))
    return (xp.reshape(c * (p2.T @ ct2), tuple(W.shape)), grad_b), input_cotangent(layer, p, h, ct)


def input_cotangent(layer, p, h, ct):
    """The cotangent of the input h of the Dense or Conv ``layer`` with parameters p from ct, the
    cotangent of its output (any extra leading axes, e.g. one per network output)."""
    W = p[0]
    c, _ = dense_coefs(layer, W)
    if isinstance(layer, Dense):
        return ct @ (c * W).T
    axes, channels = _window_axes(layer, h), h.shape[-1]
    ct_patches = ct @ (c * _flat(W)).T  # (..., *S_out, |F|·C_in): one C_in block per tap
    cts = [ct_patches[..., t * channels:(t + 1) * channels] for t in range(len(_patches.offsets(axes)))]
    return _patches.unpad(_patches.untap(cts, axes), axes, layer.padding)


def _pool_scale(layer, axes, h):
    """What a Pool divides its window sum by: 1 (SumPool), |w| (AvgPool), or with normalize_edges
    the count of the window's positions inside the input (N, *S_out, C)-broadcastable, h's kind."""
    if layer.kind == "sum":
        return 1.0
    if not layer.normalize_edges or layer.padding != "SAME":  # VALID and CIRCULAR windows lie inside
        return float(math.prod(layer.window_shape))
    count = np.ones(())
    for a in axes:  # separable: per axis #{tap d: 0 ≤ o·s + d − lo < n}
        o = np.arange(a.n_out)[:, None] * a.s + np.arange(a.f)[None, :] - a.lo
        count = np.multiply.outer(count, ((o >= 0) & (o < a.n)).sum(1))
    count = count[..., None]
    if isinstance(h, np.ndarray):
        return count.astype(h.dtype)
    return array_namespace(h).asarray(count, dtype=h.dtype, device=device(h))


def _pool_apply(layer, p, h):
    axes = _window_axes(layer, h)
    total = None
    for x in _patches.taps(_patches.pad(h, axes, layer.padding), axes):
        total = x if total is None else total + x
    scale = _pool_scale(layer, axes, h)
    return total if layer.kind == "sum" else total / scale


def _pool_transpose(layer, h, ct):
    axes = _window_axes(layer, h)
    ct = ct if layer.kind == "sum" else ct / _pool_scale(layer, axes, h)
    return _patches.unpad(_patches.untap([ct] * len(_patches.offsets(axes)), axes), axes, layer.padding)


# GlobalPool: (N, *S, C) -> (N, C)
def _spatial_axes(layer, h):
    spec_shapes(layer, [tuple(h.shape)])
    return tuple(range(1, h.ndim - 1))


def _global_pool_apply(layer, p, h):
    xp = array_namespace(h)
    reduce = xp.sum if layer.kind == "sum" else xp.mean
    return reduce(h, axis=_spatial_axes(layer, h))


def _global_pool_transpose(layer, h, ct):
    xp, spatial = array_namespace(h, ct), h.shape[1:-1]
    ct = ct if layer.kind == "sum" else ct / math.prod(spatial)
    ct = xp.reshape(ct, (*ct.shape[:-1], *[1] * len(spatial), ct.shape[-1]))
    return xp.broadcast_to(ct, (*ct.shape[:ct.ndim - len(spatial) - 1], *spatial, ct.shape[-1]))


# LayerNorm: y = (h − mean)/σ, σ = √(var + eps) over the axes; Jacobian (I − 11ᵀ/n − y yᵀ/n)/σ, symmetric
def _layer_norm(layer, h):
    """(y, σ): y = (h − mean)/σ with the mean and the biased variance over layer.axis, σ keepdims."""
    spec_shapes(layer, [tuple(h.shape)])
    xp, axes = array_namespace(h), tuple(a % h.ndim - h.ndim for a in layer.axis)  # from the end: ct's leading axes
    u = h - xp.mean(h, axis=axes, keepdims=True)
    sigma = xp.sqrt(xp.mean(u * u, axis=axes, keepdims=True) + layer.eps)
    return u / sigma, sigma


def _layer_norm_linear(layer, h, v):
    """J(h)·v, which is also vᵀ J(h) (J symmetric): (v − mean(v) − y·mean(y v))/σ, v any leading axes."""
    xp, axes = array_namespace(h, v), tuple(a % h.ndim - h.ndim for a in layer.axis)
    y, sigma = _layer_norm(layer, h)
    return (v - xp.mean(v, axis=axes, keepdims=True) - y * xp.mean(y * v, axis=axes, keepdims=True)) / sigma


def _layer_norm_jvp(layer, p, dp, h, dh):
    return _layer_norm(layer, h)[0], None if dh is None else _layer_norm_linear(layer, h, dh)


RULES = {
    Dense: Rule(_dense_init, _dense_apply, _dense_jvp, _dense_vjp),
    Conv: Rule(_conv_init, _conv_apply, _conv_jvp, _conv_vjp),
    Pool: Rule(_no_params_init, _pool_apply, *_linear(_pool_apply, _pool_transpose)),
    GlobalPool: Rule(_no_params_init, _global_pool_apply, *_linear(_global_pool_apply, _global_pool_transpose)),
    LayerNorm: Rule(_no_params_init, lambda layer, p, h: _layer_norm(layer, h)[0], _layer_norm_jvp,
                    lambda layer, p, h, ct: ((), _layer_norm_linear(layer, h, ct))),
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
    if isinstance(layer, PARAMETERIZED):
        if not isinstance(params, (list, tuple)) or len(params) != 2:
            raise ValueError(f"{path} must be a (W, b) pair for a {type(layer).__name__} layer; got "
                             f"{type(params).__name__}")
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
    if not isinstance(layer, PARAMETERIZED) or not isinstance(params, (list, tuple)) or len(params) != 2:
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
    """entries(layer, params, name), with every Dense and Conv entry's shapes checked for ``x_name``
    with d features (channels, for (N, *S, C) inputs; None: whatever the first W takes); ValueError
    naming the entry and the input."""
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
        if not isinstance(leaf, PARAMETERIZED):
            continue
        _check_pair(leaf, p, path, widths[r], d if first else None, x_name)
        widths[r], first = leaf.width, False
    return out


def _check_pair(leaf, p, path, fan_in, d, x_name):
    """ValueError naming ``path`` unless p = (W, b) fits ``leaf`` (Dense: W (fan_in, width), b (1, width)
    or with more leading 1s; Conv: W (*filter_shape, fan_in, out_chan), b (1, ..., 1, out_chan) or
    (out_chan,)) on inputs of fan_in features (None: any); d: the network's input features, given where
    leaf is its first layer with parameters."""
    W, b = p
    shape, head = np.shape(W), tuple(leaf.filter_shape) if isinstance(leaf, Conv) else ()
    n, kind, unit = len(head), type(leaf).__name__, "channels" if isinstance(leaf, Conv) else "features"
    fits = len(shape) == n + 2 and shape[:n] == head and shape[-1] == leaf.width
    if not fits or (fan_in is not None and shape[n] != fan_in):
        want = f"({', '.join([*map(str, head), 'fan_in' if fan_in is None else str(fan_in), str(leaf.width)])})"
        where = f" for {x_name} with {d} {unit}" if d is not None else ""
        why = f" ({x_name} has {d} {unit} but the first {kind} layer expects {shape[n]})" if where and fits else ""
        raise ValueError(f"{path}[0] (W) must have shape {want}{where}; got {shape}{why}")
    b_shape = np.shape(b)
    ones = len(b_shape) >= 1 and b_shape[-1] == leaf.width and set(b_shape[:-1]) <= {1}
    b_ok = ones and (len(b_shape) >= 2 if isinstance(leaf, Dense) else len(b_shape) <= n + 2)
    if (b is None) != (leaf.b_std is None) or (b is not None and not b_ok):
        want = ("None (b_std=None)" if leaf.b_std is None else
                f"of shape (1, {leaf.width}) (one leading 1 per further input axis, as neural-tangents)"
                if isinstance(leaf, Dense) else
                f"of shape ({'1, ' * (n + 1)}{leaf.width}) (as neural-tangents) or ({leaf.width},)")
        raise ValueError(f"{path}[1] (b) must be {want}; got {None if b is None else b_shape}")


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
        if type(leaf) in RULES and not isinstance(leaf, Identity):
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


def backward(net, inputs, ct, keys=None, at_params=None):
    """The reverse pass from the cotangent ct of the outputs (any leading axes, e.g. one per output).

    ``inputs``: forward(...)'s; ``at_params(k, leaf, p, h, ct) -> ct_in`` is called at every leaf k
    with parameters (Dense, Conv) with its input h and the cotangent of its output, and returns the
    cotangent of its input.
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
        elif isinstance(leaf, PARAMETERIZED):
            cts[r] = at_params(k, leaf, p, h, cts[r])
        elif type(leaf) in RULES:
            cts[r] = RULES[type(leaf)].vjp(leaf, p, h, cts[r])[1]
    return cts[0]


def vjp(net, x, ct, keys=None):
    """Σᵢ ctᵢ·∂f(xᵢ)/∂θ, a flat list of gradients aligned with ``net`` (reverse mode)."""
    _, inputs = forward(net, x, keys)
    grads = [()] * len(net)

    def at_params(k, leaf, p, h, c):
        grads[k], c_in = RULES[type(leaf)].vjp(leaf, p, h, c)
        return c_in

    backward(net, inputs, ct, keys, at_params)
    return grads
