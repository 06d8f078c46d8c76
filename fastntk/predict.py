"""Kernel regression and training dynamics of wide networks, as ``neural_tangents.predict``.

Gradient flow on the MSE loss ``L(f) = 1/(2n) Σ (f − y)²`` (``n = y_train.size``) evolves the
outputs as ``df/dτ = −(1/n) K (f − y)``, with ``τ = learning_rate · t`` (Jacot et al. 2018,
arXiv:1806.07572; Lee et al. 2019, arXiv:1902.06720). Every finite-``t`` prediction comes from
one eigendecomposition ``K_reg = V diag(λ) V^T`` of ``K_reg = K + diag_reg·(trace(K)/N)·I``,
computed on the first call and cached; ``t=None`` (t = ∞) uses a Cholesky solve (the cached
eigendecomposition when there is one: no second factorization). V is kept
factored (:func:`fastntk.solvers.eigh_factored`): two N×N arrays, and no 2N³-flop
back-transformation. Solvers that never form an N×N matrix are in :mod:`fastntk.solvers`.

Numerical rules (where neural-tangents is fragile):

* Eigenvalues ``λ ≤ N·eps·λ_max`` (eps of the kernel's dtype), negative ones included, are
  numerically zero: the residual along them never decays (``E = 1``) and they are dropped from the
  test-set map ``K_test,train V diag((e^{−λτ/n} − 1)/λ) V^T``. For a positive semi-definite joint
  kernel ``K_test,train v = 0`` on the null space of ``K``, so this is the exact limit; keeping the
  term would only multiply rounding by τ. Above the cutoff ``expm1(−λτ/n)/λ`` is used, which is
  accurate for tiny ``λτ`` (it tends to ``−τ/n``) and never divides by 0. A kernel with
  ``λ_min < −√eps·λ_max`` is indefinite beyond rounding: RuntimeWarning, then the same rule.
* ``t=None``: Cholesky of ``K_reg``. When it fails, or a pivot² falls below ``N·eps·max pivot²``
  (``K_reg`` numerically singular), a RuntimeWarning is emitted and the eigendecomposition
  pseudo-inverse is used instead; the train prediction is then the t → ∞ limit of gradient flow,
  ``f_train_0 + P (y − f_train_0)`` with ``P`` the projector on the non-null eigenvectors
  (``= y`` whenever ``K_reg`` is invertible, as neural-tangents returns).

Inputs: ``k_train_train`` must be symmetric to rounding (``max|K − Kᵀ| ≤ 100·eps·√N·max|K|``,
:data:`fastntk._validation.SYMMETRY_RTOL`), since the Cholesky and eigendecomposition paths read
different triangles; a larger asymmetry raises ValueError. Before any N×N float64 factor is
allocated its bytes are checked against the available memory (MemoryError with the alternatives).

Layout: this module holds the neural-tangents API and :func:`kernel_ridge`; the spectral
diagnostics (:func:`select_diag_reg`, :func:`gcv_risk`, :func:`kernel_spectrum`, :func:`convergence_times`,
:func:`loss_bound`, :func:`kernel_alignment`) live in :mod:`fastntk.spectrum` and are re-exported
here; the linear algebra lives in :mod:`fastntk.solvers`.

Shapes, as neural-tangents: the axes of ``y_train`` (N, ...) not in ``trace_axes`` pair up in
every kernel, which then has shape (N1, N2, O1, O1, ...) and stands for the (N1·O1⋯, N2·O1⋯)
matrix whose rows run over (N1, O1, ...) in C order (neural-tangents' ``make_2d``); the traced axes
are independent, the kernel of the whole output being ``K ⊗ I``. The default ``trace_axes=(-1,)``
takes (N, N) kernels for y_train (N, O); ``trace_axes=()`` takes (N, N, O, O) (an empirical NTK
with its output axes kept); a 1-D y_train (N,) takes (N, N). Covariances come back in the same
paired layout, (N_test, N_test, O1, O1, ...). ``n = y_train.size`` in every normalization.

Dtypes: results are float32 when the training kernel(s) and ``y_train`` are all float32, and float64
otherwise, while every computation runs in float64; the keyword ``dtype=np.float32`` or
``np.float64`` of each function fixes the result dtype instead (in
:func:`gradient_descent_mse_ensemble` it is one of the kernel_fn keywords, passed on to kernel_fn
as well). :func:`max_learning_rate` returns a Python float. (neural-tangents computes in the
inputs' dtype; with ``jax_enable_x64`` its float32 results turn float64 wherever a float64 scalar
such as ``t`` enters, e.g. ``gradient_descent_mse``'s test outputs but not its t = ∞ train outputs.)

:func:`gradient_descent` (any loss, momentum) integrates an ODE (:mod:`fastntk._ode`); the other
training dynamics are closed forms.
"""

from __future__ import annotations

import collections
import functools
import warnings

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import _jax_dispatch, _ode, solvers
from ._types import DiagRegSelection, Gaussian, Kernel, KernelRidge, ODEState, Spectrum
from ._validation import (check_array, check_dtype, check_get, check_initial, check_integer, check_kernel,
                          check_kernel_or_operator, check_memory, check_outputs, check_positive, check_targets,
                          check_test_operator, check_times, flatten_kernel, result_dtype)
from .solvers import (KernelFactor, flow_factors, gradient_descent_mse_expm, gradient_descent_mse_nystrom, in_eigenbasis,
                      step_factors)
from .spectrum import convergence_times, gcv_risk, kernel_alignment, kernel_spectrum, loss_bound, select_diag_reg

__all__ = [
    "DiagRegSelection",
    "Gaussian",
    "KernelRidge",
    "ODEState",
    "Spectrum",
    "convergence_times",
    "gcv_risk",
    "gp_inference",
    "gradient_descent",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "gradient_descent_mse_expm",
    "gradient_descent_mse_nystrom",
    "kernel_alignment",
    "kernel_ridge",
    "kernel_spectrum",
    "loss_bound",
    "max_learning_rate",
    "select_diag_reg",
]


@functools.lru_cache(maxsize=None)
def _gaussians(names):
    return collections.namedtuple("Gaussians", names)


def _pack(out, names, single):
    return out[names[0]] if single else _gaussians(names)(*(out[g] for g in names))


def _astype(v, dtype):
    if isinstance(v, Gaussian):
        return Gaussian(v.mean.astype(dtype, copy=False), v.covariance.astype(dtype, copy=False))
    return v.astype(dtype, copy=False)


