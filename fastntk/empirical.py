"""Finite-width (empirical) NTK and NNGP of fastntk networks, neural-tangents compatible.

``empirical_ntk_fn(apply_fn)(x1, x2, params)`` gives Θ̂(x1, x2) = J(x1) J(x2)ᵀ, the Gram matrix of
the parameter Jacobians of a finite network, with neural-tangents' ``trace_axes`` /
``diagonal_axes`` conventions (a traced axis is *averaged*: divided by its size).

Two implementations (neural-tangents' enum values):

* ``STRUCTURED_DERIVATIVES`` (3, the default here; 0 and 2 map to it). A Dense layer
  z = c·h W + β·b contributes (c² A Aʹᵀ + β²) ∘ (G Gʹᵀ) to the kernel, with A the layer inputs and
  G = ∂f/∂z the back-propagated output sensitivities (Novak et al. 2022, arXiv:2206.08720, §3).
  Both Grams are BLAS GEMMs. The forward and backward passes run once per input set; rows of x1
  are then processed in tiles (with x2 None only the upper-triangle tiles, mirrored), so the
  extra memory is O(N·O·width + tile), never O(N·P). The readout sensitivity is the identity
  and is never formed. The work lives in ``fastntk._empirical_structured``.
* ``JACOBIAN_CONTRACTION`` (1): explicit per-sample Jacobians (N, O, P), contracted with
  einsum. Small models only; the cross-check of the fast path.

Parameterization factors: 'ntk' c = W_std/√fan_in, β = b_std (derivatives with respect to the raw
N(0, 1) draws); 'standard' c = β = 1.

``empirical_ntk_fn`` also accepts a PyTorch ``nn.Module`` (``fastntk._empirical_torch``):
``nn.Sequential`` stacks of ``nn.Linear`` and elementwise activations run the structured path
above; other modules go through ``torch.func``. With jax imported, any other callable is taken as a
plain JAX function ``apply_fn(params, x)`` of a parameter pytree (``fastntk._empirical_jax``:
per-sample Jacobians or NTK-vector products).
"""

from __future__ import annotations

import enum
import numbers
import warnings
from collections.abc import Iterable

import numpy as np
import scipy.linalg

from . import _empirical_jax as _jax
from . import _empirical_torch as _torch
from ._empirical_structured import _brute_full, _dphi, _structured
from ._validation import check_array, check_block_rows, check_get, check_pair
from ._types import kernel_tuple
from . import network as _network
from .network import dense_coefs
from .network import generator as _rng
from .spec import Dense as _DenseSpec
from .spec import Identity, Layer, Serial, leaves

__all__ = [
    "NtkImplementation",
    "empirical_kernel_fn",
    "empirical_nngp_fn",
    "empirical_ntk_fn",
    "linearize",
    "monte_carlo_kernel_fn",
    "pseudo_ntk",
    "train_and_track",
]


class NtkImplementation(enum.IntEnum):
    """neural-tangents' enum; AUTO and NTK_VECTOR_PRODUCTS run the structured path."""

    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


# --------------------------------------------------------------------------- network access
class _Net:
    """A network spec and its leaves that carry work (Identity leaves dropped: no parameters, no effect)."""

    def __init__(self, layer_spec):
        self.spec = layer_spec
        self.items = tuple(leaf for leaf in leaves(layer_spec) if not isinstance(leaf, Identity))


def forward(items, params, x):
    """Outputs of the leaves ``items`` with flat ``params`` and the input of every leaf."""
    return _network.forward(list(zip(items, params)), x)


def _network_of(apply_fn):
    """The fastntk network behind ``apply_fn`` (its ``.spec``)."""
    layer_spec = getattr(apply_fn, "spec", None)
    if isinstance(layer_spec, Layer.__args__):
        return _Net(layer_spec)
    raise TypeError(
        "apply_fn must be the apply_fn of a fastntk.stax network (fully-connected Dense and "
        f"activation layers); got {getattr(apply_fn, '__qualname__', type(apply_fn).__name__)}"
    )


