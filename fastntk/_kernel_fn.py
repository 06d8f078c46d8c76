"""``kernel_fn``: the front end of a network's infinite-width kernels, neural-tangents' call conventions.

Reads what the caller passed (arrays of shape (N, d) or (N, ..., d) in the layers' layout, a
``Kernel`` to continue, JAX arrays or tracers), checks it, and hands (N, d) inputs to the driver
(:mod:`fastntk.infinite`) or JAX values to :mod:`fastntk._jax_dispatch`; it returns any field of
neural-tangents' ``Kernel``. :mod:`fastntk.stax` builds the networks whose ``kernel_fn`` this is.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

from . import _backend, _conv, _jax_dispatch, infinite, spec
from . import activations as _act
from ._types import KERNEL_FIELDS, META_DEFAULTS, Kernel
from ._validation import (
    check_array,
    check_block_rows,
    check_get,
    check_out,
    check_pair,
    uses_dask,
)
from .infinite import infinite_kernels

__all__ = ["KernelFn", "as_array", "permute"]


class KernelFn:
    """``kernel_fn(x1, x2=None, get=None, *, diagonal=False, out=None, dtype=None, progress=False)``."""

    def __init__(self, layer_spec):
        self.spec = layer_spec
        self.__doc__ = _KERNEL_FN_DOC

    def __call__(self, x1, x2=None, get=None, *, diagonal=False, out=None, dtype=None, progress=False,
                 block_rows=None, backend="auto", diagonal_batch=True, diagonal_spatial=False, **kwargs):
        names = check_get(get, KERNEL_FIELDS)
        if not isinstance(x1, Kernel):  # the batch first and the features last
            x1, x2 = (None if x is None else _canonical(self.spec, x) for x in (x1, x2))
        spatial = spec.is_spatial(self.spec) or (not isinstance(x1, Kernel) and max(np.ndim(x1), np.ndim(x2)) > 2)
        if uses_dask(x1, x2):  # dask arrays in, dask arrays out: the blocks as dask tasks (needs dask)
            if spatial:
                raise NotImplementedError("dask inputs are for networks without spatial layers on (N, d) inputs; "
                                          "compute the kernels of inputs with spatial axes from NumPy arrays")
            from . import distributed

            res = distributed.kernels(self.spec, x1, x2, names, diagonal=diagonal, out=out, dtype=dtype,
                                      progress=progress, block_rows=block_rows, backend=backend,
                                      diagonal_batch=diagonal_batch)
            n1, n2 = np.shape(x1)[0], np.shape(x1 if x2 is None else x2)[0]
            return _select(get, names, _kernel_fields(res, (n1, res["width"]), (n2, res["width"]), diagonal_batch,
                                                      diagonal_spatial))
        if _jax_dispatch.uses_jax(x1, x2) or _jax_dispatch.traced_hyperparameters(self.spec):
            return self._jax(x1, x2, get, names, diagonal=diagonal, out=out, dtype=dtype, progress=progress,
                             block_rows=block_rows, backend=backend, diagonal_batch=diagonal_batch,
                             diagonal_spatial=diagonal_spatial)
        if spatial:
            if isinstance(x1, Kernel):
                raise NotImplementedError("a Kernel given as x1 continues networks without spatial layers; pass the "
                                          "inputs of a network with Conv, pooling, Flatten of spatial inputs or "
                                          "LayerNorm")
            return self._spatial(x1, x2, get, names, diagonal=diagonal, out=out, dtype=dtype, progress=progress,
                                 block_rows=block_rows, backend=backend, diagonal_batch=diagonal_batch,
                                 diagonal_spatial=diagonal_spatial)
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
            x1, x2, dtype = check_pair(_backend.move(x1, be), _backend.move(x2, be), dtype)
            n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
        if diagonal and (x2 is not None or (start is not None and start.kernel.cov2 is not None)):
            raise ValueError("diagonal=True gives Σ(x, x) and Θ(x, x) of x1 alone; x2 must be None (and a Kernel "
                             "given as x1 must be of x1 with itself: cov2 None)")
        kernels = tuple(n for n in names if n in ("nngp", "ntk"))
        outs = check_out(out, get, kernels, (n1, n2), dtype, {"x1": x1, "x2": x2}, be.xp)
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
            if x2 is None and "nngp" in kernels and not diagonal:  # x1 against itself: computed already
                res["cov1"] = res["nngp"]
            else:
                res["cov1"] = self(x1, None, "nngp", dtype=dtype, block_rows=block_rows, backend=backend)
            res["cov2"] = None if x2 is None else self(x2, None, "nngp", dtype=dtype, block_rows=block_rows,
                                                         backend=backend)
        fields = _kernel_fields(res, (n1, res["width"]), (n2, res["width"]), diagonal_batch, diagonal_spatial)
        return _select(get, names, fields)

    def _spatial(self, x1, x2, get, names, *, diagonal, out, dtype, progress, block_rows, backend, diagonal_batch,
                 diagonal_spatial):
        """Inputs (N, *S, C) or a network with spatial layers: the convolutional driver (:mod:`fastntk._conv`).
        Kernels (N1, N2) after a readout (Flatten, GlobalAvgPool, GlobalSumPool); with spatial axes S'
        left, (N1, N2, S'₀, S'₀, S'₁, S'₁, ...) (every pair of positions; neural-tangents' layout without
        its lazy axis reversal) or with ``diagonal_spatial`` (N1, N2, *S'); cov1, cov2 per input alike."""
        be = _backend.select(x1, x2, backend=backend)
        if be.name != "cpu":
            raise NotImplementedError(_backend.NO_SPATIAL)
        x1, x2, dtype = _spatial_pair(x1, x2, dtype)
        walk = _conv.walk_shape(self.spec, x1.shape[1:-1], x1.shape[-1])
        n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
        if diagonal and x2 is not None:
            raise ValueError("diagonal=True gives Σ(x, x) and Θ(x, x) of x1 alone; x2 must be None")
        kernels = tuple(n for n in names if n in ("nngp", "ntk"))
        if out is not None and (walk.shape or diagonal or len(kernels) < len(names)):
            raise ValueError("out is for the (N1, N2) kernels nngp and ntk of a network that ends in a readout "
                             "(Flatten, GlobalAvgPool, GlobalSumPool), without diagonal=True or other fields in get")
        outs = check_out(out, get, kernels, (n1, n2), dtype, {"x1": x1, "x2": x2})
        check_block_rows(block_rows)
        per_point = not kernels
        res = _conv.conv_kernels(x1, x2, self.spec, kernels or ("nngp",), dtype, be, diagonal=diagonal or per_point,
                                 out=outs, progress=progress, diagonal_spatial=diagonal_spatial,
                                 block_rows=block_rows)
        if per_point and x2 is not None:
            res["cov2"] = _conv.conv_kernels(x2, None, self.spec, ("nngp",), dtype, be, diagonal=True,
                                             diagonal_spatial=diagonal_spatial)["cov1"]
            res["x1_is_x2"] = False
        for name in ("nngp", "ntk", "cov1", "cov2"):
            if res.get(name) is not None and name not in outs:
                res[name] = res[name].astype(dtype, copy=False)
        if not diagonal_batch:  # neural-tangents' full covariances of each batch
            res["cov1"] = self(x1, None, "nngp", dtype=dtype, backend=backend, diagonal_spatial=diagonal_spatial)
            res["cov2"] = None if x2 is None else self(x2, None, "nngp", dtype=dtype, backend=backend,
                                                         diagonal_spatial=diagonal_spatial)
        shape1 = (n1, *walk.shape, walk.width)
        fields = _kernel_fields(res, shape1, (n2, *shape1[1:]), diagonal_batch, diagonal_spatial,
                                channel_axis=x1.ndim - 1)
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
        if (isinstance(x1, Kernel) or np.ndim(x1) > 2 or np.ndim(x2) > 2 or not diagonal_batch
                or spec.is_spatial(self.spec)):
            raise NotImplementedError("under jax.jit, jax.vmap or a JAX derivative kernel_fn takes x1, x2 of shape "
                                      "(N, d) and diagonal_batch=True, of networks without spatial layers; call it "
                                      "outside the transformation for a Kernel input, inputs with location axes, "
                                      "spatial layers or full batch covariances")
        kernels = tuple(n for n in names if n in ("nngp", "ntk")) or ("nngp",)
        k = _jax_dispatch.kernel_fn(self, x1, x2, kernels, diagonal=diagonal, out=None, dtype=dtype, **options)
        _, _, width, is_gaussian = infinite.kernel_program(self.spec, infinite.Start(x1.shape[-1]))
        res = dict(zip(kernels, k)) | {"cov1": k.cov1, "cov2": k.cov2, "is_gaussian": is_gaussian,
                                       "x1_is_x2": x2 is None}
        n2 = (x1 if x2 is None else x2).shape[0]
        fields = _kernel_fields(res, (x1.shape[0], width), (n2, width), True, diagonal_spatial)
        return _select(get, names, fields)


def _spatial_pair(x1, x2, dtype):
    """x1 (N1, *S, C) and x2 (N2, *S, C) or None, validated as :func:`check_pair` does (N, d) inputs, with
    the result dtype."""
    x1 = check_array(x1, "x1", ndim=max(np.ndim(x1), 2))
    if x2 is not None:
        x2 = check_array(x2, "x2", ndim=max(np.ndim(x2), 2))
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x2 must have the spatial shape and channels of x1, (N2, {', '.join(map(str, x1.shape[1:]))}); "
                             f"got x2.shape={x2.shape}")
    flat1, flat2, dtype = check_pair(x1.reshape(x1.shape[0], -1), None if x2 is None else x2.reshape(x2.shape[0], -1),
                                     dtype)
    return flat1.reshape(x1.shape), None if flat2 is None else flat2.reshape(x2.shape), dtype


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


