"""JAX arrays in, JAX arrays out: fastntk's NumPy functions inside ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

The one module where fastntk's NumPy paths meet JAX transformations. It never imports jax itself:
every test here first asks whether ``jax`` is in ``sys.modules`` (a JAX array cannot exist
otherwise). The public entries that accept JAX arrays (``kernel_fn``; the empirical kernel
functions of fastntk networks; the predict functions of :mod:`fastntk.predict`) ask
:func:`uses_jax` and hand over to :func:`kernel_fn` or :func:`accepting_jax`:

* concrete JAX arrays: converted to NumPy, computed on the NumPy (compiled) path, returned as
  ``jax.numpy`` arrays;
* tracers (inside ``jax.jit`` or ``jax.vmap``): a ``jax.pure_callback`` around the NumPy path, with
  the result shapes and dtypes worked out from the input shapes before the call; under
  ``jax.vmap`` the callback runs once per batch element (``vmap_method="sequential"``; jax < 0.4.34:
  ``vectorized=False``);
* derivatives of ``kernel_fn`` with respect to x1, x2 (``jax.grad``, ``jax.jvp``, ``jax.jacfwd``, ...):
  a ``jax.custom_jvp`` whose primal is that callback (the compiled path's values) and whose JVP is
  ``jax.jvp`` of the NumPy reference recursion :func:`fastntk._reference.infinite_kernels`,
  evaluated in ``jax.numpy``: exact, O(N1·N2·depth) JAX operations, slower than the compiled path;
* hyperparameters that are tracers (``W_std``/``b_std`` of a Dense layer under ``jax.grad``, as in
  neural-tangents' phase-diagram examples): the reference recursion traced as a whole, values and
  derivatives both from it.

Results are in the dtype the NumPy path gives (float32 when every input is float32, else float64),
as JAX canonicalises it: float32 when ``jax_enable_x64`` is off.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import sys

import numpy as np

from . import _reference
from . import activations as _act
from . import spec as _spec
from ._types import Kernel
from ._validation import check_get

__all__ = ["accepting_jax", "any_tracer", "hyperparameter", "is_tracer", "kernel_fn", "predictor", "result_dtype",
           "shape_dtype", "to_jax", "to_numpy", "traced_hyperparameters", "uses_jax"]


def _jax():
    return sys.modules.get("jax")


def _leaves(values):
    jax = _jax()
    _register_pytrees()
    return jax.tree_util.tree_leaves(values)


def uses_jax(*values):
    """True if any leaf of ``values`` is a JAX array or tracer (never imports jax)."""
    jax = _jax()
    return jax is not None and any(isinstance(v, jax.Array) for v in _leaves(values))


def is_tracer(value):
    """True if ``value`` is a JAX tracer: an abstract value inside jit, vmap or a derivative."""
    jax = _jax()
    return jax is not None and isinstance(value, jax.core.Tracer)


def any_tracer(values):
    return any(is_tracer(v) for v in _leaves(values))


def hyperparameter(value, name):
    """A layer hyperparameter that may be a JAX scalar (e.g. ``W_std``).

    A tracer is returned as it is once it is known to be a real scalar (its value cannot be
    checked); a concrete JAX scalar becomes a Python float, for the caller's usual checks; any
    other value is returned unchanged.
    """
    jax = _jax()
    if jax is None or not isinstance(value, jax.Array):
        return value
    if value.shape != () or not jax.numpy.issubdtype(value.dtype, jax.numpy.floating):
        raise TypeError(f"{name} must be a real scalar; got a JAX array of shape {value.shape}, dtype {value.dtype}")
    return value if is_tracer(value) else float(value)


# --------------------------------------------------------------------------- pytrees and callbacks
@functools.cache
def _register_pytrees():
    """Make :class:`fastntk.Kernel` a JAX pytree: its kernels, cov1 and cov2 are the children; the
    field names and the descriptive fields (shape1, is_gaussian, ...) ride along as static data."""
    jax = _jax()

    def flatten(k):
        meta = tuple((f, v) for f, v in k.asdict().items() if f not in ("nngp", "ntk", "cov1", "cov2")
                     and f not in k._fields)
        return (tuple(k), k.cov1, k.cov2), (k._fields, meta)

    def unflatten(aux, children):
        fields, meta = aux
        return Kernel(fields, children[0], children[1], children[2], **dict(meta))

    jax.tree_util.register_pytree_node(Kernel, flatten, unflatten)


@functools.cache
def _callback_options():
    """How pure_callback runs under vmap: one call per batch element, in any jax version."""
    params = inspect.signature(_jax().pure_callback).parameters
    return {"vmap_method": "sequential"} if "vmap_method" in params else {"vectorized": False}


def _pure_callback(host, result_shapes, *args):
    return _jax().pure_callback(host, result_shapes, *args, **_callback_options())


def result_dtype(dtype, *xs):
    """The NumPy path's result dtype (float32 iff every input is float32), as JAX canonicalises it."""
    if dtype is None:
        float32 = all(np.dtype(getattr(x, "dtype", np.float64)) == np.float32 for x in xs if x is not None)
        dtype = np.float32 if float32 else np.float64
    return np.dtype(_jax().dtypes.canonicalize_dtype(np.dtype(dtype)))


