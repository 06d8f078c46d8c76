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
  and is never formed. The work lives in ``fastntk.empirical._structured``.
* ``JACOBIAN_CONTRACTION`` (1): explicit per-sample Jacobians (N, O, P), contracted with
  einsum (``fastntk.empirical._jacobian``). Small models only; the cross-check of the fast path.

Parameterization factors: 'ntk' c = W_std/√fan_in, β = b_std (derivatives with respect to the raw
N(0, 1) draws); 'standard' c = β = 1.

``empirical_ntk_fn`` also accepts a PyTorch ``nn.Module`` (``fastntk.empirical._torch``):
``nn.Sequential`` stacks of ``nn.Linear`` and elementwise activations run the structured path
above; other modules go through ``torch.func``. With jax imported, any other callable is taken as a
plain JAX function ``apply_fn(params, x)`` of a parameter pytree (``fastntk.empirical._jax``:
per-sample Jacobians or NTK-vector products). Both frameworks are thin shims under one block loop
(``fastntk.empirical._autodiff``).

JAX arrays in give JAX arrays out, inside ``jax.jit`` and ``jax.vmap`` too: for a fastntk network
the NumPy path runs in a ``jax.pure_callback`` (:mod:`fastntk._jax_dispatch`); for a JAX function
the kernels are computed in JAX itself (Jacobian contraction or NTK-vector products of the whole
batch), so they are also differentiable. ``linearize``, ``taylor_expand`` and
``empirical_ntk_vp_fn`` of JAX functions (or of a network with JAX parameters) are
neural-tangents' ``jax.jvp``/``jax.vjp`` constructions; ``monte_carlo_kernel_fn`` with a JAX key
splits it as neural-tangents does.

Layout: ``_axes`` (trace/diagonal axes, the implementation enum), ``_memory`` (result and block
bytes, checked before any O(N) work), ``_net`` (the only module that reads stax's network
internals), ``_native`` (validation and dispatch for fastntk networks), ``_structured``,
``_jacobian``, ``_autodiff``, ``_torch``, ``_jax`` and ``_tracking`` (linearize, training,
Monte Carlo). Imports flow one way: this module -> adapters -> ``_native`` -> paths -> ``_net``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import _jax_dispatch
from .._types import Kernel
from .._validation import check_block_rows, check_get, check_pair
from . import _axes, _jax, _native, _net, _torch, _tracking
from ._axes import NtkImplementation

__all__ = [
    "NtkImplementation",
    "empirical_kernel_fn",
    "empirical_nngp_fn",
    "empirical_ntk_fn",
    "empirical_ntk_vp_fn",
    "linearize",
    "monte_carlo_kernel_fn",
    "pseudo_ntk",
    "taylor_expand",
    "train_and_track",
]


def _is_jax(f):
    """A plain JAX function f(params, x): not a fastntk apply_fn or torch module, jax imported."""
    return not _net.is_network(f) and not _torch.is_module(f) and _jax.is_function(f)


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
        x1 of shape (N1, d), x2 of shape (N2, d) or None (x1); for a network with Conv, pooling
        or LayerNorm layers images (N1, *S, C) and (N2, *S, C), the network's outputs (N, O)
        (a Flatten or global pooling before the readout). The result has shape
        (N1, N2) for the default axes, (N1, N2, O, O) for ``trace_axes=()`` and (N1, N2, O) for
        ``trace_axes=(), diagonal_axes=(-1,)``; dtype of the inputs.

    Raises
    ------
    TypeError
        ``f`` is not a fastntk.stax apply_fn; bad input or parameter dtypes.
    ValueError
        Bad axes or implementation; bad shapes of x1, x2 or of an entry of params (named, with the
        expected shape); NaN or inf in x1, x2 or params (the entry is named).
    MemoryError
        The result and its work space (features or Jacobian blocks) would not fit in available
        memory; raised before any pass over the data, with the alternatives.

    Notes
    -----
    Dense layer z = c·h W + β·b, sensitivities G_a = ∂f_a/∂z: its contribution is
    Θ̂[i, j, a, b] += (c² hᵢ·hⱼ' + β²)(G_a,ᵢ·G_b,ⱼ'), c = W_std/√fan_in and β = b_std ('ntk'),
    c = β = 1 ('standard'). A layer whose weights are shared over positions (Conv, or Dense on
    (N, *S, C)) contributes J_W(xᵢ)_a·J_W(xⱼ')_b + J_b(xᵢ)_a·J_b(xⱼ')_b, its per-sample Jacobians
    J_W = c Σ_p A(p) ⊗ G_a(p) (A the patches at position p) and J_b = β Σ_p G_a(p): memory
    O(N·O·P_layer) for that layer in both implementations.

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
    trace, diag = _axes.canonical_axes(trace_axes, diagonal_axes)
    _axes.check_vmap_axes(vmap_axes)
    implementation = _axes.check_implementation(implementation)
    if _torch.is_module(f):
        return _torch.ntk_fn(f, trace, diag, implementation)
    if _is_jax(f):
        return _jax.ntk_fn(f, trace, diag, implementation)
    net = _net.network_of(f)
    return _native_in_jax(_native.ntk_fn(net, trace, diag, implementation), net, trace, diag)


