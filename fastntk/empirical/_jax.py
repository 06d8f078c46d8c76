"""Empirical NTK of plain JAX functions: the adapter behind ``empirical_ntk_fn(apply_fn)``.

``apply_fn(params, x)`` is any JAX-traceable function of a parameter pytree (dicts, lists, tuples,
... of float arrays; ``None`` leaves are skipped) and inputs x of shape (N, d), returning (N, O) or
(N,). Rows must be independent (no batch statistics), as with neural-tangents' ``vmap_axes=0``.
The NTK is taken with respect to every leaf of ``params``:

* implementation 1 (and 0, 3: an arbitrary function has no structured path): per-sample
  Jacobians ``vmap(jacrev(f))``, flattened leaf by leaf to (B, O, P);
* implementation 2: NTK-vector products, as neural-tangents does: vjp on an x2 block pulls back
  the N2·O unit cotangents, then jvp on the x1 block pushes each forward.

Both are jitted here and run by the block loop of :mod:`fastntk.empirical._autodiff` (blocks of
rows, memory O(block·O·P); with x2 None the diagonal blocks reuse x1's Jacobian).

Recognition (``is_function``): a callable that is neither a fastntk apply_fn nor a torch module,
with ``jax`` already imported (a JAX function cannot exist otherwise). jax is imported only here,
and only then. float64 inputs run under ``jax.enable_x64`` when x64 is off, so the result dtype
follows the inputs as on the NumPy path.
"""

from __future__ import annotations

import collections
import contextlib
import sys

import numpy as np

from .. import _jax_dispatch
from .._validation import check_block_rows, check_finite, check_pair
from ..network import _threefry_unpartitioned
from . import _autodiff, _axes
from ._axes import NtkImplementation

_KERNELS = collections.OrderedDict()  # f -> JaxNtk, the last few f: ntk_fns of one f share jax's jit cache
_CACHE_SIZE = 8


def is_function(f):
    """True if ``f`` may be a JAX function: callable and jax imported (never imports jax)."""
    return callable(f) and "jax" in sys.modules


def _x64(dtype):
    """Context in which jax computes in ``dtype`` (enables x64 for float64 when it is off)."""
    jax = sys.modules["jax"]
    if dtype != np.float64 or jax.config.jax_enable_x64:
        return contextlib.nullcontext()
    if hasattr(jax, "enable_x64"):  # recent jax (0.10 here): a config State usable as a context manager
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older jax

    return enable_x64()