def to_numpy(values):
    jax = _jax()
    return jax.tree_util.tree_map(lambda v: np.asarray(v) if isinstance(v, jax.Array) else v, values)


def to_jax(values):
    jax = _jax()
    return jax.tree_util.tree_map(lambda v: jax.numpy.asarray(v) if isinstance(v, np.ndarray) else v, values)


def accepting_jax(numpy_fn, result_shapes, jax_out=False):
    """``numpy_fn`` made to take JAX arrays (anywhere in its arguments) and return JAX arrays.

    ``numpy_fn(*args, **kwargs)`` computes in NumPy. Called with concrete JAX arrays it gets them
    as NumPy arrays and its result comes back as ``jax.numpy`` arrays; with tracers it runs in a
    ``jax.pure_callback``, for which ``result_shapes(*args, **kwargs)`` gives the result's pytree of
    ``jax.ShapeDtypeStruct`` from the arguments' shapes (not values). The arguments' array leaves
    (JAX or NumPy) pass through the callback; every other leaf (floats, strings, None) is captured.
    Without JAX arrays ``numpy_fn`` is called as it is (its result converted to JAX arrays if
    ``jax_out``).
    """

    @functools.wraps(numpy_fn)
    def fn(*args, **kwargs):
        if not uses_jax(args, kwargs):
            out = numpy_fn(*args, **kwargs)
            return to_jax(out) if jax_out else out
        if not any_tracer((args, kwargs)):
            return to_jax(numpy_fn(*to_numpy(args), **to_numpy(kwargs)))
        jax = _jax()
        shapes = result_shapes(*args, **kwargs)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        dynamic = [i for i, v in enumerate(leaves) if isinstance(v, (jax.Array, np.ndarray))]

        def host(*arrays):
            full = list(leaves)
            for i, a in zip(dynamic, arrays):
                full[i] = np.asarray(a)
            a, kw = jax.tree_util.tree_unflatten(treedef, full)
            return jax.tree_util.tree_map(lambda v, s: np.asarray(v, s.dtype), numpy_fn(*a, **kw), shapes)

        return _pure_callback(host, shapes, *(leaves[i] for i in dynamic))

    return fn


def predictor(make, args, kwargs, call_shapes):
    """The predict_fn of the constructor ``make(*args, **kwargs)`` (e.g. ``predict.gp_inference``)
    whose arguments hold JAX arrays; it returns JAX arrays.

    Concrete arrays: the NumPy predictor is built now (its factorisations cached across calls) and
    its calls go through :func:`accepting_jax`. Tracers (the constructor called inside jit): every
    call builds the NumPy predictor and calls it within one callback. ``call_shapes(*call_args,
    **call_kwargs)`` gives a call's result shapes.
    """
    if not any_tracer((args, kwargs)):
        return accepting_jax(make(*to_numpy(args), **to_numpy(kwargs)), call_shapes, jax_out=True)

    def run(args, kwargs, call_args, call_kwargs):
        return make(*args, **kwargs)(*call_args, **call_kwargs)

    run = accepting_jax(run, lambda a, kw, call_args, call_kwargs: call_shapes(*call_args, **call_kwargs))

    def predict_fn(*call_args, **call_kwargs):
        return run(args, kwargs, call_args, call_kwargs)

    return predict_fn


def shape_dtype(shape, dtype):
    """``jax.ShapeDtypeStruct(shape, dtype)``: a result of a callback, for the shape functions of callers."""
    return _jax().ShapeDtypeStruct(tuple(shape), dtype)