def _is_kernels(k):
    """Whether ``k`` is a Kernel/namedtuple of kernels (else an array-like)."""
    return hasattr(k, "nngp") or hasattr(k, "ntk")


def _attr(k, g, name):
    """The ``g`` kernel of a Kernel/namedtuple ``k``; an array-like is returned as is."""
    if not _is_kernels(k):
        return k
    v = getattr(k, g, None)
    if v is None:
        raise ValueError(f"{name} has no {g!r} kernel; pass kernel_fn(..., get=('nngp', 'ntk'))")
    return v


# ---------------------------------------------------------------------------------------------
# neural-tangents API


def gradient_descent_mse(k_train_train, y_train, learning_rate=1.0, diag_reg=0.0,
                         diag_reg_absolute_scale=False, trace_axes=(-1,), *, discrete=False, dtype=None):
    """Outputs of a network trained by gradient descent on MSE, from its kernel (closed form).

    Parameters
    ----------
    k_train_train : ndarray of shape (N, N), or (N, N, O1, O1, ...) with output axes kept; float32 or float64
        NTK Θ (or NNGP) of the training inputs (layout: the module docstring).
    y_train : ndarray of shape (N,) or (N, O...)
        Targets; ``n = y_train.size`` normalises the loss ``1/(2n) Σ (f − y)²``.
    learning_rate : float > 0
        η. Continuous time: only ``τ = η·t`` matters. Discrete: η enters ``I − ηK/n``.
    diag_reg : float >= 0
        Regularizer: ``K + diag_reg·trace(K)/N·I``, or ``K + diag_reg·I`` with
        ``diag_reg_absolute_scale=True``.
    trace_axes : int or tuple of int
        Axes of ``y_train`` the kernel is traced over (absent from it; never the first): (-1,) for an
        (N, N) kernel and y_train (N, O), () for (N, N, O, O).
    discrete : bool, keyword-only
        False: gradient flow, ``t`` is continuous, in units of ``learning_rate``. True: ``t`` counts
        gradient-descent steps, ``f_train(k) = y + (I − ηK/n)^k (f_train_0 − y)``; a RuntimeWarning
        says when ``η > 2n/λ_max`` (the iteration diverges).
    dtype : None, np.float32 or np.float64, keyword-only
        The result dtype (None: float32 iff k_train_train and y_train are float32).

    Returns
    -------
    predict_fn : callable ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)``
        ``t``: None (t = ∞), a scalar or an array of any shape S; results then have leading axes S.
        ``fx_train_0`` (N, O...) or scalar; None skips the train set. ``fx_test_0`` (N_test, O...)
        or scalar; None skips the test set. ``k_test_train`` (N_test, N, ...), never regularized.
        Returns ``fx_train_t`` if ``fx_test_0`` is None, ``fx_test_t`` if ``fx_train_0`` is None,
        else ``(fx_train_t, fx_test_t)``.

    Notes
    -----
    ``f_train(τ) = y + e^{−τK/n}(f_train_0 − y)``,
    ``f_test(τ) = f_test_0 + K_test,train K⁻¹ (e^{−τK/n} − I)(f_train_0 − y)``; at t = None
    ``f_train = y``, ``f_test = f_test_0 + K_test,train K⁻¹ (y − f_train_0)``. Singular and
    indefinite kernels: see the module docstring.

    Examples
    --------
    >>> import numpy as np
    >>> from fastntk.predict import gradient_descent_mse
    >>> k = np.array([[2.0, 0.5], [0.5, 1.0]]); y = np.array([[1.0], [-1.0]])
    >>> predict_fn = gradient_descent_mse(k, y)
    >>> np.allclose(predict_fn(1e6, 0.0), y)
    True
    """
    if _jax_dispatch.uses_jax(k_train_train, y_train):  # JAX arrays, jit: see fastntk._jax_dispatch
        return _jax_dispatch.predictor(gradient_descent_mse, (k_train_train, y_train, learning_rate, diag_reg,
                                       diag_reg_absolute_scale, trace_axes), {"discrete": discrete, "dtype": dtype},
                                       functools.partial(_mse_shapes, k_train_train, y_train, dtype=dtype))
    lay = check_targets(y_train, trace_axes)
    k, y = lay.train_kernel(k_train_train, "k_train_train"), lay.y
    learning_rate = check_positive(learning_rate, "learning_rate")
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    factor = KernelFactor(k, diag_reg, bool(diag_reg_absolute_scale), "k_train_train")
    dtype = result_dtype(k, np.empty(0, lay.dtype), dtype=check_dtype(dtype))

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        _check_inputs(fx_train_0, fx_test_0, k_test_train)
        f0 = lay.to_2d(check_initial(0.0 if fx_train_0 is None else fx_train_0, "fx_train_0", lay.shape))
        r = f0 - y
        ktd, ft0 = _test_inputs(lay, fx_test_0, k_test_train)
        if t is None:
            train, test = _predict_limit(factor, r, ktd, discrete, learning_rate)
            shape = ()
        else:
            t = check_times(t, integer=discrete)
            train, test = _predict_finite(factor, r, ktd, t.reshape(-1, 1), discrete, learning_rate,
                                          fx_train_0 is not None)
            shape = t.shape
        fx_train = y if train is None else f0 + train  # t = None: y exactly, as neural-tangents
        fx_train = None if fx_train_0 is None else lay.from_2d(fx_train, shape).astype(dtype, copy=False)
        fx_test = None if ktd is None else lay.from_2d(ft0 + test, shape).astype(dtype, copy=False)
        return _outputs(fx_train, fx_test)

    return _jax_dispatch.accepting_jax(predict_fn, functools.partial(_mse_shapes, k, y_train, dtype=dtype))


def _check_inputs(fx_train_0, fx_test_0, k_test_train):
    """neural-tangents' checks of a predict_fn call: something to predict, and k_test_train for a test set."""
    if fx_train_0 is None and fx_test_0 is None:
        raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError("k_test_train is needed for test predictions (fx_test_0 is not None)")


def _test_inputs(lay, fx_test_0, k_test_train):
    """(K_test,train (N_test·P, N·P), f_test_0 (N_test·P, M)), or (None, None) without a test set."""
    if fx_test_0 is None:
        return None, None
    ktd = lay.kernel(k_test_train, "k_test_train", None, lay.n)
    return ktd, lay.to_2d(check_initial(fx_test_0, "fx_test_0", lay.shape_of(np.shape(k_test_train)[0])))


