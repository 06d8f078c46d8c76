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
diagnostics (:func:`select_diag_reg`, :func:`kernel_spectrum`, :func:`convergence_times`,
:func:`loss_bound`, :func:`kernel_alignment`) live in :mod:`fastntk.spectrum` and are re-exported
here; the linear algebra lives in :mod:`fastntk.solvers`.

Shapes: kernels are 2-D per-output kernels ``(N1, N2)`` (the kernel of an O-output network is
``K ⊗ I_O``), so ``trace_axes`` must name every axis of ``y_train`` but the first. Results are
float32 when the kernel and ``y_train`` are float32, else float64; the linear algebra runs in
float64.
"""

from __future__ import annotations

import collections
import functools
import warnings

import numpy as np
from scipy.sparse.linalg import LinearOperator

from . import _jax_dispatch, solvers
from ._types import DiagRegSelection, Gaussian, Kernel, KernelRidge, Spectrum
from ._validation import (check_array, check_get, check_initial, check_integer, check_kernel, check_kernel_or_operator,
                          check_memory, check_outputs, check_positive, check_targets, check_test_operator, check_times,
                          result_dtype)
from .solvers import KernelFactor, flow_factors, gradient_descent_mse_expm, in_eigenbasis, step_factors
from .spectrum import convergence_times, kernel_alignment, kernel_spectrum, loss_bound, select_diag_reg

__all__ = [
    "DiagRegSelection",
    "Gaussian",
    "KernelRidge",
    "Spectrum",
    "convergence_times",
    "gp_inference",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "gradient_descent_mse_expm",
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
                         diag_reg_absolute_scale=False, trace_axes=(-1,), *, discrete=False):
    """Outputs of a network trained by gradient descent on MSE, from its kernel (closed form).

    Parameters
    ----------
    k_train_train : ndarray of shape (N, N), float32 or float64
        NTK Θ (or NNGP) of the training inputs.
    y_train : ndarray of shape (N,) or (N, O...)
        Targets; ``n = y_train.size`` normalises the loss ``1/(2n) Σ (f − y)²``.
    learning_rate : float > 0
        η. Continuous time: only ``τ = η·t`` matters. Discrete: η enters ``I − ηK/n``.
    diag_reg : float >= 0
        Regularizer: ``K + diag_reg·trace(K)/N·I``, or ``K + diag_reg·I`` with
        ``diag_reg_absolute_scale=True``.
    trace_axes : tuple of int
        Axes of ``y_train`` the kernel is traced over: every axis but the first.
    discrete : bool, keyword-only
        False: gradient flow, ``t`` is continuous, in units of ``learning_rate``. True: ``t`` counts
        gradient-descent steps, ``f_train(k) = y + (I − ηK/n)^k (f_train_0 − y)``; a RuntimeWarning
        says when ``η > 2n/λ_max`` (the iteration diverges).

    Returns
    -------
    predict_fn : callable ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)``
        ``t``: None (t = ∞), a scalar or an array of any shape S; results then have leading axes S.
        ``fx_train_0`` (N, O...) or scalar; None skips the train set. ``fx_test_0`` (N_test, O...)
        or scalar; None skips the test set. ``k_test_train`` (N_test, N), never regularized.
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
                                       diag_reg_absolute_scale, trace_axes), {"discrete": discrete},
                                       functools.partial(_mse_shapes, k_train_train, y_train))
    k = check_kernel(k_train_train, "k_train_train", symmetric=True)
    y, tail, y_dtype = check_targets(y_train, trace_axes, k.shape[0])
    learning_rate = check_positive(learning_rate, "learning_rate")
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    factor = KernelFactor(k, diag_reg, bool(diag_reg_absolute_scale), "k_train_train")
    dtype = result_dtype(k, np.empty(0, y_dtype))

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        if fx_train_0 is None and fx_test_0 is None:
            raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("k_test_train is needed for test predictions (fx_test_0 is not None)")
        f0 = check_initial(0.0 if fx_train_0 is None else fx_train_0, "fx_train_0", (k.shape[0], *tail))
        r = f0.reshape(y.shape) - y
        ktd = ft0 = None
        if fx_test_0 is not None:
            ktd = check_kernel(k_test_train, "k_test_train", (None, k.shape[0]))
            ft0 = check_initial(fx_test_0, "fx_test_0", (ktd.shape[0], *tail)).reshape(ktd.shape[0], -1)
        if t is None:
            train, test = _predict_limit(factor, r, ktd, discrete, learning_rate)
            shape = ()
        else:
            t = check_times(t, integer=discrete)
            train, test = _predict_finite(factor, r, ktd, t.reshape(-1, 1), discrete, learning_rate,
                                          fx_train_0 is not None)
            shape = t.shape
        fx_train = y if train is None else f0.reshape(y.shape) + train  # t = None: y exactly, as neural-tangents
        fx_train = None if fx_train_0 is None else fx_train.reshape(*shape, *f0.shape)
        fx_test = None if ktd is None else (ft0 + test).reshape(*shape, ktd.shape[0], *tail)
        if fx_test is None:
            return fx_train.astype(dtype, copy=False)
        if fx_train is None:
            return fx_test.astype(dtype, copy=False)
        return fx_train.astype(dtype, copy=False), fx_test.astype(dtype, copy=False)

    return _jax_dispatch.accepting_jax(predict_fn, functools.partial(_mse_shapes, k, y_train))


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