# --------------------------------------------------------------------------- kernel_fn
def kernel_fn(kfn, x1, x2, get, *, diagonal, out, dtype, **options):
    """``kfn(x1, x2, get, ...)`` (a ``_kernel_fn.KernelFn``) for JAX inputs or traced hyperparameters.

    See the module docstring for which path runs; ``options`` (progress, block_rows, backend) go
    to the compiled path unchanged. ``out`` cannot be used with JAX arrays.
    """
    jax = _jax()
    jnp = jax.numpy
    names = check_get(get)
    if out is not None:
        raise ValueError("out is for NumPy results; it cannot be used with JAX inputs or hyperparameters")
    if diagonal and x2 is not None:
        raise ValueError("diagonal=True gives Σ(x, x) and Θ(x, x) of x1 alone; x2 must be None")
    xs = tuple(x if isinstance(x, jax.Array) else jnp.asarray(np.asarray(x)) for x in (x1, x2) if x is not None)
    _check_shapes(xs)
    res_dtype = result_dtype(dtype, *xs)
    if traced_hyperparameters(kfn.spec):
        skeleton, hyper = _skeleton(kfn.spec)
        values = _jitted_reference(skeleton, names, diagonal)(hyper, *(x.astype(res_dtype) for x in xs))
        values = tuple(v.astype(res_dtype) for v in values)
    elif not any_tracer(xs):
        k = kfn(*to_numpy((x1, x2)), get=names, diagonal=diagonal, dtype=res_dtype, **options)
        values = tuple(jnp.asarray(v) for v in (*k, k.cov1, *(() if k.cov2 is None else (k.cov2,))))
    else:
        values = _traced_kernels(kfn, names, diagonal, res_dtype, options, xs)(*xs)
    k = Kernel(names, values[:len(names)], values[len(names)], values[len(names) + 1] if len(xs) == 2 else None)
    return k[0] if isinstance(get, str) else k


def _check_shapes(xs):
    """The shape and dtype checks of ``check_pair`` that need no values (tracers have none)."""
    jnp = _jax().numpy
    for name, x in zip(("x1", "x2"), xs):
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D of shape (N, d); got {x.ndim}-D array of shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating) or np.dtype(x.dtype) not in (np.float32, np.float64):
            raise TypeError(f"{name} must be a float32 or float64 array; got dtype {x.dtype}")
    if len(xs) == 2 and xs[1].shape[1] != xs[0].shape[1]:
        raise ValueError(f"x2 must have the same number of features as x1 (d={xs[0].shape[1]}); "
                         f"got x2.shape={xs[1].shape}")


def traced_hyperparameters(layer_spec):
    """True if a Dense layer of the spec holds a traced W_std or b_std."""
    return any(is_tracer(v) for leaf in _spec.leaves(layer_spec) if isinstance(leaf, _spec.Dense)
               for v in (leaf.W_std, leaf.b_std))


def _traced_kernels(kfn, names, diagonal, dtype, options, xs):
    """f(x1[, x2]) -> (kernels..., cov1[, cov2]): the compiled path in a pure_callback, with the
    reference recursion's JVP."""
    jax = _jax()
    n1, n2 = xs[0].shape[0], xs[-1].shape[0]
    shapes = tuple(jax.ShapeDtypeStruct((n1,) if diagonal else (n1, n2), dtype) for _ in names)
    shapes += tuple(jax.ShapeDtypeStruct((x.shape[0],), dtype) for x in xs)

    def host(*arrays):
        k = kfn(*(np.asarray(a) for a in arrays), get=names, diagonal=diagonal, dtype=dtype, **options)
        return tuple(np.asarray(v, dtype) for v in (*k, k.cov1, *(() if k.cov2 is None else (k.cov2,))))

    reference = _jitted_reference(kfn.spec, names, diagonal)

    @jax.custom_jvp
    def kernels(*arrays):
        return _pure_callback(host, shapes, *arrays)

    @kernels.defjvp
    def kernels_jvp(primals, tangents):
        _, dk = jax.jvp(lambda *xs: reference((), *xs), primals, tangents)
        return kernels(*primals), tuple(t.astype(dtype) for t in dk)

    return kernels


_REFERENCES = collections.OrderedDict()  # cache key of a spec skeleton -> its jitted reference recursion
_CACHE_SIZE = 32


def _jitted_reference(skeleton, names, diagonal):
    """jit(f)(hyper, x1[, x2]) -> (kernels..., cov1[, cov2]): the reference recursion of the spec
    ``skeleton`` (:func:`_skeleton`) with its traced hyperparameters ``hyper``, compiled once per
    network structure and shapes (eager JAX would dispatch, and first compile, every operation)."""
    jax = _jax()
    try:
        key = (_cache_key(skeleton), names, diagonal)
        hash(key)
    except TypeError:  # a user-given rule or value that cannot be a key: compiled per call
        key = None
    if key in _REFERENCES:
        _REFERENCES.move_to_end(key)
        return _REFERENCES[key]
    traceable = _traceable(skeleton)

    def reference(hyper, *xs):
        return _reference_kernels(_fill(traceable, hyper), names, diagonal)(*xs)

    fn = jax.jit(reference)
    if key is not None:
        _REFERENCES[key] = fn
        while len(_REFERENCES) > _CACHE_SIZE:
            _REFERENCES.popitem(last=False)
    return fn