def _outputs(fx_train, fx_test):
    """What a predict_fn returns: fx_train, fx_test, or both (whichever is not None)."""
    if fx_test is None:
        return fx_train
    return fx_test if fx_train is None else (fx_train, fx_test)


# ---------------------------------------------------------------------------------------------
# gradient descent on any loss: an ODE (neural-tangents' predict.gradient_descent)


def gradient_descent(loss, k_train_train, y_train, learning_rate=1.0, momentum=None, trace_axes=(-1,), *,
                     loss_grad=None, rtol=1e-10, dtype=None):
    """Outputs of a network trained by (momentum) gradient descent on any loss, from its kernel (an ODE).

    Parameters
    ----------
    loss : callable ``loss(fx, y_hat) -> float``
        ``fx`` and ``y_hat`` of y_train's shape, e.g. cross-entropy
        ``lambda fx, y_hat: -jnp.mean(jax.nn.log_softmax(fx) * y_hat)``. Differentiated by
        ``jax.grad`` in float64 (as neural-tangents does; JAX is imported only then), unless
        ``loss_grad`` is given or ``loss`` has a method ``loss.grad(fx, y_hat)`` (fastntk's
        additions, for NumPy losses).
    k_train_train : ndarray of shape (N, N), or (N, N, O, O, ...) with the output axes kept
        NTK Θ of the training inputs, with the axes of y_train not in ``trace_axes`` paired
        (neural-tangents' layout: the module docstring).
    y_train : ndarray of shape (N, O...)
    learning_rate : float > 0
        η. Without momentum only ``τ = η·t`` matters; with momentum ``τ = √η·t``.
    momentum : float >= 0 or None
        None: gradient flow ``df/dτ = −Θ ∇L(f)``. A number m: neural-tangents' continuous heavy
        ball ``d²f/dτ² = −Θ ∇L(f) + (m − 1)/√η · df/dτ``.
    trace_axes : tuple of int
        Axes of y_train the kernel is traced over (absent from it).
    loss_grad : callable ``loss_grad(fx, y_hat) -> dL/dfx`` or None, keyword-only
        The gradient of ``loss`` (y_train's shape); ``loss`` is then not called.
    rtol : float > 0, keyword-only
        Relative tolerance of the ODE solver (DOP853; absolute tolerance ``rtol·max|f_0, q_0, y|``).
    dtype : None, np.float32 or np.float64, keyword-only
        The result dtype (None: the module's rule).

    Returns
    -------
    predict_fn : callable ``predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None)``
        ``t``: a finite time ≥ 0 or an array of them, any shape S and order (results have leading
        axes S); None (t = ∞) raises, as the flow of a loss such as cross-entropy has no limit.
        ``fx_train_or_state_0``: fx_train_0 (N, O...) or a scalar; None: the train set is not
        returned (its outputs still start at 0 and drive the test set); or an :class:`ODEState`
        (with ``fx_test`` in it, ``fx_test_0=None``), and then the :class:`ODEState` at ``t`` is
        returned. ``fx_test_0`` (N_test, O...) or scalar with ``k_test_train`` (N_test, N, ...).
        Returns ``fx_train_t``, ``fx_test_t``, both, or the ODEState, as neural-tangents.

    Notes
    -----
    Lee et al. 2019 (arXiv:1902.06720), eq. 8: ``df_test/dτ = −Θ_test,train ∇L(f_train)``.
    ``loss(fx, y) = jnp.mean((fx − y)²) / 2`` gives :func:`gradient_descent_mse`'s dynamics.

    Examples
    --------
    >>> import numpy as np
    >>> from fastntk.predict import gradient_descent, gradient_descent_mse
    >>> k = np.array([[2.0, 0.5], [0.5, 1.0]]); y = np.array([[1.0], [-1.0]])
    >>> mse_grad = lambda fx, y_hat: (fx - y_hat) / y_hat.size
    >>> predict_fn = gradient_descent(None, k, y, loss_grad=mse_grad)
    >>> np.allclose(predict_fn(3.0, 0.0), gradient_descent_mse(k, y)(3.0, 0.0), rtol=1e-8)
    True
    """
    lay = check_targets(y_train, trace_axes)
    k = lay.train_kernel(k_train_train, "k_train_train")
    learning_rate = check_positive(learning_rate, "learning_rate")
    momentum = check_positive(momentum, "momentum", allow_zero=True, allow_none=True)
    rtol = check_positive(rtol, "rtol")
    dtype = result_dtype(k, np.empty(0, lay.dtype), dtype=check_dtype(dtype))
    grad_2d = _ode.loss_gradient(loss, loss_grad, lay)
    speed = learning_rate if momentum is None else np.sqrt(learning_rate)
    friction = None if momentum is None else (momentum - 1.0) / np.sqrt(learning_rate)

    def predict_fn(t=None, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None):
        as_state = isinstance(fx_train_or_state_0, ODEState)
        fx_train_0, fx_test_0, qx_0 = _ode_inputs(fx_train_or_state_0, fx_test_0, momentum)
        _check_inputs(fx_train_0, fx_test_0, k_test_train)
        t = None if t is None else check_times(t)
        if t is None or not np.isfinite(t).all():
            raise ValueError("t must hold finite times for gradient_descent (the ODE is integrated up to max(t)); "
                             f"got {t!r}")
        f0 = lay.to_2d(check_initial(0.0 if fx_train_0 is None else fx_train_0, "fx_train_0", lay.shape))
        ktd, ft0 = _test_inputs(lay, fx_test_0, k_test_train)
        kernel, f0 = (k, f0) if ktd is None else (np.vstack((k, ktd)), np.vstack((f0, ft0)))
        q0 = None
        if momentum is not None:
            q0 = lay.to_2d(check_initial(0.0 if qx_0[0] is None else qx_0[0], "qx_train", lay.shape))
            if ktd is not None:
                qt0 = check_initial(0.0 if qx_0[1] is None else qx_0[1], "qx_test", lay.shape_of(ktd.shape[0] // lay.p))
                q0 = np.vstack((q0, lay.to_2d(qt0)))
        f, q = _ode.gradient_flow(kernel, grad_2d, f0, q0, speed * t, friction, rtol, lay.y)
        n = k.shape[0]
        blocks = (f[:, :n], f[:, n:], *((None, None) if q is None else (q[:, :n], q[:, n:])))
        parts = [None if b is None or b.shape[1] == 0 else lay.from_2d(b, t.shape).astype(dtype, copy=False)
                 for b in blocks]
        if as_state:
            return ODEState(*parts)
        return _outputs(None if fx_train_0 is None else parts[0], parts[1])

    return predict_fn


def _ode_inputs(fx_train_or_state_0, fx_test_0, momentum):
    """(fx_train_0, fx_test_0, (qx_train_0, qx_test_0)) of a gradient_descent predict_fn call."""
    if not isinstance(fx_train_or_state_0, ODEState):
        return fx_train_or_state_0, fx_test_0, (None, None)
    if fx_test_0 is not None:
        raise ValueError("fx_test_0 must be None when fx_train_or_state_0 is an ODEState (its fx_test is the test set)")
    state = fx_train_or_state_0
    if momentum is None and (state.qx_train is not None or state.qx_test is not None):
        raise ValueError("the ODEState has momentum variables qx_train/qx_test, but momentum is None")
    return state.fx_train, state.fx_test, (state.qx_train, state.qx_test)


def _check_stable(factor, learning_rate, n):
    top = factor.eig()[0][-1]
    if learning_rate * top > 2 * n:
        warnings.warn(f"learning_rate={learning_rate:.6g} exceeds the stable maximum 2n/λ_max = {2 * n / top:.6g}: "
                      "discrete gradient descent diverges along the top eigendirections", RuntimeWarning, stacklevel=4)


def _predict_finite(factor, r, ktd, t, discrete, learning_rate, train=True):
    """Changes (T, N, M) of the train and (T, N_test, M) of the test outputs at times t (T, 1)."""
    lam, basis = factor.eig()
    if discrete:
        _check_stable(factor, learning_rate, r.size)
        e, h = step_factors(lam, t, learning_rate, r.size)
    else:
        e, h = flow_factors(lam, learning_rate * t, r.size)
    z = basis.apply_t(r)  # the residual projected once; then one product with V for every time
    if ktd is None or not train:
        return (in_eigenbasis(basis, e, z), None) if ktd is None else (None, in_eigenbasis(basis, h, z, ktd))
    w = in_eigenbasis(basis, np.concatenate([e, h]), z)  # train and test: one product with V
    test = ktd @ np.moveaxis(w[len(e):], 0, 1).reshape(ktd.shape[1], -1)
    return w[: len(e)], np.moveaxis(test.reshape(ktd.shape[0], len(e), -1), 1, 0)


def _predict_limit(factor, r, ktd, discrete, learning_rate):
    """t = ∞: f_train = y (None), f_test − f_test_0 = K_test,train K⁻¹(−r); pseudo-inverse limits if singular."""
    if discrete:
        _check_stable(factor, learning_rate, r.size)
    test = None if ktd is None else ktd @ factor.solve(-r)
    if not factor.singular:
        return None, test
    lam, basis = factor.eig()
    return -basis.apply((lam > 0)[:, None] * basis.apply_t(r)), test


def gp_inference(k_train_train, y_train, diag_reg=0.0, diag_reg_absolute_scale=False, trace_axes=(-1,), *,
                 dtype=None):
    """Posterior of the NNGP, the NTK ensemble and the NTKGP given the training data.

    Parameters
    ----------
    k_train_train : Kernel or namedtuple with ``nngp``/``ntk`` of shape (N, N) (or (N, N, O1, O1, ...)), or one ndarray
        As ``kernel_fn(x_train, None, ('nngp', 'ntk'))`` returns. One array is the kernel of every
        name in ``get``; the NTK posterior covariance needs both kernels (see Raises).
    y_train : ndarray of shape (N,) or (N, O...)
    diag_reg, diag_reg_absolute_scale, trace_axes
        As in :func:`gradient_descent_mse` (relative: × trace of the kernel in use / N).
    dtype : None, np.float32 or np.float64, keyword-only
        The result dtype (None: float32 iff the first train kernel and y_train are float32).

    Returns
    -------
    predict_fn : callable ``predict_fn(get=None, k_test_train=None, k_test_test=None)``
        ``get``: 'nngp', 'ntk', 'ntkgp' or a tuple (None = ('nngp', 'ntk')). ``k_test_train``
        (N_test, N) kernels (Kernel/namedtuple or array); None gives the train set, ``y_train``
        with zero covariance. ``k_test_test`` (N_test, N_test) kernels; None: means only.
        Returns, per name of ``get``, the mean (N_test, O...) or a :class:`Gaussian` with the
        (N_test, N_test) covariance ((N_test, N_test, O1, O1, ...) with output axes kept); one value
        for a string ``get``, else a namedtuple.

    Raises
    ------
    ValueError
        When ``get`` holds 'ntk', ``k_test_test`` is given and ``k_train_train`` or
        ``k_test_train`` is one array: the NTK covariance needs 𝒦 and Θ, and one array would
        stand for both (neural-tangents raises here too).

    Notes
    -----
    nngp: ``𝒦_td 𝒦⁻¹ y``, ``𝒦_tt − 𝒦_td 𝒦⁻¹ 𝒦_dt``. ntk (Lee et al. 2019, arXiv:1902.06720):
    ``Θ_td Θ⁻¹ y``, ``𝒦_tt + Θ_td Θ⁻¹ 𝒦 Θ⁻¹ Θ_dt − (Θ_td Θ⁻¹ 𝒦_dt + transpose)``. ntkgp (He et al.
    2020, arXiv:2007.05864): ``Θ_td Θ⁻¹ y``, ``Θ_tt − Θ_td Θ⁻¹ Θ_dt``. Kernels are regularized
    where inverted.
    """
    if _jax_dispatch.uses_jax(k_train_train, y_train):  # JAX arrays, jit: see fastntk._jax_dispatch
        return _jax_dispatch.predictor(gp_inference, (k_train_train, y_train, diag_reg, diag_reg_absolute_scale,
                                       trace_axes), {"dtype": dtype},
                                       functools.partial(_gp_shapes, k_train_train, y_train, dtype=dtype))
    first = k_train_train
    if _is_kernels(k_train_train):
        first = next((v for v in (getattr(k_train_train, g, None) for g in ("nngp", "ntk")) if v is not None), None)
        if first is None:
            raise TypeError("k_train_train must be an array or a Kernel/namedtuple with nngp and/or ntk")
    lay = check_targets(y_train, trace_axes)
    first = lay.train_kernel(first, "k_train_train")
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    dtype = result_dtype(first, np.empty(0, lay.dtype), dtype=check_dtype(dtype))
    factors = {}

    def factor(g):
        if g not in factors:
            kdd = lay.train_kernel(_attr(k_train_train, g, "k_train_train"), f"k_train_train.{g}")
            factors[g] = KernelFactor(kdd, diag_reg, bool(diag_reg_absolute_scale), f"k_train_train.{g}")
        return factors[g]

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        names, single = check_get(get, ("nngp", "ntk", "ntkgp")), isinstance(get, str)
        if "ntk" in names and k_test_train is not None and k_test_test is not None:
            _check_both_kernels(k_train_train=k_train_train, k_test_train=k_test_train)
        out = {g: _posterior(g, factor, lay, k_test_train, k_test_test, dtype) for g in names}
        return _pack(out, names, single)

    return _jax_dispatch.accepting_jax(predict_fn, functools.partial(_gp_shapes, first, y_train, dtype=dtype))


def _check_both_kernels(**kernels):
    """Raise unless each of ``kernels`` carries both the NNGP and the NTK (a plain array carries one)."""
    for name, k in kernels.items():
        if not _is_kernels(k):
            raise ValueError(
                f"{name} is one array, but the NTK posterior covariance (get='ntk' with k_test_test) "
                f"needs both the NNGP and the NTK: pass k_train_train and k_test_train as "
                f"kernel_fn(..., get=('nngp', 'ntk')) returns them; or ask for get='ntkgp' or 'nngp', "
                f"or for means only (k_test_test=None)")


def _posterior(g, factor, lay, k_test_train, k_test_test, dtype):
    """The gp_inference posterior ``g`` (mean, or Gaussian with ``k_test_test``); ``lay``: check_targets."""
    base = "ntk" if g == "ntkgp" else g
    fac = factor(base)
    if k_test_train is None:
        mean = lay.from_2d(lay.y)
        cov = None
        if k_test_test is not None:
            check_memory(8 * fac.n**2, f"the train-set covariance ({fac.n}×{fac.n} float64)",
                         "k_test_test=None (means only)")
            cov = np.zeros((fac.n, fac.n))
    else:
        ktd = _test_kernel(lay, k_test_train, base, "k_test_train")
        mean = lay.from_2d(ktd @ fac.solve(lay.y))
        cov = None if k_test_test is None else _posterior_cov(g, factor, lay, ktd, k_test_train, k_test_test)
    mean = mean.astype(dtype, copy=False)
    return mean if cov is None else Gaussian(mean, lay.cov_from_2d(cov).astype(dtype, copy=False))


def _test_kernel(lay, k, g, name, n_test=None):
    """The ``g`` kernel of test-train kernels ``k`` as an (N_test·P, N·P) matrix."""
    return lay.kernel(_attr(k, g, name), f"{name}.{g}", n_test, lay.n)


def _posterior_cov(g, factor, lay, ktd, k_test_train, k_test_test):
    init, n_t = "ntk" if g == "ntkgp" else "nngp", ktd.shape[0] // lay.p
    ktt = lay.kernel(_attr(k_test_test, init, "k_test_test"), f"k_test_test.{init}", n_t, n_t)
    ktd_init = _test_kernel(lay, k_test_train, init, "k_test_train", n_t)
    if g != "ntk":
        return ktt - ktd @ factor(g if g == "nngp" else "ntk").solve(ktd_init.T)
    term_1, term_2 = factor("ntk").solve(ktd.T), ktd @ factor("ntk").solve(ktd_init.T)
    return term_1.T @ (factor("nngp").k @ term_1) - (term_2 + term_2.T) + ktt


def gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=1.0, diag_reg=0.0,
                                  diag_reg_absolute_scale=False, trace_axes=(-1,), **kernel_fn_train_train_kwargs):
    """Mean and covariance of an infinite ensemble of infinite-width networks trained on MSE.

    Parameters
    ----------
    kernel_fn : callable ``kernel_fn(x1, x2, get, **kwargs)``
        Returns a Kernel/namedtuple with ``nngp`` and ``ntk`` (e.g. from :func:`fastntk.stax.serial`).
    x_train : ndarray of shape (N, d)
    y_train : ndarray of shape (N,) or (N, O...)
    learning_rate, diag_reg, diag_reg_absolute_scale, trace_axes
        As in :func:`gradient_descent_mse`; ``t`` is in units of ``learning_rate``.
    dtype : None, np.float32 or np.float64, keyword (one of the kernel_fn keywords)
        Passed on to ``kernel_fn`` with the other keywords (fastntk's kernel_fn then computes the
        kernels in it), and fixes the result dtype (None: float32 iff the train kernels in use and
        y_train are float32). A predict_fn keyword ``dtype`` replaces it, as every keyword does.
    **kernel_fn_train_train_kwargs
        Passed to every ``kernel_fn`` call (test calls: overridden by the predict_fn's kwargs).

    Returns
    -------
    predict_fn : callable ``predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kwargs)``
        ``t``: None (∞), scalar or array of shape S (leading result axes). ``x_test`` (N_test, d);
        None: the training set. ``get``: 'nngp', 'ntk' or a tuple (None = both):
        dynamics with the NNGP or the NTK. Returns per name the mean (S..., N_test, O...) or,
        with ``compute_cov``, a :class:`Gaussian` with covariance (S..., N_test, N_test[, O1, O1, ...]).

    Notes
    -----
    With ``E_τ = exp(−τK/n)`` and ``A_τ = K⁻¹(I − E_τ)`` (K = Θ or 𝒦, regularized): test mean
    ``K_td A_τ y``; nngp covariance ``𝒦_tt − 𝒦_td 𝒦⁻¹(I − E_{2τ})𝒦_dt``; ntk covariance
    ``𝒦_tt + (A_τ Θ_dt)^T 𝒦 (A_τ Θ_dt) − (Θ_td A_τ 𝒦_dt + transpose)`` (Lee et al. 2019,
    arXiv:1902.06720, eq. 16). Train set: mean ``(I − E_τ) y``, covariance ``E_τ 𝒦 E_τ``.
    ``t=None`` is :func:`gp_inference`.
    """
    if not callable(kernel_fn):
        raise TypeError(f"kernel_fn must be callable; got {type(kernel_fn).__name__}")
    if _jax_dispatch.uses_jax(x_train, y_train):  # JAX arrays, jit: see fastntk._jax_dispatch
        return _jax_dispatch.predictor(gradient_descent_mse_ensemble, (kernel_fn, x_train, y_train, learning_rate,
                                       diag_reg, diag_reg_absolute_scale, trace_axes), kernel_fn_train_train_kwargs,
                                       functools.partial(_ensemble_shapes, x_train, y_train))
    x_train = check_array(x_train, "x_train", ndim=max(np.ndim(x_train), 2))
    lay = check_targets(y_train, trace_axes)
    if lay.n != x_train.shape[0]:
        raise ValueError(f"y_train must have {x_train.shape[0]} rows to match x_train; got shape {lay.shape}")
    learning_rate = check_positive(learning_rate, "learning_rate")
    check_dtype(kernel_fn_train_train_kwargs.get("dtype"))
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    k_dd, factors, memo = {}, {}, {}

    def train_kernels(names):
        missing = tuple(g for g in names if g not in k_dd)
        if missing:
            missing = ("nngp", "ntk") if "ntk" in missing else missing  # the NNGP comes with the NTK
            res = kernel_fn(x_train, None, missing, **kernel_fn_train_train_kwargs)
            for g in missing:
                k_dd[g] = lay.train_kernel(_attr(res, g, "kernel_fn(x_train)"), f"kernel_fn(x_train).{g}")
                factors[g] = KernelFactor(k_dd[g], diag_reg, bool(diag_reg_absolute_scale), f"kernel_fn(x_train).{g}")
        return Kernel(names, [k_dd[g] for g in names])

    def predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_test_test_kwargs):
        names, single = check_get(get), isinstance(get, str)
        t = None if t is None else check_times(t)
        if x_test is not None:
            x_test = check_array(x_test, "x_test", ndim=x_train.ndim)
            if x_test.shape[1:] != x_train.shape[1:]:
                raise ValueError(f"x_test must have the shape of x_train's points {x_train.shape[1:]}; "
                                 f"got x_test.shape={x_test.shape}")
        need = tuple(g for g in ("nngp", "ntk") if g in names or (g == "nngp" and compute_cov))
        kw = {**kernel_fn_train_train_kwargs, **kernel_fn_test_test_kwargs}
        out_dtype = result_dtype(*train_kernels(need), np.empty(0, lay.dtype), dtype=check_dtype(kw.get("dtype")))
        k_td = None if x_test is None else _memo_kernel(memo, kernel_fn, x_test, x_train, need, kw)
        k_tt = compute_cov or None
        if x_test is not None and compute_cov:
            k_tt = _memo_kernel(memo, kernel_fn, x_test, None, ("nngp",), kw)
            k_tt = collections.namedtuple("Kernel", "nngp")(k_tt.nngp)
        if t is None:
            out = {g: _posterior(g, factors.get, lay, k_td, k_tt, out_dtype) for g in names}
        else:
            out = {g: _ensemble_t(g, factors, lay, learning_rate * t, k_td, k_tt, compute_cov) for g in names}
            out = {g: _astype(v, out_dtype) for g, v in out.items()}
        return _pack(out, names, single)

    return _jax_dispatch.accepting_jax(predict_fn, functools.partial(_ensemble_shapes, x_train, y_train))