def _native_in_jax(kernel_fn, net, trace, diag):
    """``kernel_fn(x1, x2, params, ...)`` of a fastntk network made to take JAX arrays, under jit
    and vmap too (:func:`fastntk._jax_dispatch.accepting_jax`); the result shape follows the axes."""

    def result_shape(x1, x2, params, *args, **kwargs):
        import jax

        n2 = (x1 if x2 is None else x2).shape[0]
        shape = _axes.result_shape(trace, diag, x1.shape[0], n2, net.out_dim)
        return jax.ShapeDtypeStruct(shape, _jax_dispatch.result_dtype(None, x1, x2))

    return _jax_dispatch.accepting_jax(kernel_fn, result_shape)


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
    implementation = _axes.check_implementation(implementation)
    block_rows = check_block_rows(block_rows)
    if _is_jax(f):
        return _jax.pseudo_ntk(f, x1, x2, params, implementation, block_rows)
    return _native.pseudo_ntk(_net.network_of(f), x1, x2, params, implementation, block_rows)


def empirical_nngp_fn(f, trace_axes=(-1,), diagonal_axes=()):
    """Function computing the empirical NNGP f(x1) f(x2)ᵀ (neural-tangents' definition).

    As in neural-tangents 0.6.5 this is the outer product of the network *outputs* (not of
    hidden features), with traced axes averaged. Shapes as in :func:`empirical_ntk_fn`. ``f`` is a
    fastntk apply_fn or, with jax imported, a JAX function ``f(params, x)``; JAX arrays in give
    JAX arrays out, under ``jax.jit`` and ``jax.vmap`` too.

    Returns
    -------
    nngp_fn : callable ``nngp_fn(x1, x2, params) -> ndarray``
    """
    trace, diag = _axes.canonical_axes(trace_axes, diagonal_axes)
    if _is_jax(f):
        return _jax.nngp_fn(f, trace, diag)
    net = _net.network_of(f)
    return _native_in_jax(_native.nngp_fn(net, trace, diag), net, trace, diag)


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
        return res[get] if isinstance(get, str) else Kernel(names, [res[n] for n in names])

    return kernel_fn


def linearize(f, params):
    """First-order Taylor expansion of the network in its parameters around ``params``.

    Parameters
    ----------
    f : callable
        ``apply_fn`` of a :mod:`fastntk.stax` network, or (jax imported) a JAX function
        ``f(params, *args, **kwargs)`` returning a pytree.
    params : list or pytree
        θ₀, the expansion point.

    Returns
    -------
    f_lin : callable ``f_lin(params, x) -> ndarray of shape (N, O)``
        f(θ₀, x) + J(x)(θ − θ₀), by one forward-mode JVP (no Jacobian is formed). A fastntk network
        with NumPy parameters: NumPy. A JAX function, or JAX parameters (``init_fn`` with a JAX key):
        neural-tangents' ``linearize`` (one ``jax.jvp``), so ``f_lin`` is differentiable by
        ``jax.grad`` and runs under ``jax.jit``, as neural-tangents users train it.
    """
    if _is_jax(f) or _jax_dispatch.uses_jax(params):
        return _jax.linearize(f, params)
    return _tracking.linearize(_net.network_of(f), params)


def taylor_expand(f, params, degree):
    """Taylor expansion of ``f`` in its parameters around ``params``, to order ``degree`` (neural-tangents').

    Parameters
    ----------
    f : callable ``f(params, *args, **kwargs)``
        A JAX function, or the ``apply_fn`` of a :mod:`fastntk.stax` network (which computes in JAX
        for JAX parameters).
    params : pytree
        θ₀, the expansion point.
    degree : int >= 0
        0: f(θ₀); 1: :func:`linearize`; k: Σ_{j ≤ k} dʲf(θ₀)[θ − θ₀]ʲ / j!.

    Returns
    -------
    f_tayl : callable ``f_tayl(params, *args, **kwargs)``, with f's signature and output structure;
        computed by nested ``jax.jvp`` (requires jax), so differentiable by ``jax.grad``.
    """
    if isinstance(degree, bool) or not isinstance(degree, numbers.Integral) or degree < 0:
        raise ValueError(f"degree must be a non-negative integer; got {degree!r}")
    if not callable(f):
        raise TypeError(f"f must be callable f(params, *args); got {type(f).__name__}")
    import jax  # noqa: F401  (the expansion is computed by jax.jvp: fail here, not at the first call)

    return _jax.taylor_expand(f, params, int(degree))


