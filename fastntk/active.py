"""Look-ahead active learning in the kernel-regression (linearised network) view.

A look-ahead criterion scores an unlabelled candidate x⁺ by what the model would become if it were
retrained on ``S⁺ = S ∪ {(x⁺, y⁺)}``. Retraining a network per candidate is infeasible; with the
neural tangent kernel the retrained (linearised) network is kernel regression on S⁺, and adding one
point to kernel regression is a rank-one (Schur-complement) update of ``(K_SS + λI)⁻¹``, so every
candidate is scored from one factorization (Mohamadi, Bae & Sutherland 2022, arXiv:2206.12569).
The kernels are plain arrays: an infinite NTK from ``stax`` ``kernel_fn`` or an empirical NTK
(:func:`fastntk.empirical_ntk_fn`) at the current weights.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sl

from ._validation import check_array, check_initial, check_kernel, check_memory, check_positive
from .solvers._factor import cholesky

__all__ = ["lookahead_scores"]

_ORDS = (1, 2, np.inf)


def lookahead_scores(k_labeled_labeled, k_pool_labeled, k_pool_pool, y_labeled, targets, diag_reg=0.0,
                     diag_reg_absolute_scale=False, *, fx_labeled_0=0.0, fx_pool_0=0.0, label="predicted", ord=2):
    """Model-output-change look-ahead scores of every pool candidate, from one Cholesky factorization.

    Parameters
    ----------
    k_labeled_labeled : ndarray of shape (n, n), float32 or float64
        K(S, S) on the labelled points; symmetric.
    k_pool_labeled : ndarray of shape (m, n)
        K(U, S): the pool (unlabelled candidates) against the labelled points.
    k_pool_pool : ndarray of shape (m, m)
        K(U, U); symmetric. The pool is both the candidates x⁺ and the points where the change is summed.
    y_labeled : ndarray of shape (n,) or (n, O)
        Targets of the labelled points (e.g. one-hot rows for O classes).
    targets : ndarray of shape (C, O), or (C,) when y_labeled is 1-D
        The possible labels y⁺ of a candidate, in the coding of ``y_labeled`` (e.g. ``np.eye(O)``).
    diag_reg : float >= 0
        The ridge λ; relative (× trace(K_SS)/n) unless ``diag_reg_absolute_scale``. A relative λ is
        computed once from ``k_labeled_labeled`` and held fixed in the one-point update, so the scores
        are those of kernel ridge regression with the absolute ridge λ on both S and S⁺.
    fx_labeled_0, fx_pool_0 : scalar or array broadcastable to (n, O) / (m, O), keyword-only
        Initial outputs f_0 (0 for the infinite-width ensemble mean; the network's outputs at the
        weights an empirical NTK was computed at): the model is ``f = f_0 + K_·S (K_SS + λI)⁻¹ (y − f_0)``.
    label : {'predicted', 'all'}, keyword-only
        'predicted' (most likely model output change): y⁺ is the row of ``targets`` nearest to the
        current prediction f(x⁺) in Euclidean distance (for one-hot targets, the predicted class);
        'all': one score per row of ``targets``.
    ord : {1, 2, inf}, keyword-only
        The norm ‖·‖ of an output change (over the O outputs).

    Returns
    -------
    scores : ndarray of shape (m,) ('predicted') or (m, C) ('all'), float64
        Σ_{x ∈ U} ‖f⁺(x) − f(x)‖: the summed change of the pool predictions if candidate i were added
        with label y⁺, in the units of ``y_labeled``. Acquire the argmax.

    Raises
    ------
    ValueError
        A kernel of the wrong shape, not symmetric, or holding NaN/inf; ``y_labeled`` or ``targets`` of
        the wrong shape or not finite; ``diag_reg`` < 0; ``K_SS + λI`` not numerically positive definite
        (a Cholesky pivot² ≤ n·eps·max pivot²: raise ``diag_reg``); an unknown ``label`` or ``ord``.
    MemoryError
        The three m×m float64 arrays of the update do not fit in the available memory.

    Notes
    -----
    With A = (K_SS + λI)⁻¹, the current prediction is f(x) = f_0(x) + K_xS A (y_S − f_0(S)). Adding
    (c, y⁺) to S, the block inverse of [[K_SS + λI, K_Sc], [K_cS, K_cc + λ]] with the Schur complement
    s_c = K_cc + λ − K_cS A K_Sc gives

        f⁺(x) − f(x) = K̃(x, c) (y⁺ − f(c)) / s_c,    K̃ = K_UU − K_US A K_SU

    (K̃ is the posterior covariance of the GP with noise λ, and s_c = K̃(c, c) + λ). The change is a
    scalar times one vector, so ‖f⁺(x) − f(x)‖ = |K̃(x, c)| ‖y⁺ − f(c)‖ / s_c, and

        score(c, y⁺) = (Σ_{x ∈ U} |K̃(x, c)|) ‖y⁺ − f(c)‖ / s_c

    for every candidate at once: one Cholesky of K_SS + λI (n³/3 flops) and K̃ (n²m + nm² flops, three
    m×m float64 arrays at most), no refit per candidate. This is the criterion
    Σ_{x ∈ U} ‖f_lin(x; w⁺) − f(x; w)‖ of Mohamadi et al. (2022), the linearised network f_lin at w⁺
    being kernel regression on S⁺; the 'predicted' label makes it the most likely model output change
    of Käding et al. (2016). A candidate with s_c ≤ 0 (λ = 0 and a copy of a labelled point, to
    rounding) would change nothing and scores 0. With an empirical NTK, pass the (N, N) kernel averaged
    over the outputs (:func:`fastntk.empirical_ntk_fn`'s default ``trace_axes=(-1,)``, the model K ⊗ I_O)
    and the network's outputs at those weights as f_0.

    References
    ----------
    Mohamadi, Bae & Sutherland 2022, "Making Look-Ahead Active Learning Strategies Feasible with Neural
    Tangent Kernels", arXiv:2206.12569. Käding, Rodner, Freytag, Mothes, Barz & Denzler 2016, "Active
    learning for regression tasks with expected model output changes", arXiv:1611.07249.

    Examples
    --------
    >>> import numpy as np
    >>> from fastntk import stax
    >>> from fastntk.active import lookahead_scores
    >>> x = np.random.default_rng(0).standard_normal((12, 3))
    >>> k = stax.serial(stax.Dense(1), stax.Relu(), stax.Dense(1)).kernel_fn(x, None, "ntk")
    >>> labeled, pool = np.arange(4), np.arange(4, 12)
    >>> y = np.eye(2)[[0, 1, 0, 1]]
    >>> s = lookahead_scores(k[np.ix_(labeled, labeled)], k[np.ix_(pool, labeled)], k[np.ix_(pool, pool)],
    ...                      y, np.eye(2), 1e-3)
    >>> s.shape, bool((s >= 0).all())
    ((8,), True)
    """
    k_ss, k_us, k_uu, t, r_s, f0_u, lam = _check(k_labeled_labeled, k_pool_labeled, k_pool_pool, y_labeled,
                                                 targets, diag_reg, diag_reg_absolute_scale, fx_labeled_0,
                                                 fx_pool_0, label, ord)
    m = k_us.shape[0]
    check_memory(3 * 8 * m * m, f"look-ahead scores of {m} pool points (3 × {m}×{m} float64)",
                 "score a random subset of the pool (pass its rows and columns of the kernels)")
    k_reg = np.array(k_ss, dtype=np.float64, order="F")
    n = k_reg.shape[0]
    k_reg.flat[:: n + 1] += lam
    try:
        chol = cholesky(k_reg, overwrite_a=True)  # U with UᵀU = K_SS + λI: L = Uᵀ
        pivots = np.diag(chol) ** 2
        singular = pivots.min() <= n * np.finfo(np.float64).eps * pivots.max()  # as KernelFactor
    except np.linalg.LinAlgError:
        singular = True
    if singular:
        raise ValueError(f"k_labeled_labeled + diag_reg·I is not numerically positive definite (absolute ridge "
                         f"λ = {lam:.3g}; a repeated labelled point?); pass a larger diag_reg")
    v = sl.solve_triangular(chol, k_us.T, trans="T", check_finite=False)  # L⁻¹ K_SU = U⁻ᵀ K_SU, (n, m)
    f_u = f0_u + v.T @ sl.solve_triangular(chol, r_s, trans="T", check_finite=False)  # f(U) = f_0 + K_US A r_S
    k_post = np.array(k_uu, dtype=np.float64)
    k_post -= v.T @ v  # K̃ = K_UU − K_US A K_SU
    schur = np.diag(k_post) + lam  # s_c = K̃(c, c) + λ
    spread = np.abs(k_post, out=k_post).sum(axis=0)  # Σ_x |K̃(x, c)|
    weight = np.divide(spread, schur, out=np.zeros_like(spread), where=schur > 0)
    residual = t[None, :, :] - f_u[:, None, :]  # y⁺ − f(c), (m, C, O)
    distance = np.linalg.norm(residual, axis=2)  # Euclidean: the 'predicted' label's nearest target
    scores = weight[:, None] * (distance if ord == 2 else np.linalg.norm(residual, ord=ord, axis=2))
    if label == "predicted":
        return scores[np.arange(m), distance.argmin(axis=1)]
    return scores


def _check(k_ss, k_us, k_uu, y_labeled, targets, diag_reg, absolute, fx_labeled_0, fx_pool_0, label, ord):
    """The validated inputs of :func:`lookahead_scores` (K_US, targets, r_S = y − f_0(S) and f_0(U) in float64;
    K_SS and K_UU as given, copied to float64 by the caller) and the absolute λ."""
    if label not in ("predicted", "all"):
        raise ValueError(f"unknown label {label!r}; supported: 'predicted', 'all'")
    if ord not in _ORDS:
        raise ValueError(f"unknown ord {ord!r}; supported: 1, 2, numpy.inf")
    diag_reg = check_positive(diag_reg, "diag_reg", allow_zero=True)
    k_ss = check_kernel(k_ss, "k_labeled_labeled", symmetric=True)
    n = k_ss.shape[0]
    k_us = check_kernel(k_us, "k_pool_labeled", (None, n)).astype(np.float64, copy=False)
    m = k_us.shape[0]
    k_uu = check_kernel(k_uu, "k_pool_pool", (m, m), symmetric=True)
    y = check_array(y_labeled, "y_labeled", ndim=max(np.ndim(y_labeled), 1)).astype(np.float64, copy=False)
    if y.ndim > 2 or y.shape[0] != n:
        raise ValueError(f"y_labeled must be of shape ({n},) or ({n}, O) to match k_labeled_labeled; "
                         f"got shape {y.shape}")
    one_output = y.ndim == 1
    y = y.reshape(n, -1)
    t = check_array(targets, "targets", ndim=1 if one_output else 2).astype(np.float64, copy=False)
    if not one_output and t.shape[1] != y.shape[1]:
        raise ValueError(f"targets must be of shape (C, {y.shape[1]}) (the outputs of y_labeled); got shape {t.shape}")
    t = t.reshape(-1, y.shape[1])
    tail = () if one_output else (y.shape[1],)
    r_s = y - check_initial(fx_labeled_0, "fx_labeled_0", (n, *tail)).reshape(n, -1)
    f0_u = check_initial(fx_pool_0, "fx_pool_0", (m, *tail)).reshape(m, -1)
    lam = diag_reg if absolute else diag_reg * float(np.trace(k_ss, dtype=np.float64)) / n
    return k_ss, k_us, k_uu, t, r_s, f0_u, lam