def _memo_kernel(memo, kernel_fn, x_test, x2, get, kw):
    """kernel_fn(x_test, x2, get, **kw), reused while x_test (by value) and kw (by identity) repeat, per get."""
    x_old, kw_old, out = memo.get((x2 is None, get), (None, {}, None))
    same_kw = kw_old.keys() == kw.keys() and all(kw_old[k] is v for k, v in kw.items())
    if out is None or not same_kw or not np.array_equal(x_old, x_test):
        out = kernel_fn(x_test, x2, get, **kw)
        memo[(x2 is None, get)] = (np.array(x_test, copy=True), dict(kw), out)
    return out


def _ensemble_t(g, factors, lay, tau, k_td, k_tt, compute_cov):
    lam, basis = factors[g].eig()
    y = lay.y
    e, h = flow_factors(lam, tau.reshape(-1, 1), y.size)
    shape = tau.shape
    if k_td is None:
        mean = lay.from_2d(in_eigenbasis(basis, -e, basis.apply_t(y)), shape)
        if not compute_cov:
            return mean
        n_tr = y.shape[0]
        check_memory(8 * n_tr**2 * (1 + 3 * tau.size), f"the train-set covariance at {tau.size} times "
                     f"({tau.size} × {n_tr}×{n_tr} float64, and V)",
                     "x_test (a test set), compute_cov=False, fewer times")
        vecs = basis.dense()
        if g == "nngp":
            cov = (vecs * (lam * (1.0 + e) ** 2)[:, None, :]) @ vecs.T  # E_τ 𝒦_reg E_τ
        else:
            exp_t = (vecs * (1.0 + e)[:, None, :]) @ vecs.T
            cov = exp_t @ factors["nngp"].k @ exp_t
        return Gaussian(mean, lay.cov_from_2d(cov, shape))
    ktd = _test_kernel(lay, k_td, g, "kernel_fn(x_test, x_train)")
    mean = lay.from_2d(in_eigenbasis(basis, -h, basis.apply_t(y), ktd), shape)
    if not compute_cov:
        return mean
    n_t = ktd.shape[0] // lay.p
    nngp_td = _test_kernel(lay, k_td, "nngp", "kernel_fn(x_test, x_train)", n_t)
    nngp_tt = lay.kernel(k_tt.nngp, "kernel_fn(x_test).nngp", n_t, n_t)
    a = basis.apply_t(nngp_td.T)
    if g == "nngp":
        _, h2 = flow_factors(lam, 2 * tau.reshape(-1, 1), y.size)
        cov = nngp_tt + (a.T * h2[:, None, :]) @ a
    else:
        term_1 = in_eigenbasis(basis, -h, basis.apply_t(ktd.T))
        term_2 = in_eigenbasis(basis, -h, a, ktd)
        cov = np.swapaxes(term_1, 1, 2) @ factors["nngp"].k @ term_1 - (term_2 + np.swapaxes(term_2, 1, 2)) + nngp_tt
    return Gaussian(mean, lay.cov_from_2d(cov, shape))