def _check_params(network, params, d):
    """Validate ``params`` against the network for inputs with d features; a flat list aligned with
    ``network.items``."""
    return [p for leaf, p in _network.check_params(network.spec, params, d) if not isinstance(leaf, Identity)]


# --------------------------------------------------------------------------- axes
def _canonical_axes(trace_axes, diagonal_axes):
    """Canonical (trace, diagonal) axes of the 2-D output (batch axis 0, output axis 1)."""
    out = []
    for name, axes in (("trace_axes", trace_axes), ("diagonal_axes", diagonal_axes)):
        seq = (axes,) if isinstance(axes, numbers.Integral) else axes
        if not isinstance(seq, Iterable) or isinstance(seq, str):
            raise TypeError(f"{name} must be an int or a tuple of ints; got {axes!r}")
        seq = tuple(seq)
        if any(isinstance(a, bool) or not isinstance(a, numbers.Integral) or not -2 <= a <= 1 for a in seq):
            raise ValueError(f"{name} must hold axes of the (N, O) outputs, in [-2, 1]; got {axes!r}")
        out.append(tuple(sorted({int(a) % 2 for a in seq})))
    if set(out[0]) & set(out[1]):
        raise ValueError(f"trace_axes and diagonal_axes must be disjoint; got {trace_axes!r} and {diagonal_axes!r}")
    return out[0], out[1]


def _reduce_full(full, trace, diag):
    """Apply trace/diagonal axes to a full kernel (N1, N2, O, O); traced axes are averaged."""
    if (0 in trace or 0 in diag) and full.shape[0] != full.shape[1]:
        raise ValueError(f"axis 0 in trace_axes or diagonal_axes needs N1 == N2; got N1={full.shape[0]}, N2={full.shape[1]}")
    sub_in, sub_out = "", ""
    for ax, (l1, l2) in enumerate((("i", "j"), ("a", "b"))):
        tied = ax in trace or ax in diag
        sub_in += l1 + (l1 if tied else l2)
        sub_out += "" if ax in trace else l1 if tied else l1 + l2
    size = float(np.prod([full.shape[2 * ax] for ax in trace]))
    return np.einsum(f"{sub_in}->{sub_out}", full) / size


def _mode(trace, diag):
    return {((1,), ()): "trace", ((), (1,)): "diag", ((), ()): "full"}.get((trace, diag))


def _check_implementation(implementation):
    try:
        return NtkImplementation(implementation)
    except (ValueError, TypeError):
        raise ValueError(f"implementation must be one of 0, 1, 2, 3 (NtkImplementation); got {implementation!r}") from None


def _check_vmap_axes(vmap_axes):
    if vmap_axes not in (None, 0, (0, 0, {}), (0, 0, None)):
        raise ValueError(f"vmap_axes must be None or 0 (inputs and outputs batched along axis 0); got {vmap_axes!r}")


def _prepare(apply_fn, x1, x2, params):
    network = _network_of(apply_fn)
    if not any(isinstance(it, _DenseSpec) for it in network.items):
        raise ValueError("apply_fn's network has no Dense layer, hence no parameters and no NTK")
    x1, x2, dtype = check_pair(x1, x2)
    params = _check_params(network, params, x1.shape[1])
    params = [p if len(p) != 2 else (np.asarray(p[0], dtype), None if p[1] is None else np.asarray(p[1], dtype))
              for p in params]
    return network.items, params, x1, x2


def _ntk(items, params, x1, x2, trace, diag, implementation, readout=None, block_rows=None):
    mode = _mode(trace, diag)
    if implementation == NtkImplementation.JACOBIAN_CONTRACTION or mode is None:
        if implementation == NtkImplementation.JACOBIAN_CONTRACTION:
            full = _brute_full(items, params, x1, x2, readout)
        else:
            full = _structured(items, params, x1, x2, "full", readout, block_rows)
        return _reduce_full(full, trace, diag)
    out = _structured(items, params, x1, x2, mode, readout, block_rows)
    if mode == "trace":
        out /= out.dtype.type(readout.shape[0] if readout is not None else _out_dim(items))
    return out


def _out_dim(items):
    return [it for it in items if isinstance(it, _DenseSpec)][-1].out_dim