def gp_inference(k_train_train, y_train, diag_reg=0.0, diag_reg_absolute_scale=False, trace_axes=(-1,)):
    """Posterior of the NNGP, the NTK ensemble and the NTKGP given the training data.

    Parameters
    ----------
    k_train_train : Kernel or namedtuple with ``nngp``/``ntk`` of shape (N, N), or one ndarray
        As ``kernel_fn(x_train, None, ('nngp', 'ntk'))`` returns. One array is the kernel of every
        name in ``get``; the NTK posterior covariance needs both kernels (see Raises).
    y_train : ndarray of shape (N,) or (N, O...)
    diag_reg, diag_reg_absolute_scale, trace_axes
        As in :func:`gradient_descent_mse` (relative: × trace of the kernel in use / N).

    Returns
    -------
    predict_fn : callable ``predict_fn(get=None, k_test_train=None, k_test_test=None)``
        ``get``: 'nngp', 'ntk', 'ntkgp' or a tuple (None = ('nngp', 'ntk')). ``k_test_train``
        (N_test, N) kernels (Kernel/namedtuple or array); None gives the train set, ``y_train``
        with zero covariance. ``k_test_test`` (N_test, N_test) kernels; None: means only.
        Returns, per name of ``get``, the mean (N_test, O...) or a :class:`Gaussian` with the
        (N_test, N_test) covariance; one value for a string ``get``, else a namedtuple.

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
                                       trace_axes), {}, functools.partial(_gp_shapes, k_train_train, y_train))
    first = k_train_train
    if _is_kernels(k_train_train):
        first = next((v for v in (getattr(k_train_train, g, None) for g in ("nngp", "ntk")) if v is not None), None)
        if first is None:
            raise TypeError("k_train_train must be an array or a Kernel/namedtuple with nngp and/or ntk")
    first = check_kernel(first, "k_train_train")
    n = first.shape[0]
    y, tail, y_dtype = check_targets(y_train, trace_axes, n)
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    dtype = result_dtype(first, np.empty(0, y_dtype))
    factors = {}

    def factor(g):
        if g not in factors:
            kdd = check_kernel(_attr(k_train_train, g, "k_train_train"), f"k_train_train.{g}", (n, n),
                                   symmetric=True)
            factors[g] = KernelFactor(kdd, diag_reg, bool(diag_reg_absolute_scale), f"k_train_train.{g}")
        return factors[g]

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        names, single = check_get(get, ("nngp", "ntk", "ntkgp")), isinstance(get, str)
        if "ntk" in names and k_test_train is not None and k_test_test is not None:
            _check_both_kernels(k_train_train=k_train_train, k_test_train=k_test_train)
        out = {g: _posterior(g, factor, y, tail, k_test_train, k_test_test, dtype) for g in names}
        return _pack(out, names, single)

    return _jax_dispatch.accepting_jax(predict_fn, functools.partial(_gp_shapes, first, y_train))


def _check_both_kernels(**kernels):
    """Raise unless each of ``kernels`` carries both the NNGP and the NTK (a plain array carries one)."""
    for name, k in kernels.items():
        if not _is_kernels(k):
            raise ValueError(
                f"{name} is one array, but the NTK posterior covariance (get='ntk' with k_test_test) "
                f"needs both the NNGP and the NTK: pass k_train_train and k_test_train as "
                f"kernel_fn(..., get=('nngp', 'ntk')) returns them; or ask for get='ntkgp' or 'nngp', "
                f"or for means only (k_test_test=None)")


def _posterior(g, factor, y, tail, k_test_train, k_test_test, dtype):
    base = "ntk" if g == "ntkgp" else g
    fac = factor(base)
    if k_test_train is None:
        mean = y.reshape(fac.n, *tail)
        cov = None
        if k_test_test is not None:
            check_memory(8 * fac.n**2, f"the train-set covariance ({fac.n}×{fac.n} float64)",
                         "k_test_test=None (means only)")
            cov = np.zeros((fac.n, fac.n))
    else:
        ktd = _test_kernel(k_test_train, base, fac.n, "k_test_train")
        mean = (ktd @ fac.solve(y)).reshape(ktd.shape[0], *tail)
        cov = None if k_test_test is None else _posterior_cov(g, factor, ktd, k_test_train, k_test_test)
    mean = mean.astype(dtype, copy=False)
    return mean if cov is None else Gaussian(mean, cov.astype(dtype, copy=False))


def _test_kernel(k, g, n, name, n_test=None):
    k = _attr(k, g, name)
    return check_kernel(k, f"{name}.{g}", (n_test, n))


def _posterior_cov(g, factor, ktd, k_test_train, k_test_test):
    init, n_t = "ntk" if g == "ntkgp" else "nngp", ktd.shape[0]
    ktt = check_kernel(_attr(k_test_test, init, "k_test_test"), f"k_test_test.{init}", (n_t, n_t))
    ktd_init = _test_kernel(k_test_train, init, ktd.shape[1], "k_test_train", n_t)
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
    **kernel_fn_train_train_kwargs
        Passed to every ``kernel_fn`` call (test calls: overridden by the predict_fn's kwargs).

    Returns
    -------
    predict_fn : callable ``predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kwargs)``
        ``t``: None (∞), scalar or array of shape S (leading result axes). ``x_test`` (N_test, d);
        None: the training set. ``get``: 'nngp', 'ntk' or a tuple (None = both):
        dynamics with the NNGP or the NTK. Returns per name the mean (S..., N_test, O...) or,
        with ``compute_cov``, a :class:`Gaussian` with covariance (S..., N_test, N_test).

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
    y, tail, y_dtype = check_targets(y_train, trace_axes, x_train.shape[0])
    learning_rate = check_positive(learning_rate, "learning_rate")
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    k_dd, factors, memo = {}, {}, {}

    def train_kernels(names):
        missing = tuple(g for g in names if g not in k_dd)
        if missing:
            missing = ("nngp", "ntk") if "ntk" in missing else missing  # the NNGP comes with the NTK
            res = kernel_fn(x_train, None, missing, **kernel_fn_train_train_kwargs)
            for g in missing:
                k_dd[g] = check_kernel(_attr(res, g, "kernel_fn(x_train)"), f"kernel_fn(x_train).{g}", symmetric=True)
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
        dtype = result_dtype(*train_kernels(need), np.empty(0, y_dtype))
        kw = {**kernel_fn_train_train_kwargs, **kernel_fn_test_test_kwargs}
        k_td = None if x_test is None else _memo_kernel(memo, kernel_fn, x_test, x_train, need, kw)
        k_tt = compute_cov or None
        if x_test is not None and compute_cov:
            k_tt = _memo_kernel(memo, kernel_fn, x_test, None, ("nngp",), kw)
            k_tt = collections.namedtuple("Kernel", "nngp")(k_tt.nngp)
        if t is None:
            out = {g: _posterior(g, factors.get, y, tail, k_td, k_tt, dtype) for g in names}
        else:
            out = {g: _ensemble_t(g, factors, y, tail, learning_rate * t, k_td, k_tt, compute_cov) for g in names}
            out = {g: _astype(v, dtype) for g, v in out.items()}
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


def _ensemble_t(g, factors, y, tail, tau, k_td, k_tt, compute_cov):
    lam, basis = factors[g].eig()
    n = y.size
    e, h = flow_factors(lam, tau.reshape(-1, 1), n)
    shape = tau.shape
    if k_td is None:
        mean = in_eigenbasis(basis, -e, basis.apply_t(y)).reshape(*shape, y.shape[0], *tail)
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
        return Gaussian(mean, cov.reshape(*shape, *cov.shape[1:]))
    ktd = _test_kernel(k_td, g, factors[g].n, "kernel_fn(x_test, x_train)")
    mean = in_eigenbasis(basis, -h, basis.apply_t(y), ktd).reshape(*shape, ktd.shape[0], *tail)
    if not compute_cov:
        return mean
    nngp_td = _test_kernel(k_td, "nngp", factors[g].n, "kernel_fn(x_test, x_train)")
    a = basis.apply_t(nngp_td.T)
    if g == "nngp":
        _, h2 = flow_factors(lam, 2 * tau.reshape(-1, 1), n)
        cov = k_tt.nngp + (a.T * h2[:, None, :]) @ a
    else:
        term_1 = in_eigenbasis(basis, -h, basis.apply_t(ktd.T))
        term_2 = in_eigenbasis(basis, -h, a, ktd)
        cov = np.swapaxes(term_1, 1, 2) @ factors["nngp"].k @ term_1 - (term_2 + np.swapaxes(term_2, 1, 2)) + k_tt.nngp
    return Gaussian(mean, cov.reshape(*shape, *cov.shape[1:]))


def max_learning_rate(ntk_train_train, y_train_size=None, momentum=0.0, eps=1e-12):
    """Largest stable learning rate of (momentum) gradient descent on the 1/(2n) MSE loss.

    ``2·(1 + momentum)·n / (λ_max(Θ) + eps)`` with ``n = y_train_size`` (default: N, i.e. one
    output): beyond it ``I − η Θ/n`` is not a contraction (Goh 2017, "Why Momentum Really Works").

    Parameters
    ----------
    ntk_train_train : ndarray of shape (N, N)
    y_train_size : int > 0 or None
    momentum : float >= 0
    eps : float >= 0
        Guards against λ_max = 0.

    Returns
    -------
    float
    """
    k = check_kernel(ntk_train_train, "ntk_train_train", symmetric=True)
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
                 preconditioner=None, rank=100, seed=0):
    """Kernel ridge regression on the residuals ``y − f_0`` (the t = ∞ limit of regularized gradient flow).

    Parameters
    ----------
    k_train_train : ndarray of shape (N, N), or a scipy LinearOperator with ``solver='cg'``
    y_train : ndarray of shape (N,) or (N, O...)
        Several outputs are solved together (one factorization).
    diag_reg : float >= 0
        Relative (× trace(K)/N) unless ``diag_reg_absolute_scale`` (required for a LinearOperator).
    k_test_train : ndarray of shape (N_test, N) or LinearOperator, keyword-only
    fx_train_0, fx_test_0 : scalar or array broadcastable to y_train / (N_test, O...), keyword-only
        Initial outputs: the fit is ``f_0 + K α``.
    solver : {'cholesky', 'eigh', 'cg'}, keyword-only
        'cholesky' falls back to the eigendecomposition pseudo-inverse (RuntimeWarning) when
        K_reg is indefinite or singular; 'cg' runs conjugate gradients on all outputs at once to
        relative residual ``tol`` (RuntimeWarning if ``maxiter``, default 10·N, is reached), with
        products ``K @ V`` only (:func:`fastntk.solvers.cg`).
    preconditioner : {None, 'nystrom'}, keyword-only
        'cg' only: randomized Nyström preconditioner of rank ``rank`` drawn with ``seed``
        (:func:`fastntk.solvers.nystrom_preconditioner`); needs ``diag_reg > 0``.

    Returns
    -------
    KernelRidge
        ``dual_coef`` α = K_reg⁻¹(y − f_train_0), ``fx_train = f_train_0 + K α`` (unregularized K),
        ``fx_test = f_test_0 + K_test,train α`` (None without ``k_test_train``).
    """
    if solver not in ("cholesky", "eigh", "cg"):
        raise ValueError(f"unknown solver {solver!r}; supported: 'cholesky', 'eigh', 'cg'")
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    if solver != "cg" and isinstance(k_train_train, LinearOperator):
        raise TypeError("k_train_train may be a LinearOperator only with solver='cg'")
    k, reg = check_kernel_or_operator(k_train_train, "k_train_train", diag_reg, diag_reg_absolute_scale)
    y, tail, y_dtype = check_outputs(y_train, k.shape[0])
    r = y - check_initial(fx_train_0, "fx_train_0", (k.shape[0], *tail)).reshape(y.shape)
    ktd = None if k_test_train is None else check_test_operator(k_test_train, "k_test_train", k.shape[0])
    if ktd is not None:
        ft0 = check_initial(fx_test_0, "fx_test_0", (ktd.shape[0], *tail)).reshape(ktd.shape[0], -1)
    if solver == "cg":
        tol, maxiter = check_positive(tol, "tol"), check_integer(maxiter, "maxiter", allow_none=True)
        if preconditioner not in (None, "nystrom"):
            raise ValueError(f"unknown preconditioner {preconditioner!r}; supported: None, 'nystrom'")
        if preconditioner is not None:
            rank = check_integer(rank, "rank", maximum=k.shape[0])
        alpha = solvers.solve_regularized(k, reg, r, tol, maxiter, preconditioner, rank, seed)
    else:
        fac = KernelFactor(k, diag_reg, diag_reg_absolute_scale, "k_train_train")
        alpha = fac.solve(r) if solver == "cholesky" else fac.pinv_solve(r)
    fx_train = (y - r) + k @ alpha
    fx_test = None
    if ktd is not None:
        fx_test = (ft0 + ktd @ alpha).reshape(ktd.shape[0], *tail)
    dtype = np.float64 if isinstance(k, LinearOperator) else result_dtype(k, np.empty(0, y_dtype))
    alpha, fx_train = (a.reshape(-1, *tail).astype(dtype, copy=False) for a in (alpha, fx_train))
    return KernelRidge(alpha, fx_train, None if fx_test is None else fx_test.astype(dtype, copy=False))


# ---------------------------------------------------------------------------------------------
# Result shapes of the predict functions, from their arguments' shapes: the callbacks under jax.jit
# need them before any value exists (fastntk._jax_dispatch).


def _mse_shapes(k, y, t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
    """gradient_descent_mse's predict_fn: (S..., N, O...) train and (S..., N_test, O...) test outputs."""
    dtype, times, tail = _jax_dispatch.result_dtype(None, k, y), np.shape(t) if t is not None else (), np.shape(y)[1:]
    train = None if fx_train_0 is None else _jax_dispatch.shape_dtype((*times, np.shape(k)[0], *tail), dtype)
    test = None if fx_test_0 is None else _jax_dispatch.shape_dtype((*times, np.shape(k_test_train)[0], *tail), dtype)
    return test if train is None else train if test is None else (train, test)