def max_learning_rate(ntk_train_train, y_train_size=None, momentum=0.0, eps=1e-12):
    """Largest stable learning rate of (momentum) gradient descent on the 1/(2n) MSE loss.

    ``2·(1 + momentum)·n / (λ_max(Θ) + eps)`` with ``n = y_train_size`` (default: N, i.e. one
    output): beyond it ``I − η Θ/n`` is not a contraction (Goh 2017, "Why Momentum Really Works").

    Parameters
    ----------
    ntk_train_train : ndarray of shape (N, N), or (N, N, O1, O1, ...) with the output axes kept
        The latter is read as the (N·O1⋯, N·O1⋯) matrix, as neural-tangents does.
    y_train_size : int > 0 or None
        ``n``; None: the side of the (flattened) kernel, N or N·O1⋯ (neural-tangents' default, which
        assumes ``trace_axes=()``).
    momentum : float >= 0
    eps : float >= 0
        Guards against λ_max = 0.

    Returns
    -------
    float
    """
    k = check_kernel(flatten_kernel(ntk_train_train, "ntk_train_train"), "ntk_train_train", symmetric=True)
    y_train_size = check_integer(y_train_size, "y_train_size", allow_none=True)
    momentum = check_positive(momentum, "momentum", allow_zero=True)
    eps = check_positive(eps, "eps", allow_zero=True)
    n = k.shape[0] if y_train_size is None else y_train_size
    check_memory(8 * k.shape[0] ** 2, f"λ_max of ntk_train_train (a {k.shape[0]}×{k.shape[0]} float64 copy)",
                 "a few power iterations on K @ v (solvers.kernel_operator), fewer training points")
    top = solvers.largest_eigenvalue(k)
    return 2 * (1 + momentum) * n / (top + eps)