# --------------------------------------------------------------------------- public API
def empirical_ntk_fn(f, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                     implementation=NtkImplementation.STRUCTURED_DERIVATIVES):
    """Function computing the empirical NTK Θ̂(x1, x2) = J(x1) J(x2)ᵀ of a finite network.

    Parameters
    ----------
    f : callable or torch.nn.Module
        ``apply_fn`` of a :mod:`fastntk.stax` network, or a PyTorch module mapping (N, d) to
        (N, O) or (N,). ``nn.Sequential`` stacks of ``nn.Linear`` and elementwise activations
        (ReLU, LeakyReLU, Tanh, GELU, Sigmoid, SiLU, Softplus, Identity) run the structured NumPy
        path, with derivatives taken with respect to the stored ``weight`` and ``bias``
        (y = x Wᵀ + b, i.e. the 'standard' parameterization); other modules go through
        ``torch.func`` (Jacobian contraction, or NTK-vector products for implementation 2).
        For a module, ``ntk_fn(x1, x2=None, params=None)`` takes NumPy arrays or tensors
        (tensors in, tensor out) and ``params`` a dict like ``dict(module.named_parameters())``
        (None: the module's own). With jax imported, any other callable is taken as a JAX
        function ``f(params, x)`` (params a pytree of float arrays, output (N, O) or (N,));
        implementations 0, 1, 3 contract per-sample Jacobians, 2 uses NTK-vector products.
    trace_axes : int or tuple of int
        Output axes (of f(x), shape (N, O)) to contract; each is *averaged* (divided by its
        size), as neural-tangents does. Default (-1,): the mean over the O outputs.
    diagonal_axes : int or tuple of int
        Output axes of which only the diagonal is kept (present once in the result).
    vmap_axes : None or 0
        Accepted for neural-tangents compatibility (inputs are always batched on axis 0).
    implementation : int or NtkImplementation
        3 (default), 0 or 2: structured derivatives (per-layer GEMMs, tiled over x1; with x2
        None only upper-triangle tiles, mirrored); 1: explicit Jacobian contraction (memory
        O(N·O·P), small models only). For a torch module 2 means NTK-vector products.

    Returns
    -------
    ntk_fn : callable ``ntk_fn(x1, x2, params) -> ndarray``
        x1 of shape (N1, d), x2 of shape (N2, d) or None (x1). The result has shape
        (N1, N2) for the default axes, (N1, N2, O, O) for ``trace_axes=()`` and (N1, N2, O) for
        ``trace_axes=(), diagonal_axes=(-1,)``; dtype of the inputs.

    Raises
    ------
    TypeError
        ``f`` is not a fastntk.stax apply_fn; bad input dtypes.
    ValueError
        Bad axes, implementation, shapes or params.

    Notes
    -----
    Dense layer z = c·h W + β·b, sensitivities G_a = ∂f_a/∂z: its contribution is
    Θ̂[i, j, a, b] += (c² hᵢ·hⱼ' + β²)(G_a,ᵢ·G_b,ⱼ'), c = W_std/√fan_in and β = b_std ('ntk'),
    c = β = 1 ('standard').

    References
    ----------
    Novak, Sohl-Dickstein, Schoenholz (2022), Fast Finite Width Neural Tangent Kernel,
    arXiv:2206.08720.

    Examples
    --------
    >>> import numpy as np
    >>> from fastntk import stax
    >>> from fastntk.empirical import empirical_ntk_fn
    >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(3))
    >>> x = np.random.default_rng(0).standard_normal((4, 5))
    >>> _, params = init_fn(0, x.shape)
    >>> empirical_ntk_fn(apply_fn)(x, None, params).shape
    (4, 4)
    """
    trace, diag = _canonical_axes(trace_axes, diagonal_axes)
    _check_vmap_axes(vmap_axes)
    implementation = _check_implementation(implementation)
    if _torch.is_module(f):
        return _torch_ntk_fn(f, trace, diag, implementation)
    if _is_jax(f):
        return _jax.ntk_fn(f, trace, diag, implementation)
    _network_of(f)

    def ntk_fn(x1, x2, params, block_rows=None):
        items, params, x1, x2 = _prepare(f, x1, x2, params)
        return _ntk(items, params, x1, x2, trace, diag, implementation, block_rows=check_block_rows(block_rows))

    ntk_fn.__doc__ = "Empirical NTK of x1 (N1, d) vs x2 (N2, d) or None at params; see empirical_ntk_fn."
    return ntk_fn