def empirical_ntk_vp_fn(f, x1, x2, params, **apply_fn_kwargs):
    """NTK-vector product function ct ↦ Θ̂(x1, x2)·ct = J(x1) J(x2)ᵀ ct, without forming Θ̂ (neural-tangents').

    One VJP on x2 and one JVP on x1: the cost of about N1 + N2 forward passes, the memory of one VJP
    (Novak et al. 2022, arXiv:2206.08720, §L).

    Parameters
    ----------
    f : callable
        ``apply_fn`` of a :mod:`fastntk.stax` network, or (jax imported) a JAX function f(params, x).
    x1 : array of shape (N1, d); x2 : array of shape (N2, d) or None (x1) (images (N, *S, C) for a
        network with Conv, pooling or LayerNorm layers)
    params : the parameters (a pytree; init_fn's list for a fastntk network)
    **apply_fn_kwargs : passed to a JAX ``f``

    Returns
    -------
    ntk_vp_fn : callable ``ntk_vp_fn(cotangents)``, cotangents of the shape of f(params, x2) (N2, O),
        returning an array of the shape of f(params, x1) (N1, O). A fastntk network with NumPy
        arrays computes in NumPy (its network rules' JVP and VJP); otherwise by ``jax.vjp`` and
        ``jax.jvp``, as neural-tangents, and jit-able.
    """
    if _is_jax(f) or _jax_dispatch.uses_jax(x1, x2, params):
        return _jax.ntk_vp_fn(f, x1, x2, params, **apply_fn_kwargs)
    if apply_fn_kwargs:
        raise TypeError(f"a fastntk network takes no apply_fn keyword arguments; got {sorted(apply_fn_kwargs)}")
    return _tracking.ntk_vp_fn(_net.network_of(f), x1, x2, params)


def monte_carlo_kernel_fn(init_fn, apply_fn, key, n_samples, batch_size=0, device_count=-1,
                          store_on_device=True, trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                          implementation=NtkImplementation.STRUCTURED_DERIVATIVES):
    """Empirical NNGP/NTK averaged over ``n_samples`` random initialisations (as neural-tangents).

    Parameters
    ----------
    init_fn, apply_fn : the network's ``init_fn`` and ``apply_fn``: fastntk.stax's, or with a JAX key
        any ``init_fn(key, input_shape) -> (output_shape, params)`` and JAX function ``apply_fn(params, x)``.
    key : JAX PRNG key, int >= 0, numpy Generator, SeedSequence or 1-D array of non-negative ints
        A JAX key (``jax.random.PRNGKey(k)``, a JAX array) is split exactly as neural-tangents 0.6.5
        splits it, so with a fastntk ``init_fn`` (which draws neural-tangents' parameters from a key)
        the samples, hence the averages, are neural-tangents'; the results are then JAX arrays.
        Otherwise sample s uses ``SeedSequence(key).spawn(...)[s]`` (NumPy parameters).
    n_samples : int or increasing sequence of int
        With a sequence, ``kernel_fn`` returns a generator of the running averages at those counts.
    batch_size, device_count, store_on_device : accepted for neural-tangents compatibility.
    trace_axes, diagonal_axes, vmap_axes, implementation : as :func:`empirical_ntk_fn`.

    Returns
    -------
    kernel_fn : callable ``kernel_fn(x1, x2=None, get=None)``
        namedtuple (nngp, ntk) for ``get=None``, the array for a string ``get``.
    """
    if not callable(init_fn):
        raise TypeError(f"init_fn must be the init_fn of a fastntk.stax network; got {type(init_fn).__name__}")
    jax_key = _jax.is_key(key)
    if not (jax_key and _is_jax(apply_fn)):
        _net.network_of(apply_fn, "apply_fn")
    counts = _tracking.check_n_samples(n_samples)
    seeds = None if jax_key else _tracking.seed_sequence(key).spawn(counts[-1])
    emp = empirical_kernel_fn(apply_fn, trace_axes, diagonal_axes, vmap_axes, implementation)

    def kernel_fn(x1, x2=None, get=None):
        names = check_get(get)
        check_pair(x1, x2)
        samples = (_jax.monte_carlo_params(init_fn, key, counts[-1], tuple(x1.shape)) if jax_key else
                   (init_fn(np.random.default_rng(seed), tuple(x1.shape))[1] for seed in seeds))
        means = _tracking.running_average(samples, emp, counts, x1, x2, names)
        gen = (m[0] if isinstance(get, str) else Kernel(names, m) for m in means)
        return gen if not isinstance(n_samples, numbers.Integral) else next(gen)

    return kernel_fn


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
    kernel-regression solution that the linearized model reaches as t → ∞; and the network's outputs
    ``fx_train`` of shape (R, n_train, O) and ``fx_test`` of shape (R, n_test, O) at those steps.

    Notes
    -----
    In the NTK parameterization all three shrink as width m grows (Lee et al. 2019,
    arXiv:1902.06720: ‖θₜ − θ₀‖/‖θ₀‖ = O(1/√m), Θ̂ₜ − Θ̂₀ = O(1/√m)).
    """
    return _tracking.train_and_track(_net.network_of(f), params, x_train, y_train, x_test, learning_rate, n_steps,
                                     record_every)