# ---------------------------------------------------------------------------------------------
# beyond neural-tangents: kernel ridge (λ selection and the spectrum: fastntk.spectrum)


def kernel_ridge(k_train_train, y_train, diag_reg=0.0, diag_reg_absolute_scale=False, *, k_test_train=None,
                 fx_train_0=0.0, fx_test_0=0.0, solver="cholesky", tol=1e-10, maxiter=None,
                 preconditioner=None, rank=100, seed=0, n_centers=1000, sampling="uniform", validation=None,
                 memory_budget=None, progress=False, dtype=None):
    """Kernel ridge regression on the residuals ``y − f_0`` (the t = ∞ limit of regularized gradient flow).

    Parameters
    ----------
    k_train_train : ndarray of shape (N, N), or a scipy LinearOperator (``solver='cg'``) or a symmetric
        :class:`fastntk.solvers.KernelOperator` (``solver='cg'`` or ``'falkon'``)
    y_train : ndarray of shape (N,) or (N, O...)
        Several outputs are solved together (one factorization, one CG or Falkon run).
    diag_reg : float >= 0
        Relative (× trace(K)/N) unless ``diag_reg_absolute_scale``. A LinearOperator needs
        ``diag_reg_absolute_scale=True`` unless it has a ``diagonal()`` (a KernelOperator does).
    k_test_train : ndarray of shape (N_test, N) or LinearOperator, keyword-only
        With ``solver='falkon'`` a KernelOperator of (x_test, x_train): only its blocks against the
        centres are computed (N_test × M entries).
    fx_train_0, fx_test_0 : scalar or array broadcastable to y_train / (N_test, O...), keyword-only
        Initial outputs: the fit is ``f_0 + K α``.
    solver : {'cholesky', 'eigh', 'cg', 'falkon'}, keyword-only
        'cholesky' falls back to the eigendecomposition pseudo-inverse (RuntimeWarning) when
        K_reg is indefinite or singular; 'cg' runs conjugate gradients on all outputs at once to
        relative residual ``tol`` (if ``maxiter``, default 10·N, is reached: a RuntimeWarning with
        the residual, and the best iterate), with products ``K @ V`` only (:func:`fastntk.solvers.cg`);
        'falkon' solves Nyström kernel ridge regression on ``n_centers`` centres
        (:func:`fastntk.solvers.falkon`; ``maxiter`` default 100): the minimiser of
        ‖y − f_0 − K_NM β‖² + λ βᵀ K_MM β, which is exact kernel ridge regression when every training
        point is a centre. Neither forms an N×N matrix.
    preconditioner : {None, 'nystrom'}, keyword-only
        'cg' only: randomized Nyström preconditioner of rank ``rank`` drawn with ``seed``
        (:func:`fastntk.solvers.nystrom_preconditioner`); needs ``diag_reg > 0``.
    seed : int or numpy.random.Generator, keyword-only
        Of the Nyström preconditioner ('cg'), of the centres and the validation split ('falkon').
    n_centers, sampling, validation, memory_budget : keyword-only
        'falkon' only: M (clipped to N with a RuntimeWarning); 'uniform' or 'leverage' centres;
        None or the rows held out for early stopping (a fraction or a count); the bytes a stored
        K_NM may take (None: min(available/4, 4 GiB)). K_NM is stored in float32, so the fit carries
        the float32 rounding of its entries (~1e-7 relative, times the conditioning); with
        ``memory_budget=0`` every block is recomputed in the kernel's dtype instead. See
        :func:`fastntk.solvers.falkon`.
    progress : bool, keyword-only
        'cg' and 'falkon': tqdm bars over the iterations (and the stored K_NM rows).
    dtype : None, np.float32 or np.float64, keyword-only
        The result dtype (None: float32 iff k_train_train (an array) and y_train are float32).

    Returns
    -------
    KernelRidge
        ``dual_coef`` α = K_reg⁻¹(y − f_train_0), ``fx_train = f_train_0 + K α`` (unregularized K),
        ``fx_test = f_test_0 + K_test,train α`` (None without ``k_test_train``); with 'cg' also
        ``solution`` (a :class:`fastntk.solvers.CGResult`). With 'falkon': ``dual_coef`` β (M, O...)
        over the training points ``centers`` (M,), ``fx_train = f_train_0 + K_NM β``,
        ``fx_test = f_test_0 + K_test,M β``, ``solution`` a :class:`fastntk.solvers.FalkonResult`.
    """
    if solver not in ("cholesky", "eigh", "cg", "falkon"):
        raise ValueError(f"unknown solver {solver!r}; supported: 'cholesky', 'eigh', 'cg', 'falkon'")
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    if solver in ("cholesky", "eigh") and isinstance(k_train_train, LinearOperator):
        raise TypeError("k_train_train may be a LinearOperator only with solver='cg' or 'falkon'")
    if solver == "falkon":
        return _falkon_ridge(k_train_train, y_train, diag_reg, diag_reg_absolute_scale, k_test_train, fx_train_0,
                             fx_test_0, tol, 100 if maxiter is None else maxiter, seed, n_centers, sampling,
                             validation, memory_budget, progress, dtype)
    k, reg = check_kernel_or_operator(k_train_train, "k_train_train", diag_reg, diag_reg_absolute_scale)
    y, tail, y_dtype = check_outputs(y_train, k.shape[0])
    r = y - check_initial(fx_train_0, "fx_train_0", (k.shape[0], *tail)).reshape(y.shape)
    ktd = None if k_test_train is None else check_test_operator(k_test_train, "k_test_train", k.shape[0])
    if ktd is not None:
        ft0 = check_initial(fx_test_0, "fx_test_0", (ktd.shape[0], *tail)).reshape(ktd.shape[0], -1)
    solution = None
    if solver == "cg":
        tol, maxiter = check_positive(tol, "tol"), check_integer(maxiter, "maxiter", allow_none=True)
        if preconditioner not in (None, "nystrom"):
            raise ValueError(f"unknown preconditioner {preconditioner!r}; supported: None, 'nystrom'")
        if preconditioner is not None:
            rank = check_integer(rank, "rank", maximum=k.shape[0])
        solution = solvers.solve_regularized(k, reg, r, tol, maxiter, preconditioner, rank, seed, progress)
        alpha = solution.solution
    else:
        fac = KernelFactor(k, diag_reg, diag_reg_absolute_scale, "k_train_train")
        alpha = fac.solve(r) if solver == "cholesky" else fac.pinv_solve(r)
    fx_train = (y - r) + k @ alpha
    fx_test = None
    if ktd is not None:
        fx_test = (ft0 + ktd @ alpha).reshape(ktd.shape[0], *tail)
    dtype = check_dtype(dtype)
    if dtype is None:
        dtype = np.float64 if isinstance(k, LinearOperator) else result_dtype(k, np.empty(0, y_dtype))
    alpha, fx_train = (a.reshape(-1, *tail).astype(dtype, copy=False) for a in (alpha, fx_train))
    return KernelRidge(alpha, fx_train, None if fx_test is None else fx_test.astype(dtype, copy=False),
                       solution=solution)