def _is_jax(f):
    """A plain JAX function f(params, x): not a fastntk apply_fn or torch module, jax imported."""
    try:
        _network_of(f)
    except TypeError:
        return _jax.is_function(f) and not _torch.is_module(f)
    return False


def _torch_ntk_fn(module, trace, diag, implementation):
    """ntk_fn(x1, x2=None, params=None) of a torch nn.Module (see fastntk._empirical_torch)."""
    net = _torch.structured_network(module) if implementation in (0, 3) else None

    def ntk_fn(x1, x2=None, params=None, block_rows=None):
        block_rows = check_block_rows(block_rows)
        theta = _torch.module_params(module, params)
        x1n, x2n, dtype = check_pair(_torch.to_numpy(x1), None if x2 is None else _torch.to_numpy(x2))
        if net is not None:  # nn.Linear: y = x Wᵀ + b, 'standard' parameterization with W stored transposed
            items, keys = net
            p = [() if not k else (np.ascontiguousarray(_torch.to_numpy(theta[k[0]]).T, dtype),
                                   None if k[1] is None else _torch.to_numpy(theta[k[1]]).astype(dtype)[None])
                 for k in keys]
            if p[0][0].shape[0] != x1n.shape[1]:
                raise ValueError(f"x1 must have {p[0][0].shape[0]} features (the module's first nn.Linear); "
                                 f"got x1.shape={x1n.shape}")
            p = _check_params(_Net(Serial(tuple(items))), p, x1n.shape[1])
            out = _ntk(tuple(items), p, x1n, x2n, trace, diag, NtkImplementation.STRUCTURED_DERIVATIVES,
                       block_rows=block_rows)
        else:
            import torch

            theta = {k: v.to(getattr(torch, dtype.name)) for k, v in theta.items()}
            mode = _mode(trace, diag)
            out, n_out = _torch.func_ntk(module, theta, x1n, x2n, mode or "full",
                                         implementation == NtkImplementation.NTK_VECTOR_PRODUCTS, block_rows)
            out = _reduce_full(out, trace, diag) if mode is None else out / dtype.type(n_out) if mode == "trace" \
                else out
        if hasattr(x1, "detach"):  # tensors in, tensor out
            import torch

            return torch.from_numpy(np.ascontiguousarray(out))
        return out

    ntk_fn.__doc__ = "Empirical NTK of a torch module at x1 (N1, d), x2 (N2, d) or None, params dict or None."
    return ntk_fn


def pseudo_ntk(f, x1, x2, params, *, implementation=NtkImplementation.STRUCTURED_DERIVATIVES, block_rows=None):
    """pNTK: the NTK of g(x) = Σ_a f_a(x)/√O, shape (N1, N2) (= full NTK summed over outputs / O).

    Costs one output's NTK whatever O is (Mohamadi, Bae & Sutherland, ICML 2023,
    arXiv:2206.12543).

    Parameters
    ----------
    f : callable
        ``apply_fn`` of a :mod:`fastntk.stax` network.
    x1 : ndarray of shape (N1, d); x2 : ndarray of shape (N2, d) or None (x1)
    params : list, the network's parameters (as from ``init_fn``).

    Returns
    -------
    ndarray of shape (N1, N2), dtype of the inputs.
    """
    implementation = _check_implementation(implementation)
    if _is_jax(f):
        return _jax.pseudo_ntk(f, x1, x2, params, implementation, block_rows)
    items, params, x1, x2 = _prepare(f, x1, x2, params)
    n_out = _out_dim(items)
    R = np.full((1, n_out), 1 / np.sqrt(n_out), dtype=x1.dtype)
    return _ntk(items, params, x1, x2, (1,), (), implementation, readout=R, block_rows=check_block_rows(block_rows))


