"""neural-tangents-compatible network combinators (fully-connected part, with branches).

Every layer and ``serial`` return ``(init_fn, apply_fn, kernel_fn)``, as
``neural_tangents.stax`` does, with the same conventions and numbers::

    from fastntk import stax
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.05))
    k = kernel_fn(x1, x2, ('nngp', 'ntk'))   # k.nngp, k.ntk: (N1, N2)

Branches as in neural-tangents: ``serial(FanOut(2), parallel(serial(Relu(), Dense(512)),
Identity()), FanInSum())`` is a residual block (FanInSum, FanInProd, FanInConcat merge);
``repeat(layer, n)`` applies a layer n times; Flatten and Dropout complete the set.

Parameters are NumPy arrays: a Dense layer holds ``(W, b)`` with W of shape
(fan_in, out_dim) and b of shape (1, out_dim) (``b = None`` when ``b_std=None``);
an activation holds ``()``. ``init_fn(jax.random.PRNGKey(k), shape)`` instead draws the JAX
arrays neural-tangents 0.6.5 draws from that key, and ``apply_fn`` computes in the namespace
of its inputs: JAX or PyTorch arrays in, the same kind out, differentiable by
``jax.grad``/``jax.jit``/``jax.vmap`` or torch autograd.

``kernel_fn`` takes JAX arrays too and returns JAX arrays, inside ``jax.jit`` and ``jax.vmap``
(a ``jax.pure_callback`` around the compiled path) and under ``jax.grad`` with respect to the
inputs or to ``W_std``/``b_std`` given as JAX values. The design choice: values come from the
compiled path whenever the hyperparameters are numbers (under jit, vmap and grad alike), and
derivatives from the plain reference recursion (``fastntk._reference``) evaluated in
``jax.numpy`` (a ``jax.custom_jvp``): exact, slower, and compiled once per network structure.
When ``W_std`` or ``b_std`` is a tracer (``jax.grad`` over it), values and derivatives both come
from that recursion. See ``fastntk._jax_dispatch``.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace

from . import _backend, _jax_dispatch, infinite, network, spec
from . import activations as _act
from ._types import KERNEL_FIELDS, Kernel
from ._validation import (
    check_array,
    check_block_rows,
    check_get,
    check_out,
    check_pair,
    check_positive,
)
from .infinite import infinite_kernels

__all__ = [
    "ABRelu",
    "Abs",
    "Activation",
    "Cos",
    "Dense",
    "Dropout",
    "Elementwise",
    "ElementwiseNumerical",
    "Erf",
    "FanInConcat",
    "FanInProd",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gelu",
    "Identity",
    "Kernel",
    "LeakyRelu",
    "Relu",
    "Sigmoid_like",
    "Silu",
    "Sin",
    "Swish",
    "Softplus",
    "Tanh",
    "fc_network",
    "parallel",
    "repeat",
    "serial",
]


class Layer(NamedTuple):
    """``(init_fn, apply_fn, kernel_fn)`` of a network; each carries its typed spec as ``.spec``."""

    init_fn: object
    apply_fn: object
    kernel_fn: object


class _KernelFn:
    """``kernel_fn(x1, x2=None, get=None, *, diagonal=False, out=None, dtype=None, progress=False)``."""

    def __init__(self, layer_spec):
        self.spec = layer_spec
        self.__doc__ = _KERNEL_FN_DOC

    def __call__(self, x1, x2=None, get=None, *, diagonal=False, out=None, dtype=None, progress=False,
                 block_rows=None, backend="auto", diagonal_batch=True, diagonal_spatial=False, **kwargs):
        names = check_get(get, KERNEL_FIELDS)
        if not isinstance(x1, Kernel):  # the batch first and the features last
            x1, x2 = (None if x is None else _canonical(self.spec, x) for x in (x1, x2))
        if _jax_dispatch.uses_jax(x1, x2) or _jax_dispatch.traced_hyperparameters(self.spec):
            return self._jax(x1, x2, get, names, diagonal=diagonal, out=out, dtype=dtype, progress=progress,
                             block_rows=block_rows, backend=backend, diagonal_batch=diagonal_batch,
                             diagonal_spatial=diagonal_spatial)
        if not isinstance(x1, Kernel) and (np.ndim(x1) > 2 or np.ndim(x2) > 2):
            if diagonal or out is not None or progress:
                raise ValueError("diagonal, out and progress are for inputs of shape (N, d); x1 and x2 of shape "
                                 "(N, ..., d) give the kernels of every pair of locations (see the docstring)")
            return _spatial_kernels(self, x1, x2, get, names, dtype, block_rows, backend, diagonal_batch,
                                    diagonal_spatial)
        if isinstance(x1, Kernel):  # continue the network that computed x1
            if not diagonal_batch:
                raise ValueError("diagonal_batch=False needs the inputs; a Kernel given as x1 carries only the "
                                 "diagonal of each batch's covariance")
            start, dtype = _start(x1, x2, dtype)
            be = _backend.select(x1.nngp, backend=backend)
            n1, n2 = start.kernel.nngp.shape
            x1 = x2 = None
        else:
            start = None
            be = _backend.select(x1, x2, backend=backend)
            x1, x2, dtype = check_pair(x1, x2, dtype)
            n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
        if diagonal and (x2 is not None or (start is not None and start.kernel.cov2 is not None)):
            raise ValueError("diagonal=True gives Σ(x, x) and Θ(x, x) of x1 alone; x2 must be None (and a Kernel "
                             "given as x1 must be of x1 with itself: cov2 None)")
        kernels = tuple(n for n in names if n in ("nngp", "ntk"))
        outs = check_out(out, get, kernels, (n1, n2), dtype, {"x1": x1, "x2": x2})
        if out is not None and len(kernels) < len(names):
            raise ValueError(f"out is for the kernels nngp and ntk; get={get!r} also asks for other fields")
        if diagonal and outs:
            raise ValueError("out is for full (N1, N2) kernels; it cannot be used with diagonal=True")
        check_block_rows(block_rows)
        # Only per-point fields asked for (get='cov1', ...): the O(N) diagonal pass, on x2 too.
        per_point = not kernels and start is None
        res = infinite_kernels(x1, x2, self.spec, kernels or ("nngp",), dtype, be, diagonal=diagonal or per_point,
                               out=outs, block_rows=block_rows, progress=progress, start=start)
        if per_point and x2 is not None:
            res["cov2"] = infinite_kernels(x2, None, self.spec, ("nngp",), dtype, be, diagonal=True)["cov1"]
            res["x1_is_x2"] = False
        if not diagonal_batch:  # neural-tangents' full covariances of each batch, (N1, N1) and (N2, N2)
            res["cov1"] = self(x1, None, "nngp", dtype=dtype, block_rows=block_rows, backend=backend)
            res["cov2"] = None if x2 is None else self(x2, None, "nngp", dtype=dtype, block_rows=block_rows,
                                                         backend=backend)
        fields = _kernel_fields(res, n1, n2, diagonal_batch, diagonal_spatial)
        return _select(get, names, fields)

    def _jax(self, x1, x2, get, names, *, diagonal, out, dtype, diagonal_batch, diagonal_spatial, **options):
        """JAX inputs (or traced hyperparameters): see :mod:`fastntk._jax_dispatch`. Concrete values take
        the NumPy path whole (any input, any get) and come back as JAX arrays; under a JAX transformation
        the kernels of (N, d) inputs are traced and the other fields follow from the shapes."""
        if out is not None:
            raise ValueError("out is for NumPy results; it cannot be used with JAX inputs or hyperparameters")
        if not (_jax_dispatch.traced_hyperparameters(self.spec) or _jax_dispatch.any_tracer((x1, x2))):
            return _jax_dispatch.to_jax(self(*_jax_dispatch.to_numpy((x1, x2)), get, diagonal=diagonal,
                                             dtype=dtype, diagonal_batch=diagonal_batch,
                                             diagonal_spatial=diagonal_spatial, **options))
        if isinstance(x1, Kernel) or np.ndim(x1) > 2 or np.ndim(x2) > 2 or not diagonal_batch:
            raise NotImplementedError("under jax.jit, jax.vmap or a JAX derivative kernel_fn takes x1, x2 of shape "
                                      "(N, d) and diagonal_batch=True; call it outside the transformation for a "
                                      "Kernel input, inputs with location axes or full batch covariances")
        kernels = tuple(n for n in names if n in ("nngp", "ntk")) or ("nngp",)
        k = _jax_dispatch.kernel_fn(self, x1, x2, kernels, diagonal=diagonal, out=None, dtype=dtype, **options)
        _, _, width, is_gaussian = infinite.kernel_program(self.spec, infinite.Start(x1.shape[-1]))
        res = dict(zip(kernels, k)) | {"cov1": k.cov1, "cov2": k.cov2, "width": width, "is_gaussian": is_gaussian,
                                       "x1_is_x2": x2 is None}
        fields = _kernel_fields(res, x1.shape[0], (x1 if x2 is None else x2).shape[0], True, diagonal_spatial)
        return _select(get, names, fields)


def _spatial_kernels(kernel_fn, x1, x2, get, names, dtype, block_rows, backend, diagonal_batch, diagonal_spatial):
    """neural-tangents' kernels of inputs of shape (N, *S, d): Dense layers act on the last axis, so the
    kernel of locations s of x1ₙ and s' of x2ₘ is the kernel of the two d-vectors x1[n, s], x2[m, s'].

    nngp/ntk: (N1, N2, S₀, S₀', S₁, S₁', ...) (location axes of x1 and x2 interleaved), or with
    ``diagonal_spatial`` (S₀ = S₀', ...) their location diagonal (N1, N2, *S). cov1: the same for x1
    against itself per point, (N1, S₀, S₀, ...) or (N1, *S); cov2 likewise for x2 (None when x2 is None).
    """
    x1 = np.asarray(x1)
    x2 = None if x2 is None else np.asarray(x2)
    if x1.ndim < 2 or (x2 is not None and (x2.ndim < 2 or x2.shape[-1] != x1.shape[-1])):
        raise ValueError(f"x1 and x2 must be of shape (N, ..., d) with the same d; got x1.shape={x1.shape}, "
                         f"x2.shape={None if x2 is None else x2.shape}")
    shape2 = x1.shape if x2 is None else x2.shape
    if diagonal_spatial and shape2[1:-1] != x1.shape[1:-1]:
        raise ValueError(f"diagonal_spatial=True needs the same locations in x1 and x2; got x1.shape={x1.shape}, "
                         f"x2.shape={shape2}")
    kernels = tuple(n for n in names if n in ("nngp", "ntk")) or ("nngp",)
    d = x1.shape[-1]
    flat = kernel_fn(x1.reshape(-1, d), None if x2 is None else x2.reshape(-1, d), kernels, dtype=dtype,
                     block_rows=block_rows, backend=backend)

    def arrange(k, s1, s2):  # (N1·|S1|, N2·|S2|) -> (N1, N2, S1₀, S2₀, S1₁, S2₁, ...) or its location diagonal
        n = len(s1)
        k = k.reshape(-1, *s1, k.shape[1] // math.prod(s2), *s2)
        k = k.transpose(0, n + 1, *[a for i in range(n) for a in (1 + i, n + 2 + i)])
        for i in range(n if diagonal_spatial else 0):
            k = np.diagonal(k, axis1=2, axis2=3)  # moves the diagonal last: locations stay in order
        return k

    s1, s2 = x1.shape[1:-1], shape2[1:-1]
    res = {name: arrange(k, s1, s2) for name, k in zip(kernels, flat)}

    def per_point(x):  # each point's locations against themselves
        if x is None:
            return None
        blocks = [kernel_fn(xn.reshape(-1, d), None, "nngp", dtype=dtype, backend=backend) for xn in x]
        return np.stack([arrange(b, x.shape[1:-1], x.shape[1:-1])[0, 0] for b in blocks])

    if x2 is None and "nngp" in res:
        res["cov1"] = np.stack([res["nngp"][n, n] for n in range(x1.shape[0])])
    else:
        res["cov1"] = per_point(x1)
    res["cov2"] = per_point(x2)
    if not diagonal_batch:
        res["cov1"] = arrange(kernel_fn(x1.reshape(-1, d), None, "nngp", dtype=dtype, backend=backend), s1, s1)
        res["cov2"] = None if x2 is None else arrange(
            kernel_fn(x2.reshape(-1, d), None, "nngp", dtype=dtype, backend=backend), s2, s2)
    shape = spec.output_shape(kernel_fn.spec, x1.shape)
    fields = res | {"x1_is_x2": x2 is None, "is_gaussian": flat.is_gaussian, "is_input": False, "is_reversed": False,
                    "diagonal_batch": bool(diagonal_batch), "diagonal_spatial": bool(diagonal_spatial),
                    "shape1": shape, "shape2": (shape2[0], *shape[1:]), "batch_axis": 0, "channel_axis": x1.ndim - 1,
                    "mask1": None, "mask2": None}
    return _select(get, names, fields)


def _start(kernel, x2, dtype):
    """The :class:`infinite.Start` of a Kernel given as x1 (and the result dtype): its nngp (N1, N2),
    ntk (or None), cov1 (N1,), cov2 (N2,) or None (symmetric), shape1 (the width is its last entry;
    None: unknown), is_gaussian (the covariance of Gaussian pre-activations: False for a Kernel built
    by hand without it, as neural-tangents' input kernel) and x1_is_x2 (also when cov2 is None)."""
    if x2 is not None:
        raise ValueError("x2 must be None when x1 is a Kernel: the Kernel holds both sides")
    nngp = check_array(getattr(kernel, "nngp", None), "x1.nngp", ndim=2)
    n1, n2 = nngp.shape
    ntk = getattr(kernel, "ntk", None) if "ntk" in kernel._fields else None
    ntk = None if ntk is None else check_array(ntk, "x1.ntk", ndim=2)
    cov1 = check_array(kernel.cov1, "x1.cov1", ndim=1)
    cov2 = None if kernel.cov2 is None else check_array(kernel.cov2, "x1.cov2", ndim=1)
    if (cov1.shape != (n1,) or (cov2 is None and n1 != n2) or (cov2 is not None and cov2.shape != (n2,))
            or (ntk is not None and ntk.shape != (n1, n2))):
        raise ValueError(f"the Kernel's arrays do not fit: nngp {nngp.shape}, ntk {None if ntk is None else ntk.shape},"
                         f" cov1 {cov1.shape}, cov2 {None if cov2 is None else cov2.shape} (cov2 None: symmetric)")
    dtype = np.dtype(dtype) if dtype is not None else nngp.dtype
    width = None if kernel.shape1 is None else int(kernel.shape1[-1])
    k = Kernel(("nngp", "ntk"), (nngp, ntk), cov1, cov2)
    return infinite.Start(width, k, bool(kernel.is_gaussian), bool(kernel.x1_is_x2) or cov2 is None), dtype


def _select(get, names, fields):
    """What kernel_fn returns for ``get`` (its lower-cased ``names``) from every Kernel field: the field
    itself for a string, else a Kernel of the named fields with the others as attributes."""
    if isinstance(get, str):
        return fields[names[0]]
    return Kernel(names, [fields[n] for n in names], **{f: v for f, v in fields.items()
                                                         if f not in names and f not in ("nngp", "ntk")})


def _kernel_fields(res, n1, n2, diagonal_batch, diagonal_spatial):
    """Every field of neural-tangents' Kernel from infinite_kernels' results ``res`` (its kernels,
    cov1, cov2, the output ``width`` (None: unknown), ``is_gaussian`` and ``x1_is_x2``)."""
    fields = {f: v for f, v in res.items() if f not in ("width", "x1_is_x2", "is_gaussian")}
    return fields | {
        "x1_is_x2": bool(res["x1_is_x2"]), "is_gaussian": bool(res["is_gaussian"]), "is_input": False,
        "is_reversed": False, "diagonal_batch": bool(diagonal_batch), "diagonal_spatial": bool(diagonal_spatial),
        "shape1": (n1, res["width"]), "shape2": (n2, res["width"]), "batch_axis": 0, "channel_axis": 1,
        "mask1": None, "mask2": None}


_KERNEL_FN_DOC = """Infinite-width NNGP Σ and NTK Θ of the network.

Parameters
----------
x1 : ndarray of shape (N1, d), float32 or float64, or a Kernel
    First batch of inputs. Rows with zero norm give finite kernels, never NaN. A Kernel (the
    result of another kernel_fn, with cov1 and cov2) continues that network through this one:
    ``kernel_fn2(kernel_fn1(x1, x2))`` is the kernel of serial(net1, net2); x2 must be None.
x2 : ndarray of shape (N2, d) or None
    Second batch; None means x1 (the result is then symmetric and half the work).
get : None, a field name or a tuple of them
    Field names are neural-tangents' (``fastntk._types.KERNEL_FIELDS``: 'nngp', 'ntk', 'cov1',
    'cov2', 'shape1', 'x1_is_x2', 'is_gaussian', ...), in any case ('NTK' is 'ntk'). A string
    returns that field; None (= ('nngp', 'ntk')) or a tuple, a :class:`Kernel`: a
    namedtuple-like tuple of those fields in that order, with every other field as an attribute.
    Only the kernels asked for are computed (get='cov1' is an O(N1) pass).
diagonal : bool, keyword-only
    Return only Σ(x1ᵢ, x1ᵢ) and Θ(x1ᵢ, x1ᵢ), shape (N1,): O(N1·depth) work and memory.
out : ndarray, tuple or dict of them, keyword-only
    Preallocated results of shape (N1, N2) and the result dtype with unit-stride rows,
    e.g. ``np.memmap``; one array when ``get`` is a string, else one per name of ``get``.
dtype : float32 or float64, keyword-only
    Result dtype; by default float32 when every input is float32, else float64. Every entry is
    computed in float64 and rounded once, so float32 results are neural-tangents' float64 ones
    (``jax_enable_x64``) rounded to float32; pass dtype=np.float64 to get those.
diagonal_batch : bool, keyword-only
    neural-tangents' flag: False makes ``cov1`` (``cov2``) the full (N1, N1) ((N2, N2)) NNGP of
    each batch instead of its diagonal.
diagonal_spatial : bool, keyword-only
    neural-tangents' flag; fully-connected networks have no spatial axes, so it changes nothing.
**kwargs
    Other neural-tangents keyword arguments (``rng``, ``mask_constant``, ...) are accepted and,
    as there for layers that do not use them, ignored.
progress : bool, keyword-only
    Show a progress bar.
backend : 'auto' or 'cpu', keyword-only
    Where to compute; 'auto' chooses by the type of the inputs (NumPy arrays: 'cpu').
block_rows : int, keyword-only
    Rows of x1 per tile of the fused pass; by default about 32 MiB of each result per tile.
    Results agree to rounding whatever its value (BLAS may block other tiles differently).

Returns
-------
Kernel or ndarray, dtype as above. The readout width O does not appear:
the kernel of an O-output network is Σ ⊗ I_O.

Raises
------
ValueError, TypeError
    Bad shapes, dtypes, NaN/inf, unknown ``get``.
MemoryError
    The results would not fit in available memory (checked before allocating).

JAX
---
JAX arrays in give JAX arrays out (a :class:`Kernel` is then a JAX pytree); the dtype is the
one above, as JAX canonicalises it (float32 with ``jax_enable_x64`` off). Concrete arrays are
computed by the compiled path. Inside ``jax.jit``/``jax.vmap`` the compiled path runs in a
``jax.pure_callback`` (once per batch element under vmap). Derivatives (``jax.grad``,
``jax.jvp``, ``jax.jacfwd`` ... in x1, x2) are the JVP of the reference recursion
``fastntk._reference.infinite_kernels`` in ``jax.numpy``: exact, O(N1·N2·depth) JAX work, slower
than the compiled values, which stay those of the compiled path. ``W_std``/``b_std`` passed to
``stax.Dense`` as tracers (``jax.grad`` over them) make the whole call the traced reference
recursion. Derivatives are finite wherever the kernel is smooth; at ρ = ±1 (parallel inputs, and
coincident points with x2 None), where the ReLU-family kernels are not differentiable, the
derivative returned is that along the directions keeping ρ = ±1 (the mean of the one-sided
derivatives). Activations with quadrature rules differentiate through their JAX φ, φ';
``Elementwise`` rules must be written in ``jax.numpy`` (with ``d_nngp_fn`` given) to be
differentiated. ``out`` cannot be used with JAX arrays.
"""


def _layer(layer_spec):
    """The (init_fn, apply_fn, kernel_fn) of a spec node; each function carries it as ``.spec``."""
    kernel_fn = _KernelFn(layer_spec)

    def init_fn(rng, input_shape):
        """(output_shape, params) of the network for inputs of shape input_shape.

        ``rng``: an int seed or numpy Generator (NumPy params), or a JAX PRNG key
        (neural-tangents' JAX params, drawn exactly as ``neural_tangents.stax`` 0.6.5 does).
        """
        shape = _input_shape(input_shape)
        order = spec.layout(layer_spec, len(shape))
        out_shape, params = network.init(layer_spec, rng, tuple(shape[a] for a in order))
        if order == tuple(range(len(shape))):
            return out_shape, params
        back = tuple(np.argsort(order))  # canonical (batch first, features last) -> the layers' layout
        b_shape = [1] * len(shape)

        def to_layout(W, b):  # b: features on channel_axis, as neural-tangents' Dense draws it
            if b is None:
                return W, b
            b_shape[order[-1]] = b.shape[-1]
            return W, b.reshape((*b.shape[:b.ndim - len(shape)], *b_shape))

        return tuple(out_shape[a] for a in back), network.map_dense(layer_spec, params, to_layout)

    def apply_fn(params, inputs, *, rng=None, **kwargs):
        """Outputs of the finite network with parameters ``params`` on ``inputs`` of shape (..., d).

        ``rng``: the random key of Dropout layers in mode 'train' (a ``jax.random.PRNGKey``, split
        and drawn from as neural-tangents does, or an int seed / numpy Generator); unused by
        every other layer. Any other keyword is refused.
        """
        if kwargs:
            raise TypeError(f"apply_fn got unexpected keyword arguments {sorted(kwargs)}; accepted: rng "
                            "(the key of Dropout layers in mode 'train')")
        return _apply(layer_spec, params, inputs, rng)

    init_fn.spec = apply_fn.spec = layer_spec  # read by fastntk.empirical
    return Layer(init_fn, apply_fn, kernel_fn)


def _canonical(layer_spec, x):
    """x with its axes in the order fastntk computes in (batch first, features last), by the Dense
    layers' batch_axis and channel_axis (see ``spec.layout``); x itself for the defaults."""
    if np.ndim(x) < 2:
        return x
    order = spec.layout(layer_spec, np.ndim(x))
    if order == tuple(range(np.ndim(x))):
        return x
    return _permute(*_as_array(x), order)


def _permute(h, xp, order):
    """h's axes permuted (the array API's permute_dims; jax.numpy 0.4.23 has only transpose)."""
    return (xp.permute_dims if hasattr(xp, "permute_dims") else xp.transpose)(h, order)


def _input_shape(input_shape):
    """input_shape as a tuple of ints (at least 1-D: the last axis is the features, a positive int);
    -1 on the other axes means any size, as in neural-tangents' ``init_fn(key, (-1, d))``."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in shape)
            or any(n < 1 and n != -1 for n in shape) or shape[-1] < 1):
        raise ValueError(f"input_shape must be a tuple of ints such as (N, d) or (-1, d), d positive; got "
                         f"{input_shape!r}")
    return tuple(int(n) for n in shape)


def _as_array(x):
    """(x, its namespace): any array-API array (NumPy, JAX, PyTorch) as is, else np.asarray(x).

    JAX arrays and tracers get jax.numpy directly: before jax 0.4.32 they have no
    ``__array_namespace__``, which array_api_compat asks them for."""
    if _jax_dispatch.uses_jax(x):
        return x, _act.namespace(x)[0]
    try:
        return x, array_namespace(x)
    except TypeError:
        h = np.asarray(x)
        return h, array_namespace(h)


def _is_real(h, xp):
    """Real floating or integer dtype. NumPy and JAX dtypes are NumPy dtypes (and jax.numpy before
    0.4.32 has no ``isdtype``); others (PyTorch) are asked through their namespace."""
    try:
        return np.dtype(h.dtype).kind in "fiu"
    except TypeError:
        return xp.isdtype(h.dtype, ("real floating", "integral"))


def _apply(layer_spec, params, x, rng=None):
    h, xp = _as_array(x)
    if h.ndim < 1 or not _is_real(h, xp):
        raise ValueError(f"inputs must be a real array of shape (..., d); got shape {h.shape}, dtype {h.dtype}")
    order = spec.layout(layer_spec, max(h.ndim, 1))
    canonical = order == tuple(range(h.ndim))
    if not canonical:  # compute with the batch first and the features last, b likewise
        h = _permute(h, xp, order)
        params = network.map_dense(layer_spec, params, lambda W, b: (W, None if b is None else xp.reshape(
            b, (*b.shape[:b.ndim - h.ndim], *[1] * (h.ndim - 1), b.shape[b.ndim - h.ndim + order[-1]]))))
    net = network.check_params(layer_spec, params, h.shape[-1])
    random = any(isinstance(leaf, spec.Dropout) and leaf.mode == "train" for leaf, _ in net)
    out = network.apply(net, h, network.leaf_keys(layer_spec, rng) if random else None)
    return out if canonical else _permute(out, xp, tuple(int(a) for a in np.argsort(order)))


def serial(*layers):
    """Layers applied one after the other; params are a list with one entry per layer."""
    return _layer(spec.Serial(_specs(layers, "serial")))


def _specs(layers, caller):
    """The specs of ``layers`` (fastntk.stax layers), TypeError naming the argument otherwise."""
    for i, layer in enumerate(layers):
        kernel_fn = layer[2] if isinstance(layer, tuple) and len(layer) == 3 else None
        if not isinstance(kernel_fn, _KernelFn):
            raise TypeError(f"{caller} argument {i} must be a fastntk.stax layer; got {type(layer).__name__}")
    return tuple(layer[2].spec for layer in layers)


def parallel(*layers):
    """Layer k applied to branch k (after FanOut(len(layers))); params are a tuple, one entry per layer.

    Each layer maps one branch to one; the kernels of the branches are independent until a FanIn
    layer merges them.
    """
    if not layers:
        raise ValueError("parallel needs at least one layer")
    return _layer(_checked(spec.Parallel(_specs(layers, "parallel"))))


def repeat(layer, n):
    """``layer`` applied n times, each time with parameters of its own (= serial(*[layer] * n)).

    ``layer`` must keep the shape of its input. Params are those of ``layer`` with each array
    stacked on a new leading axis of length n, as neural-tangents' (``lax.scan``) are.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    return _layer(_checked(spec.Repeat(_specs([layer], "repeat")[0], int(n))))


def _checked(node):
    """node, once its branches fit (spec.arity raises a ValueError otherwise)."""
    spec.arity(node, len(node.layers) if isinstance(node, spec.Parallel) else 1)
    return node


def FanOut(num):
    """``num`` copies of the input, one per branch (for parallel)."""
    if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 1:
        raise ValueError(f"num must be a positive integer; got {num!r}")
    return _layer(spec.FanOut(int(num)))


def FanInSum():
    """The sum of the branches. Kernels: Σ = Σᵢ Σᵢ, Θ = Σᵢ Θᵢ (the branches must be Gaussian:
    each must end in a Dense layer or pass a Gaussian input through)."""
    return _layer(spec.FanInSum())


def FanInProd():
    """The elementwise product of the branches. Kernels: Σ = Πᵢ Σᵢ, Θ = Σᵢ Θᵢ Πⱼ≠ᵢ Σⱼ."""
    return _layer(spec.FanInProd())


def FanInConcat(axis=-1):
    """The concatenation of the branches along ``axis``. Kernels (axis -1, the features): the
    width-weighted mean Σ = Σᵢ nᵢΣᵢ / Σᵢ nᵢ (the plain mean for equal widths nᵢ), same for Θ;
    the result is not Gaussian, so a Dense layer must follow before an activation."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"axis must be an integer; got {axis!r}")
    return _layer(spec.FanInConcat(int(axis)))


def Flatten():
    """All non-batch axes into one: (N, ...) -> (N, prod(...)); a no-op on (N, d) inputs."""
    return _layer(spec.Flatten())


def Dropout(rate, mode="train"):
    """Inverted dropout with keep rate ``rate`` in (0, 1] (neural-tangents': rate=1 keeps everything).

    'train': apply_fn keeps each entry with probability ``rate`` and divides it by ``rate`` (the
    mask drawn from apply_fn's ``rng``); the kernels scale Σ(x, x) and Θ(x, x) by 1/rate (only
    the per-point variances when x1 and x2 differ) and are no longer Gaussian. 'test': identity.
    """
    if mode not in ("test", "train"):
        raise ValueError(f"mode must be 'train' or 'test'; got {mode!r}")
    rate = _finite(rate, "rate")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate (the keep rate) must be in (0, 1]; got {rate!r}")
    return _layer(spec.Dropout(rate, mode))


def _act_layer(activation):
    return _layer(spec.Identity() if activation.dual is None else spec.Act(activation))


def Dense(out_dim, W_std=1.0, b_std=None, batch_axis=0, channel_axis=-1, parameterization="ntk", s=(1, 1)):
    """Fully-connected layer, neural-tangents' signature (arguments in its order).

    'ntk' parameterization (Jacot et al. 2018, arXiv:1806.07572): z = W_std/√fan_in·h W + b_std·b
    with W, b ~ N(0, 1). 'standard' (Sohl-Dickstein et al. 2020, arXiv:2001.07301): z = h W/√s_in + b
    with W ~ N(0, W_std²·s_in/fan_in) of shape (fan_in, s_out·out_dim), b ~ N(0, b_std²); its NTK
    has n_in = fan_in/s_in. ``s=(s_in, s_out)`` (standard only) are the width scalings of that
    paper: s_in must be the previous layer's s_out (1 at the inputs). ``b_std=None`` means no
    bias parameter at all, which differs from ``b_std=0.0`` in the standard-parameterization NTK
    (+1 per layer). ``batch_axis``, ``channel_axis``: the batch and feature axes of the inputs;
    fastntk computes with the batch first and the features last (the defaults), and other axes
    raise NotImplementedError where the inputs' rank is known.
    """
    return _layer(_dense(out_dim, W_std, b_std, parameterization, s=s, batch_axis=batch_axis,
                         channel_axis=channel_axis))


def _dense(out_dim, W_std, b_std, parameterization, out_dim_name="out_dim", s=(1, 1), batch_axis=0, channel_axis=-1):
    if isinstance(out_dim, bool) or not isinstance(out_dim, numbers.Integral) or out_dim < 1:
        raise ValueError(f"{out_dim_name} must be a positive integer; got {out_dim!r}")
    W_std = _std(W_std, "W_std")  # 0: neural-tangents allows it (phase diagrams)
    b_std = None if b_std is None else _std(b_std, "b_std")
    for value, name in ((batch_axis, "batch_axis"), (channel_axis, "channel_axis")):
        if isinstance(value, str) and value in ("ntk", "standard"):
            raise TypeError(f"{name}={value!r}: Dense takes neural-tangents' argument order (out_dim, W_std, b_std, "
                            "batch_axis, channel_axis, parameterization, s); pass parameterization= by keyword")
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int; got {value!r}")
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard'; got {parameterization!r}")
    try:
        s = tuple(s)
    except TypeError:
        s = ()
    if len(s) != 2 or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in s):
        raise ValueError(f"s must be a pair of positive ints (s_in, s_out); got {s!r}")
    return spec.Dense(int(out_dim), W_std, b_std, parameterization, (int(s[0]), int(s[1])), int(batch_axis),
                      int(channel_axis))


def _std(value, name):
    """W_std or b_std: a finite real >= 0 as a float, or a JAX tracer (``jax.grad`` over it), kept as is."""
    value = _jax_dispatch.hyperparameter(value, name)
    return value if _jax_dispatch.is_tracer(value) else check_positive(value, name, allow_zero=True)


def _finite(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return float(value)


def ABRelu(a, b, do_stabilize=False):
    """φ(x) = a·min(x, 0) + b·max(x, 0).

    ``do_stabilize`` is accepted as neural-tangents' is and changes nothing: fastntk's dual
    kernels work on variances rescaled by exact powers of two, so they are exact at any depth.
    """
    _check_bool(do_stabilize, "do_stabilize")
    return _act_layer(_act.abrelu(_finite(a, "a"), _finite(b, "b")))


def Relu(do_stabilize=False):
    """max(x, 0); ``do_stabilize`` as in :func:`ABRelu` (accepted, not needed)."""
    _check_bool(do_stabilize, "do_stabilize")
    return _act_layer(_act.relu())


def LeakyRelu(alpha, do_stabilize=False):
    """max(x, 0) + alpha·min(x, 0); ``do_stabilize`` as in :func:`ABRelu` (accepted, not needed)."""
    _check_bool(do_stabilize, "do_stabilize")
    return _act_layer(_act.leaky_relu(_finite(alpha, "alpha")))


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")


def Abs():
    return _act_layer(_act.abs_())


def Erf(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·erf(b·x) + c."""
    return _act_layer(_act.erf(_finite(a, "a"), _finite(b, "b"), _finite(c, "c")))


def Sigmoid_like():
    """0.5·erf(x/2.4020563531719796) + 0.5, neural-tangents' erf stand-in for the sigmoid."""
    return _act_layer(_act.sigmoid_like())


def Gelu(approximate=False):
    """φ(x) = x·Φ(x); ``approximate=True``: the tanh approximation (kernels by quadrature).

    With ``approximate=True`` the kernels are those of the tanh form the network computes,
    0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), by Gauss–Hermite quadrature, so kernel and
    network agree. neural-tangents differs here: its kernel is the exact GELU's while its
    network uses the tanh form (kernels ~1e-4 apart for unit-variance inputs); fastntk warns once.
    """
    if approximate:
        _warn_once("Gelu", "fastntk's stax.Gelu(approximate=True) kernel is that of the tanh-form network it builds; "
                   "neural-tangents returns the exact-GELU kernel for that network (~1e-4 apart)")
    return _act_layer(_act.gelu(bool(approximate)))


def Sin(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·sin(b·x + c)."""
    return _act_layer(_act.sin(_finite(a, "a"), _finite(b, "b"), _finite(c, "c")))


def Cos(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·cos(b·x + c)."""
    return _act_layer(_act.cos(_finite(a, "a"), _finite(b, "b"), _finite(c, "c")))


def Activation(name):
    """The activation registered as ``name`` in ``fastntk.activations.ACTIVATIONS`` (default parameters)."""
    return _act_layer(_act.by_name(name))


def fc_network(depth, activation="relu", W_std=1.0, b_std=None, parameterization="ntk", width=512, out_dim=1):
    """``depth`` × (Dense(width) + activation) then a Dense(out_dim) readout, one W_std/b_std throughout.

    ``activation`` is a name in ``fastntk.activations.ACTIVATIONS``. ``width`` enters the
    kernels only in the 'standard' parameterization (and the finite network).
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer; got {depth!r}")
    hidden = _layer(_dense(width, W_std, b_std, parameterization, "width"))
    act = _act_layer(_act.by_name(activation))
    return serial(*[hidden, act] * depth, _layer(_dense(out_dim, W_std, b_std, parameterization)))


def Identity():
    """No-op layer."""
    return _act_layer(_act.identity())


def Tanh(deg=25):
    """tanh; dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _act_layer(_act.tanh(deg))


def Softplus(deg=25):
    """log(1 + eˣ); dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _act_layer(_act.softplus(deg))


def Silu(deg=25):
    """x·sigmoid(x) (SiLU, Swish); dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _act_layer(_act.silu(deg))


def ElementwiseNumerical(fn, deg, df=None):
    """Any activation φ = fn, dual kernels by deg×deg Gauss–Hermite quadrature.

    ``fn`` and ``df`` (φ') must be NumPy-vectorised and compilable by Numba; without ``df``
    φ' is a central difference of ``fn`` (relative error ~1e-10).
    """
    return _act_layer(_act.numerical(fn, deg, df))


def Elementwise(fn=None, nngp_fn=None, d_nngp_fn=None):
    """Activation φ = fn with given dual kernels ``nngp_fn(cov12, var1, var2)`` = E[φ(u)φ(v)]
    and ``d_nngp_fn`` = E[φ'(u)φ'(v)] (from nngp_fn when None: see ``activations.elementwise``).
    ``fn=None``: kernels only; ``nngp_fn=None``: finite network only, as in neural-tangents."""
    return _act_layer(_act.elementwise(fn, nngp_fn, d_nngp_fn))


Swish = Silu


# --- neural-tangents 0.6.5's other elementwise activations (stax/elementwise.py) ------------
# Same signatures and defaults; where neural-tangents' kernel is not that of its own network
# (Hermite at variances other than 1), fastntk's is the network's, with a one-time warning.

__all__ += ["Exp", "ExpNormalized", "Gabor", "Gaussian", "Hermite", "Monomial", "Polynomial",
            "RectifiedMonomial", "Rbf", "Sign"]

_WARNED = set()


def _warn_once(key, message):
    if key not in _WARNED:
        _WARNED.add(key)
        import warnings

        warnings.warn(message, UserWarning, stacklevel=3)


def Exp(a=1, b=1):
    """φ(x) = a·exp(b·x)."""
    return _act_layer(_act.exp(_finite(a, "a"), _finite(b, "b")))


def ExpNormalized(gamma=1, shift=-1, do_clip=False):
    """The "Gaussian normalised kernel" (Shankar et al. 2020, arXiv:2003.02237), a kernel only:
    Σ' = s·exp(γ(ρ + shift)), Θ' = γ·exp(γ(ρ + shift))·Θ, s = √(Σ₁₁Σ₂₂), ρ = Σ₁₂/s (clipped to
    [−1, 1] with ``do_clip``). ``apply_fn`` raises NotImplementedError, as neural-tangents'.
    """
    return _act_layer(_act.exp_normalized(_finite(gamma, "gamma"), _finite(shift, "shift"), bool(do_clip)))


def Gaussian(a=1, b=-1):
    """φ(x) = a·exp(b·x²). For b > 0, E[φ(u)φ(v)] is infinite where I − 2bΣ is not positive
    definite (a variance ≥ 1/(2b)): the dual kernels are +inf there, and kernel_fn raises
    OverflowError (neural-tangents returns a finite number from its product formula when
    both variances exceed 1/(2b))."""
    return _act_layer(_act.gaussian(_finite(a, "a"), _finite(b, "b")))


def Rbf(gamma=1.0):
    """φ(x) = √2·sin(√(2γ)·x + π/4): Σ' = exp(−γ(Σ₁₁ + Σ₂₂ − 2Σ₁₂)), the RBF kernel of the
    layer's inputs (γ = 1/(2ℓ²))."""
    return _act_layer(_act.rbf(check_positive(gamma, "gamma", allow_zero=True)))


def Sign():
    """φ(x) = sign(x): Σ' = 1 − 2θ/π; Θ' = 0 (sign' = 0 wherever it is defined, so the layers
    below a Sign do not move its output)."""
    return _act_layer(_act.sign())


def Gabor():
    """φ(x) = exp(−x²)·sin(x)."""
    return _act_layer(_act.gabor())


def Monomial(degree):
    """φ(x) = xⁿ, n = ``degree``: any integer 0 ≤ n ≤ 170 (neural-tangents: 0 to 5)."""
    return _act_layer(_act.monomial(degree))


def RectifiedMonomial(degree):
    """φ(x) = [x ≥ 0]·xⁿ: the arc-cosine kernel of degree n (Cho & Saul 2009), 0 ≤ n ≤ 64."""
    return _act_layer(_act.rectified_monomial(degree))


def Polynomial(coef):
    """φ(x) = coef[0] + coef[1]·x + … + coef[n]·xⁿ (closed form; see ``activations.polynomial``)."""
    return _act_layer(_act.polynomial(coef))


def Hermite(degree):
    """φ(x) = Heₙ(x)/√(n!), the probabilists' Hermite polynomial normalised to unit norm under N(0, 1).

    The kernel is that of this network for any variance the layer receives:
    Σ' = Σ_j n!/((n − 2j)!·j!²·4ʲ)·Σ₁₂ⁿ⁻²ʲ·((Σ₁₁ − 1)(Σ₂₂ − 1))ʲ. neural-tangents returns Σ₁₂ⁿ
    (and Θ' = n·Σ₁₂ⁿ⁻¹), which is this where Σ₁₁ = Σ₂₂ = 1 and not elsewhere; fastntk warns
    once about the difference.
    """
    layer = _act_layer(_act.hermite(degree))
    _warn_once("Hermite", "fastntk's stax.Hermite kernel is that of the network for any pre-activation "
               "variance; neural-tangents' (Σ12**degree) assumes unit variances and differs elsewhere")
    return layer
