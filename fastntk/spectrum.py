"""Spectral diagnostics of a training kernel: ridge selection (GCV, leave-one-out), GCV's estimate of the
test risk, eigenvalues, convergence times and loss bounds of gradient flow, kernel–target alignment.

Conventions are those of :mod:`fastntk.predict` (``n = y_train.size``, ``diag_reg`` relative to
trace(K)/N unless ``diag_reg_absolute_scale``, times in units of ``learning_rate``); every
function here is also importable from :mod:`fastntk.predict`. Eigenvalues ``λ ≤ N·eps·λ_max``
(eps of the kernel's dtype), negative ones included, count as 0.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sl

from ._types import DiagRegSelection, Spectrum
from ._validation import (check_initial, check_integer, check_kernel, check_memory, check_outputs, check_positive,
                          check_times)
from .solvers import FACTOR_ALTERNATIVES, KernelFactor, in_eigenbasis

__all__ = ["convergence_times", "gcv_risk", "kernel_alignment", "kernel_spectrum", "loss_bound", "select_diag_reg"]


def select_diag_reg(k_train_train, y_train, diag_regs, diag_reg_absolute_scale=False, *, fx_train_0=0.0,
                    criterion="gcv"):
    """Choose the ridge ``diag_reg`` by generalized cross-validation or leave-one-out, from one eigh.

    Parameters
    ----------
    k_train_train : ndarray of shape (N, N), float32 or float64
        Symmetric; with a relative grid its trace must be > 0.
    y_train : ndarray of shape (N,) or (N, O...)
    diag_regs : array of G >= 1 values > 0
        The grid; relative (× trace(K)/N) unless ``diag_reg_absolute_scale``.
    fx_train_0 : scalar or array, keyword-only
        Regress the residuals ``y − fx_train_0``.
    criterion : {'gcv', 'loo'}, keyword-only

    Returns
    -------
    DiagRegSelection
        ``diag_reg`` (the grid value minimising ``criterion``), ``diag_regs``, and the curves
        ``gcv`` and ``loo`` of shape (G,), dimensionless: relative to the mean square residual
        ``‖y − fx_train_0‖²/(N·M)`` (their common limit as diag_reg → ∞), so 1 means no better
        than ``fx_train_0``. The result does not depend on the scale of ``y_train``.
        :func:`gcv_risk` gives the GCV curve in units of y² instead.

    Raises
    ------
    ValueError
        ``k_train_train`` has trace ≤ 0 with a relative grid (every diag_reg would be ≤ 0).

    Notes
    -----
    With ``S = I − K(K + λI)⁻¹ = λ(K + λI)⁻¹`` and residuals R (N, M):
    GCV(λ) = ‖S R‖²/(N·M) / (tr S / N)² (Craven & Wahba 1979; the estimator studied by Wei, Hu &
    Steinhardt 2022, arXiv:2203.06176); LOO(λ) = mean_ij ((S R)_ij / S_ii)² (exact leave-one-out
    for kernel ridge). Negative eigenvalues of K are clamped to 0. R is divided by a power of 2
    near max|R| first, so no square over- or underflows (y scaled by 1e±200 gives the same result).

    Examples
    --------
    >>> import numpy as np
    >>> from fastntk.spectrum import select_diag_reg
    >>> x = np.linspace(-1, 1, 20)[:, None]; k = np.exp(-(x - x.T) ** 2); y = np.sin(3 * x)
    >>> sel = select_diag_reg(k, y, np.logspace(-6, 1, 8))
    >>> bool(sel.gcv.min() < 1.0)
    True
    """
    if criterion not in ("gcv", "loo"):
        raise ValueError(f"unknown criterion {criterion!r}; supported: 'gcv', 'loo'")
    smoother = _Smoother(k_train_train, y_train, diag_regs, diag_reg_absolute_scale, fx_train_0)
    grid, r = smoother.grid, smoother.r
    if not r.any():  # y = fx_train_0: every diag_reg fits exactly
        zeros = np.zeros_like(grid)
        return DiagRegSelection(float(grid[0]), grid, zeros, zeros.copy())
    mean_square = np.mean(r**2)
    gcv = smoother.gcv() / mean_square
    s_diag = (smoother.basis.dense() ** 2 @ smoother.s.T).T  # (G, N): diag(S)
    resid = in_eigenbasis(smoother.basis, smoother.s, smoother.z)  # (G, N, M)
    loo = ((resid / s_diag[:, :, None]) ** 2).mean(axis=(1, 2)) / mean_square
    best = int(np.argmin(gcv if criterion == "gcv" else loo))
    return DiagRegSelection(float(grid[best]), grid, gcv, loo)


def gcv_risk(k_train_train, y_train, diag_regs, diag_reg_absolute_scale=False, *, fx_train_0=0.0):
    """GCV's estimate of the test mean squared error of kernel ridge regression, per ridge, in units of y².

    The estimate uses the training data only: for the predictor ``fx_train_0 + K_x,train (K + λI)⁻¹ R``
    it estimates ``E (f(x) − y)²`` on a new point drawn as the training points were, averaged over
    the M outputs (the mean squared error of :func:`fastntk.predict.kernel_ridge`'s ``fx_test``).

    Parameters
    ----------
    k_train_train : ndarray of shape (N, N), float32 or float64
        Symmetric; with a relative grid its trace must be > 0.
    y_train : ndarray of shape (N,) or (N, O...)
        M = y_train.size / N outputs.
    diag_regs : array of G >= 1 values > 0
        The ridges λ; relative (× trace(K)/N) unless ``diag_reg_absolute_scale``.
    fx_train_0 : scalar or array broadcastable to y_train, keyword-only
        Regress the residuals ``R = y − fx_train_0`` (the test predictions start from the same
        ``fx_test_0``, e.g. the training mean).

    Returns
    -------
    risk : ndarray of shape (G,), float64
        GCV(λ) for each ridge, in the units of y_train squared (inf where it exceeds the float64
        range, |y| ≳ 1e154). It is :func:`select_diag_reg`'s ``gcv`` curve times the mean square
        residual ‖R‖²/(N·M); 0 for every λ when y_train = fx_train_0.

    Raises
    ------
    ValueError
        ``k_train_train`` has trace ≤ 0 with a relative grid (every diag_reg would be ≤ 0), or the
        arguments have the wrong shapes or values (as :func:`select_diag_reg`).
    TypeError
        An array is not float32/float64 (integer, complex, object), or is None.

    Notes
    -----
    With ``S = λ(K + λI)⁻¹`` (the train residual map), GCV(λ) = ‖S R‖²/(N·M) / (tr S / N)²:
    the training error inflated by the effective degrees of freedom (Craven & Wahba 1979), a
    consistent estimator of the test risk in high-dimensional (random-matrix) limits and an
    estimate, not an identity, at finite N (Wei, Hu & Steinhardt 2022, arXiv:2203.06176, whose
    Figure 4 compares it with the test risk across N and λ). One eigendecomposition of K serves
    the whole grid; R is rescaled by an exact power of 2 first, so no square over- or underflows.

    Examples
    --------
    >>> import numpy as np
    >>> from fastntk.spectrum import gcv_risk
    >>> x = np.linspace(-1, 1, 20)[:, None]; k = np.exp(-(x - x.T) ** 2); y = np.sin(3 * x)
    >>> risk = gcv_risk(k, y, [1e-3, 1e3])
    >>> bool(risk[0] < risk[1] < np.mean(y**2))
    True
    """
    smoother = _Smoother(k_train_train, y_train, diag_regs, diag_reg_absolute_scale, fx_train_0)
    with np.errstate(over="ignore"):  # a risk beyond the float64 range is inf
        return np.ldexp(smoother.gcv(), 2 * smoother.exponent)


class _Smoother:
    """The train residual map S = λ(K + λI)⁻¹ of every ridge on a grid, in K's eigenbasis, and the
    residuals R = y − fx_train_0, validated once for :func:`select_diag_reg` and :func:`gcv_risk`.

    ``grid`` (G,) as given; ``r`` (N, M) = R·2^-exponent with max|r| in [0.5, 1) (an exact rescaling:
    no square over- or underflows); ``s`` (G, N) the eigenvalues of S; ``basis`` K's eigenvectors V
    (factored); ``z`` = Vᵀr (N, M).
    """

    def __init__(self, k_train_train, y_train, diag_regs, diag_reg_absolute_scale, fx_train_0):
        k = check_kernel(k_train_train, "k_train_train", symmetric=True)
        self.grid = _grid(diag_regs)
        y, tail, _ = check_outputs(y_train, k.shape[0])
        r = y - check_initial(fx_train_0, "fx_train_0", (k.shape[0], *tail)).reshape(y.shape)
        trace = float(np.trace(k, dtype=np.float64))
        if not diag_reg_absolute_scale and not trace > 0:
            raise ValueError(f"k_train_train has trace {trace:.3g}: diag_regs relative to trace(K)/N would be <= 0; "
                             "pass diag_reg_absolute_scale=True with absolute values")
        top = np.abs(r).max()
        self.exponent = int(np.frexp(top)[1]) if top > 0 else 0
        self.r = np.ldexp(r, -self.exponent)
        lam, self.basis = KernelFactor(k, 0.0, True, "k_train_train").eig()
        reg = self.grid if diag_reg_absolute_scale else self.grid * trace / k.shape[0]
        self.s = reg[:, None] / (lam[None, :] + reg[:, None])
        self.z = self.basis.apply_t(self.r)

    def gcv(self):
        """GCV(λ) = ‖S r‖²/(N·M) / (tr S / N)² for each λ of the grid: (G,), in units of r²."""
        n = self.s.shape[1]
        return (self.s**2 @ (self.z**2).sum(1)) / self.r.size / (self.s.sum(1) / n) ** 2


def _grid(diag_regs):
    """diag_regs as a non-empty 1-D float64 grid of finite values > 0."""
    try:
        grid = np.atleast_1d(np.asarray(diag_regs, dtype=np.float64))
    except (TypeError, ValueError):
        grid = None
    if grid is None or isinstance(diag_regs, (str, bytes)) or grid.ndim != 1 or grid.size == 0 or not np.all(
            np.isfinite(grid) & (grid > 0)):
        raise ValueError(f"diag_regs must be a non-empty 1-D grid of finite values > 0; got {diag_regs!r}")
    return grid


def kernel_spectrum(k_train_train, diag_reg=0.0, diag_reg_absolute_scale=False):
    """Eigenvalues of K_reg, λ_min, λ_max, condition number and effective rank.

    Eigenvalues ≤ N·eps·λ_max (negative ones included) count as 0: the condition number is then
    inf. Effective rank: exp of the entropy of λ/Σλ (Roy & Vetterli 2007), between 1 and N (0 for
    a zero kernel).

    Parameters
    ----------
    k_train_train : ndarray of shape (N, N), float32 or float64, symmetric
    diag_reg : float >= 0
        Relative (× trace(K)/N) unless ``diag_reg_absolute_scale``.

    Returns
    -------
    Spectrum
        ``eigenvalues`` ndarray of shape (N,), float64, descending.
    """
    k = check_kernel(k_train_train, "k_train_train", symmetric=True)
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    fac = KernelFactor(k, diag_reg, diag_reg_absolute_scale, "k_train_train")
    lam = sl.eigvalsh(fac.regularized(), overwrite_a=True, check_finite=False)[::-1]
    lam = np.where(lam > k.shape[0] * fac.eps * max(lam[0], 0.0), lam, 0.0)
    p = lam / lam.sum() if lam[0] > 0 else lam
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    cond = lam[0] / lam[-1] if lam[-1] > 0 else np.inf
    return Spectrum(lam, float(lam[-1]), float(lam[0]), float(cond), float(np.exp(entropy)) if lam[0] > 0 else 0.0)


def convergence_times(k_train_train, y_train_size, tol=1e-3, learning_rate=1.0, diag_reg=0.0,
                      diag_reg_absolute_scale=False):
    """Per eigendirection, the gradient-flow time for the train residual to shrink by ``tol``.

    ``t_i = n·ln(1/tol) / (learning_rate·λ_i)`` in units of ``learning_rate`` (``n = y_train_size``,
    an int >= 1; ``tol`` in (0, 1)), inf where λ_i is numerically zero; shape (N,), aligned with
    :func:`kernel_spectrum`'s descending eigenvalues.
    """
    y_train_size = check_integer(y_train_size, "y_train_size")
    tol = check_positive(tol, "tol")
    if tol >= 1:
        raise ValueError(f"tol must be in (0, 1); got {tol}")
    learning_rate = check_positive(learning_rate, "learning_rate")
    lam = kernel_spectrum(k_train_train, diag_reg, diag_reg_absolute_scale).eigenvalues
    rate = learning_rate * lam / y_train_size
    return np.divide(np.log(1 / tol), rate, out=np.full_like(rate, np.inf), where=rate > 0)


def loss_bound(k_train_train, t, loss_0, y_train_size, learning_rate=1.0, diag_reg=0.0, diag_reg_absolute_scale=False):
    """Upper bound ``L(τ) ≤ exp(−2 λ_min τ/n) L(0)`` on the gradient-flow train loss 1/(2n)‖f − y‖².

    ``τ = learning_rate·t`` (``t`` >= 0, scalar or array); ``loss_0`` >= 0; ``n = y_train_size``, an
    int >= 1. Returns an array of the shape of ``t``. Tight when the initial residual lies along
    the bottom eigenvector.
    """
    loss_0 = check_positive(loss_0, "loss_0", allow_zero=True)
    y_train_size = check_integer(y_train_size, "y_train_size")
    tau = check_positive(learning_rate, "learning_rate") * check_times(t)
    lam_min = kernel_spectrum(k_train_train, diag_reg, diag_reg_absolute_scale).lambda_min
    return loss_0 * np.exp(-2 * lam_min * tau / y_train_size)


def kernel_alignment(k_train_train, y_train, centered=False):
    """Kernel–target alignment ⟨K, YYᵀ⟩_F / (‖K‖_F ‖YYᵀ‖_F) in [−1, 1].

    Cristianini et al. 2002; ``centered=True`` centres K and Y first (Cortes, Mohri &
    Rostamizadeh 2012, arXiv:1203.0550). ``k_train_train`` (N, N); ``y_train`` (N,) or (N, O...).
    """
    k = check_kernel(k_train_train, "k_train_train")
    y, _, _ = check_outputs(y_train, k.shape[0])
    n = k.shape[0]
    check_memory(8 * (3 if centered else 1) * n * n, f"kernel_alignment of a {n}×{n} kernel (float64 copies)",
                 FACTOR_ALTERNATIVES)
    k = k.astype(np.float64)
    k *= _power_of_2_below(np.abs(k).max())  # exact rescaling of K and Y: the alignment is scale-free,
    y = y * _power_of_2_below(np.abs(y).max())  # and ‖YᵀY‖ of y ~ 1e200 would overflow
    if centered:
        k = k - k.mean(0) - k.mean(1)[:, None] + k.mean()
        y = y - y.mean(0)
    num = np.sum(y * (k @ y))
    den = np.linalg.norm(k) * np.linalg.norm(y.T @ y)
    if den == 0:
        raise ValueError("kernel alignment is undefined for a zero kernel or zero targets")
    return float(num / den)


def _power_of_2_below(top):
    """2^-e with top·2^-e in [0.5, 1) (1 for top = 0): multiplying by it is exact."""
    return 1.0 if top == 0 else np.ldexp(1.0, -int(np.frexp(top)[1]))