def empirical_nngp_fn(f, trace_axes=(-1,), diagonal_axes=()):
    """Function computing the empirical NNGP f(x1) f(x2)ᵀ (neural-tangents' definition).

    As in neural-tangents 0.6.5 this is the outer product of the network *outputs* (not of
    hidden features), with traced axes averaged. Shapes as in :func:`empirical_ntk_fn`.

    Returns
    -------
    nngp_fn : callable ``nngp_fn(x1, x2, params) -> ndarray``
    """
    trace, diag = _canonical_axes(trace_axes, diagonal_axes)
    _network_of(f)

    def nngp_fn(x1, x2, params):
        items, params, x1, x2 = _prepare(f, x1, x2, params)
        f1 = forward(items, params, x1)[0]
        f2 = f1 if x2 is None else forward(items, params, x2)[0]
        if (trace, diag) == ((1,), ()):
            return (f1 @ f2.T) / f1.shape[1]
        return _reduce_full(np.einsum("ia,jb->ijab", f1, f2), trace, diag)

    return nngp_fn


def empirical_kernel_fn(f, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                        implementation=NtkImplementation.STRUCTURED_DERIVATIVES):
    """Function ``kernel_fn(x1, x2, get, params)`` returning empirical 'nngp' and/or 'ntk'.

    ``get`` None means ('nngp', 'ntk') and returns a namedtuple; a string returns that array.
    Shapes as in :func:`empirical_ntk_fn`.
    """
    fns = {"nngp": empirical_nngp_fn(f, trace_axes, diagonal_axes),
           "ntk": empirical_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation)}

    def kernel_fn(x1, x2=None, get=None, params=None):
        names = check_get(get)
        if params is None:
            raise ValueError("params must be given (the network parameters, as from init_fn)")
        res = {name: fns[name](x1, x2, params) for name in names}
        return res[get] if isinstance(get, str) else kernel_tuple(names)(*(res[n] for n in names))

    return kernel_fn


# --------------------------------------------------------------------------- linearization
def _jvp(items, params, dparams, x):
    """(f(params, x), J(x)·dparams) by forward mode through the stack: two GEMMs per Dense."""
    return _network.jvp(list(zip(items, params)), dparams, x)


def _sub_params(params, params0):
    return [p if len(p) != 2 else (p[0] - q[0], None if p[1] is None else p[1] - q[1])
            for p, q in zip(params, params0)]


def linearize(f, params):
    """First-order Taylor expansion of the network in its parameters around ``params``.

    Parameters
    ----------
    f : callable
        ``apply_fn`` of a :mod:`fastntk.stax` network.
    params : list
        θ₀, the expansion point.

    Returns
    -------
    f_lin : callable ``f_lin(params, x) -> ndarray of shape (N, O)``
        f(θ₀, x) + J(x)(θ − θ₀), by one forward-mode JVP (no Jacobian is formed).
    """
    network = _network_of(f)
    params0 = [p if len(p) != 2 else (np.array(p[0]), None if p[1] is None else np.array(p[1])) for p in params]

    def f_lin(params, x, **kwargs):
        x = check_array(x, "x")
        p0 = _check_params(network, params0, x.shape[1])
        p = _check_params(network, params, x.shape[1])
        f0, df = _jvp(network.items, p0, _sub_params(p, p0), x)
        return f0 + df

    return f_lin


