"""Empirical NTK of plain JAX functions: the adapter behind ``empirical_ntk_fn(apply_fn)``.

``apply_fn(params, x)`` is any JAX-traceable function of a parameter pytree (dicts, lists, tuples,
... of float arrays; ``None`` leaves are skipped) and inputs x of shape (N, d), returning (N, O) or
(N,). Rows must be independent (no batch statistics), as with neural-tangents' ``vmap_axes=0``.
The NTK is taken with respect to every leaf of ``params``:

* implementation 1 (and 0, 3: an arbitrary function has no structured path): per-sample
  Jacobians ``vmap(jacrev(f))``, flattened leaf by leaf to (B, O, P) and contracted by BLAS, over
  blocks of rows so that the memory stays O(block·O·P); with x2 None the diagonal blocks reuse
  x1's Jacobian.
* implementation 2: NTK-vector products, as neural-tangents does: vjp on an x2 block pulls back
  the N2·O unit cotangents, then jvp on the x1 block pushes each forward.

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

_JAC_BYTES = 512 * 2**20  # per-block Jacobian budget (bytes), as the torch.func paths
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
        kind = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype).kind
        if kind != "f":
            raise TypeError(f"params{jax.tree_util.keystr(path)} must be a floating-point array; "
                            f"got {getattr(leaf, 'dtype', type(leaf).__name__)}")
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
            import jax.numpy as jnp

            p, n_p = _params(params, dtype)
            t1 = jnp.asarray(x1)
            t2 = t1 if x2 is None else jnp.asarray(x2)
            n_out = _output_dim(self.f_batch, p, t1, "x1")
            if x2 is not None and _output_dim(self.f_batch, p, t2, "x2") != n_out:
                raise ValueError("the JAX function f(params, x) must return the same number of outputs for x1 and x2")
            B = block_rows or max(1, min(x1.shape[0], _JAC_BYTES // max(1, n_out * n_p * dtype.itemsize)))
            rows = []
            for r0 in range(0, x1.shape[0], B):
                xi = t1[r0:r0 + B]
                if ntvp:
                    k = np.concatenate([np.asarray(self.ntvp(p, xi, t2[c0:c0 + B]))
                                        for c0 in range(0, t2.shape[0], B)], 1)
                    rows.append(np.einsum({"trace": "ijaa->ij", "diag": "ijaa->ija", "full": "ijab->ijab"}[mode], k))
                else:
                    Ji = np.asarray(self.jacobian(p, xi))
                    cols = [Ji if x2 is None and c0 == r0 else np.asarray(self.jacobian(p, t2[c0:c0 + B]))
                            for c0 in range(0, t2.shape[0], B)]
                    rows.append(np.concatenate([_contract(Ji, Jj, mode) for Jj in cols], 1))
        return np.concatenate(rows, 0).astype(dtype, copy=False), n_out


def _contract(Ji, Jj, mode):
    """Σ_p Ji[i, a, p] Jj[j, b, p] as 'trace' (a = b summed), 'diag' (a = b kept) or 'full', by GEMMs."""
    (n1, n_out, n_p), n2 = Ji.shape, Jj.shape[0]
    if mode == "full":
        return (Ji.reshape(n1 * n_out, n_p) @ Jj.reshape(n2 * n_out, n_p).T).reshape(n1, n_out, n2, n_out) \
            .transpose(0, 2, 1, 3)
    per_out = np.matmul(Ji.transpose(1, 0, 2), Jj.transpose(1, 2, 0))  # (O, N1, N2)
    return per_out.sum(0) if mode == "trace" else per_out.transpose(1, 2, 0)


def ntk_fn(f, trace, diag, implementation):
    """ntk_fn(x1, x2, params, block_rows=None) of a JAX function f(params, x) (canonical axes)."""
    from .._validation import check_block_rows, check_pair
    from . import NtkImplementation, _mode, _reduce_full

    kernel = _kernel(f)
    mode = _mode(trace, diag)
    ntvp = implementation == NtkImplementation.NTK_VECTOR_PRODUCTS

    def ntk_fn(x1, x2, params, block_rows=None):
        block_rows = check_block_rows(block_rows)
        x1, x2, dtype = check_pair(x1, x2)
        out, n_out = kernel(params, x1, x2, mode or "full", ntvp, block_rows)
        if mode is None:
            return _reduce_full(out, trace, diag)
        return out / dtype.type(n_out) if mode == "trace" else out

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
    from .._validation import check_block_rows, check_pair
    from . import NtkImplementation

    block_rows = check_block_rows(block_rows)
    x1, x2, _ = check_pair(x1, x2)
    ntvp = implementation == NtkImplementation.NTK_VECTOR_PRODUCTS
    return _kernel(f, pseudo=True)(params, x1, x2, "trace", ntvp, block_rows)[0]