@dataclasses.dataclass(frozen=True)
class _Slot:
    """Stands for the traced hyperparameter ``hyper[index]`` in a spec skeleton."""

    index: int


def _skeleton(layer_spec):
    """(skeleton, hyper): the spec with every traced W_std/b_std replaced by a :class:`_Slot`, and
    the traced values in slot order (the arguments of the jitted reference)."""
    hyper = []

    def strip(leaf):
        if not isinstance(leaf, _spec.Dense):
            return leaf
        slots = {}
        for name in ("W_std", "b_std"):
            if is_tracer(getattr(leaf, name)):
                slots[name] = _Slot(len(hyper))
                hyper.append(getattr(leaf, name))
        return dataclasses.replace(leaf, **slots)

    return _map_leaves(layer_spec, strip), tuple(hyper)


def _fill(skeleton, hyper):
    """The spec of ``skeleton`` with each slot's value from ``hyper``."""

    def fill(leaf):
        if not isinstance(leaf, _spec.Dense):
            return leaf
        return dataclasses.replace(leaf, **{name: hyper[getattr(leaf, name).index] for name in ("W_std", "b_std")
                                            if isinstance(getattr(leaf, name), _Slot)})

    return _map_leaves(skeleton, fill)


def _cache_key(node):
    """A hashable key equal for specs whose reference recursions are equal: closed-form rules by
    value, other activations by identity, everything else by its fields."""
    if isinstance(node, _spec.Act):
        rule = node.activation.dual
        return _spec.Act, rule if isinstance(rule, _act.CLOSED_FORMS) else node.activation
    if isinstance(node, tuple):
        return tuple(_cache_key(c) for c in node)
    if not dataclasses.is_dataclass(node) or isinstance(node, _Slot):
        return node
    return (type(node), *(_cache_key(getattr(node, f.name)) for f in dataclasses.fields(node)))


def _reference_kernels(layer_spec, names, diagonal):
    """f(x1[, x2]) -> (kernels..., cov1[, cov2]) by the reference recursion, in jax.numpy."""
    jax = _jax()
    layer_spec = _traceable(layer_spec)

    def per_point(x):  # Σ(x, x), Θ(x, x) of each row: (N,), (N,)
        nngp, ntk = jax.vmap(lambda row: _reference.infinite_kernels(row[None], None, layer_spec))(x)
        return nngp[:, 0, 0], ntk[:, 0, 0]

    def reference(x1, x2=None):
        nngp1, ntk1 = per_point(x1)
        if diagonal:
            res = {"nngp": nngp1, "ntk": ntk1}
            return (*(res[n] for n in names), nngp1)
        nngp, ntk = _reference.infinite_kernels(x1, x2, layer_spec)
        res = {"nngp": nngp, "ntk": ntk}
        return (*(res[n] for n in names), nngp1, *(() if x2 is None else (per_point(x2)[0],)))

    return reference


def _traceable(layer_spec):
    """The spec with every quadrature rule evaluating the activation's namespace-generic φ, φ'.

    Built-in quadrature activations keep NumPy twins of φ, φ' in their rule for Numba; the
    Activation's own ``fn``/``df`` compute the same function in any namespace. A central-difference
    φ' (ElementwiseNumerical without ``df``) becomes φ's exact JAX derivative.
    """

    def act(leaf):
        activation = leaf.activation
        rule = activation.dual
        if not isinstance(rule, _act.QuadratureDual):
            return leaf
        df = activation.df
        if hasattr(df, "central_difference_of"):
            df = _elementwise_derivative(activation.fn)
        return _spec.Act(dataclasses.replace(activation, dual=_act.QuadratureDual(activation.fn, df, rule.deg)))

    return _map_leaves(layer_spec, lambda leaf: act(leaf) if isinstance(leaf, _spec.Act) else leaf)


def _map_leaves(node, fn):
    """``node`` with fn applied to every leaf: a node is a container when a field holds spec nodes
    (Serial's and Parallel's tuple of layers, Repeat's layer)."""
    def is_node(v):
        return isinstance(v, _spec.Layer.__args__)

    children = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)
                if is_node(getattr(node, f.name)) or (isinstance(getattr(node, f.name), tuple) and getattr(node, f.name)
                                                      and all(map(is_node, getattr(node, f.name))))}
    if not children:
        return fn(node)
    return dataclasses.replace(node, **{k: _map_leaves(v, fn) if is_node(v) else tuple(_map_leaves(c, fn) for c in v)
                                        for k, v in children.items()})


def _elementwise_derivative(fn):
    jax = _jax()
    return lambda x: jax.jvp(fn, (x,), (jax.numpy.ones_like(x),))[1]