# --------------------------------------------------------------------------- Monte Carlo
def monte_carlo_kernel_fn(init_fn, apply_fn, key, n_samples, batch_size=0, device_count=-1,
                          store_on_device=True, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                          implementation=NtkImplementation.STRUCTURED_DERIVATIVES):
    """Empirical NNGP/NTK averaged over ``n_samples`` random initialisations (as neural-tangents).

    Parameters
    ----------
    init_fn, apply_fn : the network's ``init_fn`` and ``apply_fn`` (fastntk.stax).
    key : int, numpy Generator or SeedSequence
        Seed; sample s uses ``SeedSequence(key).spawn(...)[s]``, so results are reproducible.
    n_samples : int or increasing sequence of int
        With a sequence, ``kernel_fn`` returns a generator of the running averages at those counts.
    batch_size, device_count, store_on_device : accepted for neural-tangents compatibility.
    trace_axes, diagonal_axes, vmap_axes, implementation : as :func:`empirical_ntk_fn`.

    Returns
    -------
    kernel_fn : callable ``kernel_fn(x1, x2=None, get=None)``
        namedtuple (nngp, ntk) for ``get=None``, the array for a string ``get``.
    """
    counts = _check_n_samples(n_samples)
    seeds = (key if isinstance(key, np.random.SeedSequence) else
             np.random.SeedSequence(_rng(key).integers(2**63)) if isinstance(key, np.random.Generator) else
             np.random.SeedSequence(key)).spawn(counts[-1])
    emp = empirical_kernel_fn(apply_fn, trace_axes, diagonal_axes, vmap_axes, implementation)

    def running(x1, x2, get):
        names = check_get(get)
        total, done = None, 0
        for n in counts:
            for s in range(done, n):
                _, params = init_fn(np.random.default_rng(seeds[s]), np.shape(x1))
                k = emp(x1, x2, names, params)
                total = list(k) if total is None else [t + v for t, v in zip(total, k)]
            done = n
            mean = [t / n for t in total]
            yield mean[0] if isinstance(get, str) else kernel_tuple(names)(*mean)

    def kernel_fn(x1, x2=None, get=None):
        gen = running(x1, x2, get)
        return gen if not isinstance(n_samples, numbers.Integral) else next(gen)

    return kernel_fn


def _check_n_samples(n_samples):
    seq = [n_samples] if isinstance(n_samples, numbers.Integral) else list(n_samples) \
        if isinstance(n_samples, Iterable) else None
    if (not seq or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in seq)
            or any(b <= a for a, b in zip(seq, seq[1:]))):
        raise ValueError(f"n_samples must be a positive int or an increasing sequence of them; got {n_samples!r}")
    return [int(n) for n in seq]


# --------------------------------------------------------------------------- lazy-regime diagnostics
def _grad(items, params, x, ct):
    """Σᵢ ctᵢ·∂f(xᵢ)/∂θ (a VJP), as a params-shaped list."""
    return _network.vjp(list(zip(items, params)), x, ct)


def _axpy(params, grads, scale):
    return [p if len(p) != 2 else (p[0] + scale * g[0], None if p[1] is None else p[1] + scale * g[1])
            for p, g in zip(params, grads)]


def _flat(params):
    return np.concatenate([a.ravel() for p in params if len(p) == 2 for a in p if a is not None])


def _kernel_regression(f, params, x_train, y_train, x_test, f0_train, f0_test):
    """f₀(x_test) + Θ̂₀(x_test, X) Θ̂₀(X, X)⁻¹ (y − f₀(X)), with the full (N·O × N·O) empirical NTK."""
    full = empirical_ntk_fn(f, trace_axes=())
    n, o = y_train.shape
    k_dd = full(x_train, None, params).transpose(0, 2, 1, 3).reshape(n * o, n * o)
    k_td = full(x_test, x_train, params).transpose(0, 2, 1, 3).reshape(x_test.shape[0] * o, n * o)
    alpha = scipy.linalg.lstsq(k_dd, (y_train - f0_train).ravel(), cond=None)[0]
    return f0_test + (k_td @ alpha).reshape(x_test.shape[0], o)