def _kernel_fields(res, shape1, shape2, diagonal_batch, diagonal_spatial, **meta):
    """Every field of neural-tangents' Kernel: the results ``res`` (kernels, cov1, cov2, ``is_gaussian``
    and ``x1_is_x2``; other entries are not fields), the output shapes, the two flags, ``meta`` for
    other fields, and the defaults of :data:`fastntk._types.META_DEFAULTS` for the rest."""
    fields = {f: v for f, v in res.items() if f in KERNEL_FIELDS}
    return {**META_DEFAULTS, **fields, "x1_is_x2": bool(res["x1_is_x2"]), "is_gaussian": bool(res["is_gaussian"]),
            "diagonal_batch": bool(diagonal_batch), "diagonal_spatial": bool(diagonal_spatial), "shape1": shape1,
            "shape2": shape2, **meta}


_KERNEL_FN_DOC = """Infinite-width NNGP Σ and NTK Θ of the network.

Parameters
----------
x1 : ndarray of shape (N1, d) or (N1, *S, C) (images NHWC, sequences (N, L, C)), float32 or float64, or a Kernel
    First batch of inputs. Rows with zero norm give finite kernels, never NaN. A Kernel (the
    result of another kernel_fn, with cov1 and cov2) continues that network through this one:
    ``kernel_fn2(kernel_fn1(x1, x2))`` is the kernel of serial(net1, net2); x2 must be None.
x2 : ndarray of shape (N2, d) (or (N2, *S, C), the spatial shape and channels of x1) or None
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
    Checked (shape, dtype, overlap, the disk space of a memmap) before any work; a memmap is
    flushed to its file as the blocks complete. For kernels larger than RAM, bounded memory
    and resumption after an interruption, see :func:`fastntk.solvers.store_kernels`.
dtype : float32 or float64, keyword-only
    Result dtype; by default float32 when every input is float32, else float64. Every entry is
    computed in float64 and rounded once, so float32 results are neural-tangents' float64 ones
    (``jax_enable_x64``) rounded to float32; pass dtype=np.float64 to get those.
diagonal_batch : bool, keyword-only
    neural-tangents' flag: False makes ``cov1`` (``cov2``) the full (N1, N1) ((N2, N2)) NNGP of
    each batch instead of its diagonal.
diagonal_spatial : bool, keyword-only
    neural-tangents' flag: a network that ends with spatial axes S' (no Flatten or global pooling
    readout) returns the same-position covariances (N1, N2, *S') instead of every pair of positions
    (N1, N2, S'₀, S'₀, S'₁, S'₁, ...). Networks that end in a readout are unaffected.
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


def _canonical(layer_spec, x):
    """x with its axes in the order fastntk computes in (batch first, features last), by the Dense
    layers' batch_axis and channel_axis (see ``spec.layout``); x itself for the defaults."""
    if np.ndim(x) < 2:
        return x
    order = spec.layout(layer_spec, np.ndim(x))
    if order == tuple(range(np.ndim(x))):
        return x
    return permute(*as_array(x), order)


def permute(h, xp, order):
    """h's axes permuted (the array API's permute_dims; jax.numpy 0.4.23 has only transpose)."""
    return (xp.permute_dims if hasattr(xp, "permute_dims") else xp.transpose)(h, order)


def as_array(x):
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