def _gaussian_shapes(names, get, n_test, tail, cov_shape, dtype):
    """Per name of get the mean (…, N_test, O...) or a Gaussian with covariance ``cov_shape`` (None: means only)."""
    mean = _jax_dispatch.shape_dtype((*n_test, *tail), dtype)
    cov = None if cov_shape is None else _jax_dispatch.shape_dtype(cov_shape, dtype)
    return _pack({g: mean if cov is None else Gaussian(mean, cov) for g in names}, names, isinstance(get, str))


def _gp_shapes(k_train_train, y, get=None, k_test_train=None, k_test_test=None):
    """gp_inference's predict_fn: means (N_test, O...) and covariances (N_test, N_test)."""
    first = next((v for v in (getattr(k_train_train, g, None) for g in ("nngp", "ntk")) if v is not None), None) \
        if _is_kernels(k_train_train) else k_train_train
    names = check_get(get, ("nngp", "ntk", "ntkgp"))
    n = np.shape(first)[0] if k_test_train is None else np.shape(_attr(k_test_train, "ntk" if "ntk" in names else
                                                                       "nngp", "k_test_train"))[0]
    cov = None if k_test_test is None else (n, n)
    return _gaussian_shapes(names, get, (n,), np.shape(y)[1:], cov, _jax_dispatch.result_dtype(None, first, y))


def _ensemble_shapes(x_train, y, t=None, x_test=None, get=None, compute_cov=False, **kernel_fn_kwargs):
    """gradient_descent_mse_ensemble's predict_fn: means (S..., N_test, O...), covariances (S..., N_test, N_test)."""
    times = np.shape(t) if t is not None else ()
    n = np.shape(x_train if x_test is None else x_test)[0]
    return _gaussian_shapes(check_get(get), get, (*times, n), np.shape(y)[1:],
                            (*times, n, n) if compute_cov else None, _jax_dispatch.result_dtype(None, x_train, y))