def _falkon_ridge(op, y_train, diag_reg, absolute, k_test_train, fx_train_0, fx_test_0, tol, maxiter, seed, n_centers,
                  sampling, validation, memory_budget, progress, dtype):
    """kernel_ridge(solver='falkon'): Falkon on the residuals, test outputs from K(x_test, centres) only."""
    if not isinstance(op, solvers.KernelOperator) or not op.symmetric:
        raise TypeError(f"k_train_train must be a symmetric KernelOperator (x2 None) with solver='falkon'; "
                        f"got {type(op).__name__}")
    n = op.shape[0]
    y, tail, _ = check_outputs(y_train, n)
    f0 = check_initial(fx_train_0, "fx_train_0", (n, *tail)).reshape(y.shape)
    if k_test_train is not None and not (isinstance(k_test_train, solvers.KernelOperator)
                                         and k_test_train.shape[1] == n):
        raise TypeError(f"k_test_train must be a KernelOperator of (x_test, x_train) with {n} columns with "
                        f"solver='falkon'; got {type(k_test_train).__name__} of shape "
                        f"{getattr(k_test_train, 'shape', None)}")
    if k_test_train is not None:
        ft0 = check_initial(fx_test_0, "fx_test_0", (k_test_train.shape[0], *tail)).reshape(k_test_train.shape[0], -1)
    res = solvers.falkon(op, y - f0, diag_reg, absolute, n_centers, sampling=sampling, seed=seed, tol=tol,
                         maxiter=maxiter, validation=validation, memory_budget=memory_budget, progress=progress)
    fx_test = None
    if k_test_train is not None:
        test = solvers.NystromProducts(k_test_train, None, res.centers, memory_budget=0).matmat(res.coefficients)
        fx_test = (ft0 + test).reshape(-1, *tail)
    dtype = check_dtype(dtype) or np.float64
    beta, fx_train = (a.reshape(-1, *tail).astype(dtype, copy=False) for a in (res.coefficients, f0 + res.fitted))
    return KernelRidge(beta, fx_train, None if fx_test is None else fx_test.astype(dtype, copy=False), res.centers,
                       res)


