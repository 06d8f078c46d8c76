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

from .._validation import check_block_rows, check_finite, check_pair
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