def _params(params, dtype):
    """The params pytree with every leaf a jax array of ``dtype``; ValueError/TypeError naming the leaf."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not leaves:
        raise ValueError(f"params must be a pytree with at least one array leaf (the parameters of f); "
                         f"got {type(params).__name__}")
    out = []
    for path, leaf in leaves:
        name = f"params{jax.tree_util.keystr(path)}"
        arr = np.asarray(leaf)
        if arr.dtype.kind != "f":
            raise TypeError(f"{name} must be a floating-point array; got {getattr(leaf, 'dtype', type(leaf).__name__)}")
        check_finite(arr, name)
        out.append(jnp.asarray(leaf, dtype))
    return jax.tree_util.tree_unflatten(treedef, out), sum(a.size for a in out)


def _output_dim(f, params, x, name):
    """O of f(params, x) (shape (N, O) or (N,)) by abstract evaluation; ValueError naming f otherwise."""
    import jax

    try:
        shape = jax.eval_shape(f, params, x).shape
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as err:
        raise TypeError("f is neither a fastntk.stax apply_fn nor a torch module, so it is taken as a JAX "
                        "function f(params, x), but jax cannot trace it") from err
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as err:  # f itself failed on params, x
        raise ValueError(f"the JAX function f(params, x) raised {type(err).__name__} for params and {name} of shape "
                         f"{tuple(x.shape)} (wrong parameter structure or shapes, or features of {name}?): "
                         f"{err}") from err
    if len(shape) not in (1, 2) or shape[0] != x.shape[0]:
        raise ValueError(f"the JAX function f(params, x) must return an array of shape (N, O) or (N,) for x of "
                         f"shape (N, d); got shape {tuple(shape)} for {name} of shape {tuple(x.shape)}")
    return 1 if len(shape) == 1 else shape[1]


def _kernel(f, pseudo=False):
    """The JaxNtk of f (of its pseudo-NTK function), shared by its ntk_fns; unhashable f: a fresh one."""
    key = (f, pseudo)
    try:
        _KERNELS.move_to_end(key)
        return _KERNELS[key]
    except KeyError:
        kernel = _KERNELS[key] = JaxNtk(_summed(f) if pseudo else f)
        while len(_KERNELS) > _CACHE_SIZE:
            _KERNELS.popitem(last=False)
        return kernel
    except TypeError:
        return JaxNtk(_summed(f) if pseudo else f)


class JaxNtk:
    """Jitted per-sample Jacobian and NTK-vector-product kernels of one JAX function."""

    def __init__(self, f):
        import jax
        import jax.numpy as jnp

        def f_batch(p, x):
            out = f(p, x)
            return out[:, None] if out.ndim == 1 else out

        def f_single(p, x):
            return f_batch(p, x[None])[0]

        def jacobian(p, x):  # (B, O, P), leaves in tree order
            jac = jax.vmap(jax.jacrev(f_single), (None, 0))(p, x)
            return jnp.concatenate([j.reshape(j.shape[0], j.shape[1], -1) for j in jax.tree_util.tree_leaves(jac)],
                                   axis=2)

        def ntvp(p, x1, x2):  # Θ̂(x1, x2) of shape (N1, N2, O, O)
            out2, vjp_fn = jax.vjp(lambda th: f_batch(th, x2), p)
            n2, n_out = out2.shape
            basis = jnp.eye(n2 * n_out, dtype=out2.dtype).reshape(n2 * n_out, n2, n_out)
            tangents = jax.vmap(vjp_fn)(basis)[0]  # J(x2)ᵀ e_jb for every (j, b)

            def push(t):
                return jax.jvp(lambda th: f_batch(th, x1), (p,), (t,))[1]  # J(x1)·t, (N1, O)

            k = jax.vmap(push)(tangents)  # (N2·O, N1, O)
            return k.reshape(n2, n_out, x1.shape[0], n_out).transpose(2, 0, 3, 1)

        self.f_batch = f_batch
        self.jacobian = jax.jit(jacobian)
        self.ntvp = jax.jit(ntvp)

    def __call__(self, params, x1, x2, mode, ntvp, block_rows):
        """Θ̂ as NumPy: 'trace' (N1, N2) summed over outputs, 'diag' (N1, N2, O) or 'full'; and O."""
        dtype = x1.dtype
        with _x64(dtype):
            shim = _Shim(self, params, x1, x2)
            return _autodiff.ntk(shim, mode, ntvp, block_rows, dtype), shim.n_out


class _Shim:
    """The jitted jax pieces of the autodiff loop (:mod:`fastntk.empirical._autodiff`), at one params."""

    def __init__(self, kernel, params, x1, x2):
        import jax.numpy as jnp

        self.kernel = kernel
        self.p, self.n_params = _params(params, x1.dtype)
        self.x1 = jnp.asarray(x1)
        self.x2 = None if x2 is None else jnp.asarray(x2)
        self.n_out = _output_dim(kernel.f_batch, self.p, self.x1, "x1")
        if x2 is not None and _output_dim(kernel.f_batch, self.p, self.x2, "x2") != self.n_out:
            raise ValueError("the JAX function f(params, x) must return the same number of outputs for x1 and x2")

    def jacobian(self, x):
        return np.asarray(self.kernel.jacobian(self.p, x))

    def ntvp(self, xa, xb):
        return np.asarray(self.kernel.ntvp(self.p, xa, xb))


def ntk_fn(f, trace, diag, implementation):
    """ntk_fn(x1, x2, params, block_rows=None) of a JAX function f(params, x) (canonical axes)."""
    kernel = _kernel(f)
    mode = _axes.mode(trace, diag)
    ntvp = implementation == NtkImplementation.NTK_VECTOR_PRODUCTS

    def ntk_fn(x1, x2, params, block_rows=None):
        block_rows = check_block_rows(block_rows)
        if in_jax(x1, x2, params):
            return ntk_jax(f, params, x1, x2, trace, diag, implementation)
        x1, x2, _ = check_pair(x1, x2)
        _axes.check_batch_axes(trace, diag, x1.shape[0], x1.shape[0] if x2 is None else x2.shape[0])
        out, n_out = kernel(params, x1, x2, mode or "full", ntvp, block_rows)
        return _axes.finish(out, trace, diag, n_out)

    ntk_fn.__doc__ = "Empirical NTK of a JAX function at x1 (N1, d), x2 (N2, d) or None, params pytree."
    return ntk_fn


def _summed(f):
    """g(params, x) = Σ_a f_a(params, x)/√O, the single-output function of the pseudo-NTK."""
    def g(p, x):
        out = f(p, x)
        if out.ndim != 2:  # (N,) or a bad shape: the checks of the single-output path apply
            return out
        return out.sum(1) / float(np.sqrt(out.shape[1]))  # a Python float keeps out's dtype

    return g


def pseudo_ntk(f, x1, x2, params, implementation, block_rows):
    """NTK of g(params, x) = Σ_a f_a(params, x)/√O, shape (N1, N2): one output's cost."""
    block_rows = check_block_rows(block_rows)
    x1, x2, _ = check_pair(x1, x2)
    ntvp = implementation == NtkImplementation.NTK_VECTOR_PRODUCTS
    return _kernel(f, pseudo=True)(params, x1, x2, "trace", ntvp, block_rows)[0]


# --------------------------------------------------------------------------- JAX arrays in, JAX arrays out
def in_jax(*values):
    """True if any leaf of ``values`` is a JAX array (tracers included): the kernels then run in JAX."""
    return _jax_dispatch.uses_jax(*values)


def _batched(f):
    """f(params, x) with (N,) outputs as (N, 1), as the kernels of this module read them."""
    return _kernel(f).f_batch