# ---------------------------------------------------------------------------------------------
# Result shapes of the predict functions, from their arguments' shapes: the callbacks under jax.jit
# need them before any value exists (fastntk._jax_dispatch).


def _mse_shapes(k, y, t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None, *, dtype=None):
    """gradient_descent_mse's predict_fn: (S..., N, O...) train and (S..., N_test, O...) test outputs."""
    dtype, times, tail = _jax_dispatch.result_dtype(dtype, k, y), np.shape(t) if t is not None else (), np.shape(y)[1:]
    train = None if fx_train_0 is None else _jax_dispatch.shape_dtype((*times, np.shape(k)[0], *tail), dtype)
    test = None if fx_test_0 is None else _jax_dispatch.shape_dtype((*times, np.shape(k_test_train)[0], *tail), dtype)
    return test if train is None else train if test is None else (train, test)


def _gaussian_shapes(names, get, n_test, tail, cov_shape, dtype):
    """Per name of get the mean (…, N_test, O...) or a Gaussian with covariance ``cov_shape`` (None: means only)."""
    mean = _jax_dispatch.shape_dtype((*n_test, *tail), dtype)
    cov = None if cov_shape is None else _jax_dispatch.shape_dtype(cov_shape, dtype)
    return _pack({g: mean if cov is None else Gaussian(mean, cov) for g in names}, names, isinstance(get, str))


def _gp_shapes(k_train_train, y, get=None, k_test_train=None, k_test_test=None, *, dtype=None):
    """gp_inference's predict_fn: means (N_test, O...) and covariances (N_test, N_test)."""
    first = next((v for v in (getattr(k_train_train, g, None) for g in ("nngp", "ntk")) if v is not None), None) \
        if _is_kernels(k_train_train) else k_train_train
    names = check_get(get, ("nngp", "ntk", "ntkgp"))
    n = np.shape(first)[0] if k_test_train is None else np.shape(_attr(k_test_train, "ntk" if "ntk" in names else
                                                                       "nngp", "k_test_train"))[0]
    cov = None if k_test_test is None else (n, n)
    return _gaussian_shapes(names, get, (n,), np.shape(y)[1:], cov, _jax_dispatch.result_dtype(dtype, first, y))


def _ensemble_shapes(x_train, y, t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_kwargs):
    """gradient_descent_mse_ensemble's predict_fn: means (S..., N_test, O...), covariances (S..., N_test, N_test)."""
    times = np.shape(t) if t is not None else ()
    n = np.shape(x_train if x_test is None else x_test)[0]
    return _gaussian_shapes(check_get(get), get, (*times, n), np.shape(y)[1:],
                            (*times, n, n) if compute_cov else None, _jax_dispatch.result_dtype(None, x_train, y))