def train_and_track(f, params, x_train, y_train, x_test, *, learning_rate=1.0, n_steps=100, record_every=10):
    """Full-batch gradient descent of a finite network and of its linearization, with lazy-regime metrics.

    Loss L(θ) = 1/(2n) Σᵢₐ (f_a(xᵢ) − yᵢₐ)², n = y_train.size (neural-tangents' ``predict``
    convention). The linearized model f_lin(θ) = f(θ₀) + J₀(θ − θ₀) is trained by the same GD.

    Parameters
    ----------
    f : callable, ``apply_fn`` of a :mod:`fastntk.stax` network.
    params : list, θ₀ (not modified).
    x_train : ndarray of shape (n_train, d); y_train : ndarray of shape (n_train, O)
    x_test : ndarray of shape (n_test, d), held-out points for the linearization gap.
    learning_rate : float > 0; n_steps : int >= 0; record_every : int >= 1 (steps).

    Returns
    -------
    dict of ndarrays of shape (R,), R = number of recorded steps (0, record_every, ..., n_steps):
    ``step``; ``loss``; ``param_change`` ‖θₜ − θ₀‖/‖θ₀‖; ``kernel_change`` ‖Θ̂ₜ − Θ̂₀‖_F/‖Θ̂₀‖_F (trace
    NTK on x_train); ``lin_gap`` max |f(θₜ, x_test) − f_lin(θₜ_lin, x_test)|; ``kr_gap``
    max |f(θₜ, x_test) − f_KR(x_test)|, with f_KR = f₀ + Θ̂₀(x, X)Θ̂₀(X, X)⁻¹(y − f₀(X)) the
    kernel-regression solution that the linearized model reaches as t → ∞.

    Notes
    -----
    In the NTK parameterization all three shrink as width m grows (Lee et al. 2019,
    arXiv:1902.06720: ‖θₜ − θ₀‖/‖θ₀‖ = O(1/√m), Θ̂ₜ − Θ̂₀ = O(1/√m)).
    """
    network = _network_of(f)
    items = network.items
    x_train, x_test, _ = check_pair(x_train, x_test)
    y_train = check_array(y_train, "y_train")
    if y_train.shape != (x_train.shape[0], _out_dim(items)):
        raise ValueError(f"y_train must have shape {(x_train.shape[0], _out_dim(items))}; got {y_train.shape}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number; got {learning_rate!r}")
    for name, v, lo in (("n_steps", n_steps, 0), ("record_every", record_every, 1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}; got {v!r}")
    p0 = _check_params(network, params, x_train.shape[1])
    ntk = empirical_ntk_fn(f)
    k0, norm0, n = ntk(x_train, None, p0), np.linalg.norm(_flat(p0)), y_train.size
    lr_max = 2 * n / np.linalg.eigvalsh(k0).max()  # GD on the linearized model is stable iff η < 2n/λ_max(Θ̂₀)
    if learning_rate >= lr_max:
        warnings.warn(f"learning_rate={learning_rate} >= 2n/λ_max(Θ̂₀) = {lr_max:.3g}: the linearized model "
                      "diverges (the network itself may still converge, in the catapult phase)", RuntimeWarning,
                      stacklevel=2)
    f0_test, f0_train, p, p_lin = forward(items, p0, x_test)[0], forward(items, p0, x_train)[0], p0, p0
    f_kr = _kernel_regression(f, p0, x_train, y_train, x_test, f0_train, f0_test)
    rec = {k: [] for k in ("step", "loss", "param_change", "kernel_change", "lin_gap", "kr_gap")}
    for t in range(n_steps + 1):
        resid = forward(items, p, x_train)[0] - y_train
        if t % record_every == 0 or t == n_steps:
            lin_test = f0_test + _jvp(items, p0, _sub_params(p_lin, p0), x_test)[1]
            rec["step"].append(t)
            rec["loss"].append(0.5 * np.sum(resid**2) / n)
            rec["param_change"].append(np.linalg.norm(_flat(p) - _flat(p0)) / norm0)
            rec["kernel_change"].append(np.linalg.norm(ntk(x_train, None, p) - k0) / np.linalg.norm(k0))
            f_test = forward(items, p, x_test)[0]
            rec["lin_gap"].append(np.abs(f_test - lin_test).max())
            rec["kr_gap"].append(np.abs(f_test - f_kr).max())
        if t == n_steps:
            break
        dlin = _jvp(items, p0, _sub_params(p_lin, p0), x_train)[1]
        p = _axpy(p, _grad(items, p, x_train, resid), -learning_rate / n)
        p_lin = _axpy(p_lin, _grad(items, p0, x_train, f0_train + dlin - y_train), -learning_rate / n)
    return {k: np.asarray(v) for k, v in rec.items()}