def _params_like(params, x1, x2):
    """params with every leaf in the result dtype of x1, x2 (as the NumPy path casts them)."""
    import jax

    dtype = _jax_dispatch.result_dtype(None, x1, x2)
    return jax.tree_util.tree_map(lambda a: jax.numpy.asarray(a, dtype), params)


def ntk_jax(f, params, x1, x2, trace, diag, implementation):
    """Θ̂(x1, x2) of a JAX function, in JAX (jit-, vmap- and grad-able): per-sample Jacobians
    contracted by einsum (implementations 0, 1, 3) or NTK-vector products (2), then the axes."""
    import jax.numpy as jnp

    kernel = _kernel(f)
    params = _params_like(params, x1, x2)
    if implementation == NtkImplementation.NTK_VECTOR_PRODUCTS:
        full = kernel.ntvp(params, x1, x1 if x2 is None else x2)
    else:
        j1 = kernel.jacobian(params, x1)
        j2 = j1 if x2 is None else kernel.jacobian(params, x2)
        full = jnp.einsum("iap,jbp->ijab", j1, j2)
    return _axes.reduce_full(full, trace, diag, jnp)


def nngp_fn(f, trace, diag):
    """nngp_fn(x1, x2, params) = f(x1) f(x2)ᵀ of a JAX function, traced axes averaged (neural-tangents')."""
    def nngp_fn(x1, x2, params):
        import jax.numpy as jnp

        if in_jax(x1, x2, params):
            params = _params_like(params, x1, x2)
            f1 = _batched(f)(params, x1)
            f2 = f1 if x2 is None else _batched(f)(params, x2)
            return _axes.reduce_full(jnp.einsum("ia,jb->ijab", f1, f2), trace, diag, jnp)
        x1, x2, dtype = check_pair(x1, x2)
        with _x64(dtype):
            p = _params(params, dtype)[0]
            return np.asarray(nngp_fn(jnp.asarray(x1), None if x2 is None else jnp.asarray(x2), p))

    nngp_fn.__doc__ = "Empirical NNGP of a JAX function at x1 (N1, d), x2 (N2, d) or None, params pytree."
    return nngp_fn


def _tree_sub(a, b):
    import jax

    return jax.tree_util.tree_map(lambda u, v: u - v, a, b)


def linearize(f, params):
    """neural-tangents' ``linearize``: f_lin(p, *args, **kwargs) = f(θ₀) + J(θ₀)(p − θ₀) by one ``jax.jvp``."""
    import jax

    def f_lin(p, *args, **kwargs):
        f0, df = jax.jvp(lambda q: f(q, *args, **kwargs), (params,), (_tree_sub(p, params),))
        return jax.tree_util.tree_map(lambda u, v: u + v, f0, df)

    return f_lin


def taylor_expand(f, params, degree):
    """neural-tangents' ``taylor_expand``: Σ_{k ≤ degree} (1/k!) dᵏf(θ₀)[p − θ₀]ᵏ, by nested ``jax.jvp``.

    The recursion is neural-tangents' own (Horner form: f + (df + (d²f + ...)/2)/1), so the
    rounding is too.
    """
    import jax

    def taylorize(g, dparams, current):
        if current == degree:
            return g(params)

        def g_jvp(p):
            return jax.jvp(g, (p,), (dparams,))[1]

        dg = taylorize(g_jvp, dparams, current + 1)
        return jax.tree_util.tree_map(lambda u, v: u + v / (current + 1), g(params), dg)

    def f_tayl(p, *args, **kwargs):
        return taylorize(lambda q: f(q, *args, **kwargs), _tree_sub(p, params), 0)

    return f_tayl


def ntk_vp_fn(f, x1, x2, params, **apply_fn_kwargs):
    """neural-tangents' ``empirical_ntk_vp_fn``: ct ↦ J(x1) J(x2)ᵀ ct by one vjp and one jvp."""
    import jax

    def ntk_vp(cotangents):
        pulled = jax.vjp(lambda p: f(p, x1 if x2 is None else x2, **apply_fn_kwargs), params)[1](cotangents)
        return jax.jvp(lambda p: f(p, x1, **apply_fn_kwargs), (params,), pulled)[1]

    return ntk_vp


def is_key(key):
    """True if ``key`` is a JAX PRNG key (a raw uint32 key array or a typed key)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(key, jax.Array)


def monte_carlo_params(init_fn, key, n, shape):
    """The parameters of neural-tangents' n Monte Carlo samples from ``key``, in its order.

    neural-tangents 0.6.5 (``monte_carlo._sample_many_kernel_fn``): ``key, split = split(key)`` per
    sample, then ``init_key, _ = split(split, 2)`` and ``init_fn(init_key, shape)``; the splits run
    under the threefry mode it was drawn with (see ``fastntk.network``).
    """
    from jax import random

    for _ in range(n):
        with _threefry_unpartitioned():
            key, split = random.split(key)
            init_key = random.split(split, 2)[0]
        yield init_fn(init_key, shape)[1]
