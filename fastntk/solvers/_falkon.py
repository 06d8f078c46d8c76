"""Falkon: Nyström kernel ridge regression on M centres, never forming the N×N kernel.

Rudi, Carratino & Rosasco 2017, "FALKON: An optimal large scale kernel method" (arXiv:1705.10958);
Meanti, Carratino, Rosasco & Rudi 2020, "Kernel methods through the roof" (arXiv:2006.10350).

The objective (fastntk's scaling, which makes M = N exact kernel ridge regression)::

    β = argmin ‖y − K_NM β‖² + λ βᵀ K_MM β,   i.e.   (K_NMᵀ K_NM + λ K_MM) β = K_NMᵀ y,

with λ the absolute ridge of :func:`fastntk.predict.kernel_ridge` (``diag_reg`` × trace(K)/N unless
absolute). With every training point a centre, K_NM = K_MM = K and the normal equations read
K (K + λI) β = K y: β = (K + λI)⁻¹ y, the dual coefficients of exact kernel ridge regression. The
paper's objective (1/n)‖y − K_nM β‖² + λ_F βᵀ K_MM β is the same with λ_F = λ/n (n training points).

Preconditioner (paper, Sec. 3): T = chol(K_MM) (TᵀT = K_MM, upper) and A = chol(T Tᵀ/M + (λ/n) I);
B = T⁻¹ A⁻¹ / √n. For uniformly drawn centres K_NMᵀ K_NM ≈ (n/M) K_MM², so Bᵀ (K_NMᵀ K_NM + λ K_MM) B
≈ I, and conjugate gradients run on that M-dimensional system: W γ = Bᵀ K_NMᵀ y, β = B γ, where
W = Bᵀ K_NMᵀ K_NM B + (λ/n) A⁻ᵀ A⁻¹ (λ TᵀT taken for λ K_MM: exact, unless K_MM needed a jitter j,
and then the penalty is λ βᵀ (K_MM + jI) β, which the warning reports). With M = N the
preconditioner is exact: one iteration.

K_NM enters only through products, block by block (:class:`NystromProducts`): stored once in
float32 as far as it fits a memory budget, the rest recomputed from the kernel at every iteration.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import warnings

import numpy as np
import scipy.linalg as sl
from tqdm.auto import tqdm

from .. import _tiles
from .._blas import one_blas_thread
from .._types import FalkonResult
from .._validation import (
    available_memory,
    check_initial,
    check_integer,
    check_kernel_or_operator,
    check_outputs,
    check_positive,
    check_seed,
    check_times,
)
from ._factor import cholesky, flow_factors
from ._krylov import cg

__all__ = ["NystromProducts", "budget_bytes", "cholesky_jitter", "falkon",
           "gradient_descent_mse_nystrom", "select_centers"]

#: Cap of the default memory budget for a stored K_NM (bytes).
MAX_BUDGET = 4 * 2**30


def budget_bytes(budget=None):
    """Bytes a stored K_NM may take: ``budget`` (an int >= 0) if given, else min(available / 4, 4 GiB)."""
    if budget is not None:
        return check_integer(budget, "memory_budget", minimum=0)
    avail = available_memory()
    return MAX_BUDGET if avail is None else min(avail // 4, MAX_BUDGET)


class NystromProducts:
    """Products with K_NM = ``op.block(rows, centers)`` of a kernel operator, by row blocks.

    Parameters
    ----------
    op : KernelOperator
        Its ``block(rows, cols)`` computes the blocks.
    rows : None (every row of ``op``) or ndarray of int, shape (N,)
    centers : ndarray of int, shape (M,)
        Columns of ``op`` (for a symmetric operator: the centres among the training points).
    memory_budget : int >= 0 or None
        Bytes the stored part of K_NM may take (:func:`budget_bytes`; None: the default). The
        leading row blocks that fit are computed once, now, and stored; the others are recomputed
        in every product (all of K_NM is stored when N·M·itemsize fits).
    store_dtype : np.float32 or np.float64
        Of the stored K_NM (float32 halves its memory; entries then carry float32 rounding).
    progress : bool
        A tqdm bar over the rows while K_NM is stored.

    Every product is computed in float64, one block of ``op.block_size`` rows (None: about 32 MiB,
    ``_tiles.BLOCK_BYTES``) at a time: ``matmat(v)`` = K_NM v, ``rmatmat(w)`` = K_NMᵀ w,
    ``normal(v)`` = K_NMᵀ K_NM v (one pass over the blocks), ``gram()`` = K_NMᵀ K_NM. A product
    computes the kernel entries of the rows not stored, O(N·M) when none is, and only reads the
    stored ones. The products of a few vectors with computed blocks run with BLAS on one thread
    (``_blas.one_blas_thread``): a threaded product would leave BLAS threads spinning on the cores
    the next block's pass needs.
    """

    def __init__(self, op, rows, centers, memory_budget=None, store_dtype=np.float32, progress=False):
        self.op, self.rows, self.centers = op, rows, centers
        n = op.shape[0] if rows is None else len(rows)
        self.shape = (n, len(centers))
        per_row = getattr(op, "block_size", None) or _tiles.rows_per_block(8 * len(centers), lo=16)
        self._blocks = _tiles.row_blocks(n, per_row, False)
        fit = budget_bytes(memory_budget) // max(1, len(centers) * np.dtype(store_dtype).itemsize)
        self._n_stored = max([i1 for _, i1, _ in self._blocks if i1 <= fit], default=0)  # whole blocks
        self.stored = np.empty((self._n_stored, len(centers)), dtype=store_dtype)
        with tqdm(total=self._n_stored, desc="K_NM rows stored", unit="row", disable=not progress) as bar:
            for i0, i1, _ in self._blocks:
                if i1 <= self._n_stored:
                    self.stored[i0:i1] = self._compute(i0, i1)
                    bar.update(i1 - i0)

    @property
    def nbytes(self):
        """Bytes of the stored rows of K_NM."""
        return self.stored.nbytes

    def _compute(self, i0, i1):
        rows = slice(i0, i1) if self.rows is None else self.rows[i0:i1]
        return np.asarray(self.op.block(rows, self.centers), dtype=np.float64)

    def blocks(self, one_thread=False):
        """(i0, i1, K_NM[i0:i1] as float64) for each row block: read if stored, else computed.

        one_thread: BLAS on one thread while the caller holds a computed block (its products with a
        few vectors then leave no BLAS threads spinning beside the next block's pass); the stored
        blocks' products keep BLAS's threads.
        """
        for i0, i1, _ in self._blocks:
            if i1 <= self._n_stored:
                yield i0, i1, self.stored[i0:i1].astype(np.float64)
            else:
                with one_blas_thread() if one_thread else contextlib.nullcontext():
                    yield i0, i1, self._compute(i0, i1)

    def matmat(self, v):
        """K_NM v for v (M, P): (N, P)."""
        out = np.empty((self.shape[0], v.shape[1]))
        for i0, i1, k in self.blocks(one_thread=True):
            out[i0:i1] = k @ v
        return out

    def rmatmat(self, w):
        """K_NMᵀ w for w (N, P): (M, P)."""
        out = np.zeros((self.shape[1], w.shape[1]))
        for i0, i1, k in self.blocks(one_thread=True):
            out += k.T @ w[i0:i1]
        return out

    def normal(self, v):
        """K_NMᵀ K_NM v for v (M, P): (M, P), one pass over the blocks."""
        out = np.zeros((self.shape[1], v.shape[1]))
        for _, _, k in self.blocks(one_thread=True):
            out += k.T @ (k @ v)
        return out

    def gram(self):
        """K_NMᵀ K_NM: (M, M), one pass over the blocks (2·N·M² flops)."""
        out = np.zeros((self.shape[1], self.shape[1]))
        for _, _, k in self.blocks():
            out += k.T @ k
        return (out + out.T) / 2


def cholesky_jitter(a, name):
    """(T upper with TᵀT = a + jI, j) for a symmetric PSD (M, M) float64 array (its upper triangle is read).

    j = 0 when the Cholesky succeeds; otherwise j = 10ᵏ·M·eps·mean(diag a), k = 0, 1, … up to
    the first success, with a RuntimeWarning naming ``name`` and j (Falkon's own rule starts at
    M·eps). LinAlgError if even j = 10⁸·M·eps·mean(diag a) fails (a not PSD).
    """
    m = a.shape[0]
    scale = max(float(np.mean(np.diag(a))), np.finfo(np.float64).tiny)
    jitter = 0.0
    for k in range(-1, 9):
        if k >= 0:
            jitter = 10.0**k * m * np.finfo(np.float64).eps * scale
        try:
            t = cholesky(a + jitter * np.eye(m) if jitter else a)
        except np.linalg.LinAlgError:
            continue
        if jitter:
            warnings.warn(f"{name} is numerically singular: Cholesky needed a jitter of {jitter:.3g} "
                          f"({jitter / scale:.3g} × its mean diagonal) added to the diagonal", RuntimeWarning,
                          stacklevel=3)
        return t, jitter
    raise np.linalg.LinAlgError(f"{name} is not positive semi-definite: Cholesky failed even with a jitter of "
                                f"{jitter:.3g} on the diagonal")


def select_centers(op, rows, n_centers, sampling, reg, rng):
    """M centres (ascending indices into ``op``'s points) among ``rows`` (None: all), without replacement.

    ``sampling='uniform'``: uniformly. ``'leverage'``: with probabilities ∝ approximate ridge
    leverage scores ℓᵢ(λ) = [K (K + λI)⁻¹]ᵢᵢ (λ = ``reg`` > 0), estimated from a uniform sketch J of
    R = M points (Alaoui & Mahoney 2015, arXiv:1411.0306; Rudi et al. 2018, arXiv:1810.13258, eq. 5):
    ℓ̃ᵢ = (Kᵢᵢ − K_iJ (K_JJ + (λR/n) I)⁻¹ K_Ji) / λ, one pass of (n, R) kernel blocks; then M points
    drawn without replacement with weights ℓ̃ (Efraimidis & Spirakis 2006: the M least Eᵢ/ℓ̃ᵢ, Eᵢ
    standard exponential). A point equal to a centre already drawn is skipped (its kernel column is
    that centre's: it would add nothing but a singular K_MM); with fewer than ``n_centers`` distinct
    points, all of them are centres (RuntimeWarning).
    """
    pool = np.arange(op.shape[0]) if rows is None else np.asarray(rows)
    n = len(pool)
    order = pool[rng.permutation(n)]
    if sampling == "leverage":
        sketch = np.sort(_first_distinct(op.x1, order, n_centers))
        k_jj = np.asarray(op.block(sketch, sketch), dtype=np.float64)
        chol, _ = cholesky_jitter((k_jj + k_jj.T) / 2 + (reg * len(sketch) / n) * np.eye(len(sketch)),
                                  "K_JJ + λR/n·I (the leverage-score sketch)")
        diag = np.asarray(op.diagonal(), dtype=np.float64)[pool]
        scores = np.empty(n)
        for i0, i1, k in NystromProducts(op, rows, sketch, memory_budget=0).blocks():
            half = sl.solve_triangular(chol, k.T, trans="T", lower=False, check_finite=False)  # T⁻ᵀ K_Ji
            scores[i0:i1] = (diag[i0:i1] - np.einsum("ji,ji->i", half, half)) / reg
        scores = np.maximum(scores, np.finfo(np.float64).eps * max(scores.max(), np.finfo(np.float64).tiny))
        order = pool[np.argsort(rng.standard_exponential(n) / scores, kind="stable")]
    centers = _first_distinct(op.x1, order, n_centers)
    if len(centers) < n_centers:
        warnings.warn(f"n_centers={n_centers} exceeds the {len(centers)} distinct training points; using "
                      f"n_centers={len(centers)}", RuntimeWarning, stacklevel=3)
    return np.sort(centers)


def _first_distinct(x, order, m):
    """The first m indices of ``order`` whose rows of x differ (all of them if fewer differ), int64.

    Rows are read in chunks of candidates (one fancy index each: cheap on a memmap or a dask array).
    """
    seen, out, pos = set(), [], 0
    while len(out) < m and pos < len(order):
        chunk = order[pos:pos + 2 * (m - len(out)) + 16]
        pos += len(chunk)
        for i, row in zip(chunk, np.asarray(x[chunk], dtype=np.float64) + 0.0):  # + 0.0: −0.0 is 0.0
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                out.append(i)
                if len(out) == m:
                    break
    return np.array(out, dtype=np.int64)


def _split(n, validation, rng):
    """(train rows or None, validation rows or None) for ``validation`` None, a fraction or a count."""
    if validation is None:
        return None, None
    if isinstance(validation, numbers.Integral) and not isinstance(validation, bool):
        n_val = check_integer(validation, "validation", maximum=n - 1)
    else:
        frac = check_positive(validation, "validation")
        if frac >= 1:
            raise ValueError(f"validation must be a fraction in (0, 1) or a count of rows in [1, {n - 1}]; "
                             f"got {validation}")
        n_val = max(1, round(frac * n))
        if n_val >= n:
            raise ValueError(f"validation={validation} leaves no training rows of {n}")
    val = np.sort(rng.choice(n, n_val, replace=False))
    return np.setdiff1d(np.arange(n), val, assume_unique=True), val


def falkon(k_train_train, y_train, diag_reg=0.0, diag_reg_absolute_scale=False, n_centers=1000, *,
           sampling="uniform", seed=0, tol=1e-10, maxiter=100, validation=None, patience=5, memory_budget=None,
           store_dtype=np.float32, products=None, progress=False):
    """Nyström kernel ridge regression on M centres by Falkon's preconditioned conjugate gradients.

    Parameters
    ----------
    k_train_train : KernelOperator
        Symmetric (x2 None): K of the N training points, used through its ``block(rows, centers)``
        and ``diagonal()`` only (no N×N array).
    y_train : ndarray of shape (N,) or (N, O)
        Targets; every output is solved at once.
    diag_reg : float >= 0
        λ of the objective (module docstring): relative (× trace(K)/N, trace from
        ``k_train_train.diagonal()``) unless ``diag_reg_absolute_scale``, as
        :func:`fastntk.predict.kernel_ridge`.
    n_centers : int >= 1
        M; more than the distinct training points is clipped (RuntimeWarning). Memory O(M²) for T
        and A, O(N·M) when K_NM is stored.
    sampling : {'uniform', 'leverage'}, keyword-only
        How the centres are drawn, without replacement (:func:`select_centers`); 'leverage' needs λ > 0.
    seed : int or numpy.random.Generator, keyword-only
        For the centres and the validation split.
    tol : float > 0, keyword-only
        Relative residual of the preconditioned system at which every output has converged.
    maxiter : int >= 1, keyword-only
        Iteration cap; reaching it above ``tol`` warns (RuntimeWarning, with the residual) and the
        best iterate is returned.
    validation : None, float in (0, 1) or int, keyword-only
        Rows held out (a fraction or a count of the N, drawn with ``seed``): the fit uses the others,
        the validation MSE of every iterate is recorded, the iterate with the least one is returned, and
        CG stops when it has not improved for ``patience`` iterations (early stopping).
    memory_budget : int >= 0 or None, keyword-only
        Bytes the stored K_NM (and the validation rows' K_VM) may take; None: min(available/4, 4 GiB).
    store_dtype : np.float32 or np.float64, keyword-only
        Of the stored K_NM.
    products : callable or None, keyword-only
        ``products(k_train_train, rows, centers)`` → an object with ``normal(v)`` = K_NMᵀ K_NM v,
        ``rmatmat(w)`` = K_NMᵀ w and ``matmat(v)`` = K_NM v for the rows ``rows`` (None: all, or an
        int index array) of ``k_train_train`` against the centres (e.g. products computed as Dask
        tasks). None: :class:`NystromProducts` with ``memory_budget`` and ``store_dtype``. Its
        products are all that touches K_NM during the iterations.
    progress : bool, keyword-only
        tqdm bars over the stored rows and the iterations.

    Returns
    -------
    FalkonResult

    Notes
    -----
    Per iteration: one ``normal`` (one pass over the N×M blocks: 4·N·M·O flops, plus their kernel
    evaluation when not stored) and four M×M triangular solves. Set-up: the M×M kernel, two M×M
    Cholesky factorizations (M³/3 flops each), one ``rmatmat``; at the end one ``matmat`` for the
    fitted values.

    Examples
    --------
    >>> import numpy as np
    >>> from fastntk import solvers, stax
    >>> kernel_fn = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(1))[2]
    >>> x = np.random.default_rng(0).standard_normal((400, 3))
    >>> op = solvers.KernelOperator(kernel_fn, x)
    >>> exact = solvers.falkon(op, np.sin(x), 1e-3, n_centers=400, store_dtype=np.float64)
    >>> exact.iterations <= 2 and exact.converged  # every point a centre: exact KRR, W = I
    True
    >>> res = solvers.falkon(op, np.sin(x), 1e-3, n_centers=50, validation=0.2)
    >>> res.coefficients.shape, res.validation_history[res.best_iteration] == res.validation_history.min()
    ((50, 3), np.True_)
    """
    op = k_train_train
    if not (hasattr(op, "block") and getattr(op, "symmetric", False)):
        raise TypeError(f"k_train_train must be a symmetric KernelOperator (x2 None); got {type(op).__name__}")
    n_all = op.shape[0]
    y, _, _ = check_outputs(y_train, n_all)
    if sampling not in ("uniform", "leverage"):
        raise ValueError(f"unknown sampling {sampling!r}; supported: 'uniform', 'leverage'")
    _, reg = check_kernel_or_operator(op, "k_train_train", check_positive(diag_reg, "diag_reg", allow_zero=True),
                                      diag_reg_absolute_scale)
    if sampling == "leverage" and reg == 0:
        raise ValueError("sampling='leverage' needs diag_reg > 0 (ridge leverage scores of K (K + λI)⁻¹)")
    tol, maxiter = check_positive(tol, "tol"), check_integer(maxiter, "maxiter")
    rng = check_seed(seed)
    train, val = _split(n_all, validation, rng)
    n = n_all if train is None else len(train)
    centers = select_centers(op, train, check_integer(n_centers, "n_centers"), sampling, reg, rng)
    m = len(centers)
    budget = budget_bytes(memory_budget)
    if products is None and getattr(op, "dask", None) is not None:  # dask inputs: the K_NM products as dask tasks
        from .. import distributed  # dask is installed: the operator holds dask arrays

        products = distributed.falkon_products
    if products is None:
        products = functools.partial(NystromProducts, store_dtype=store_dtype, progress=progress)
        prods = products(op, train, centers, memory_budget=budget)
        val_prods = None if val is None else products(op, val, centers, memory_budget=budget - prods.nbytes)
    else:
        prods, val_prods = products(op, train, centers), None if val is None else products(op, val, centers)
    k_mm = np.asarray(op.block(centers, centers), dtype=np.float64)
    t, jitter = cholesky_jitter((k_mm + k_mm.T) / 2, "K_MM (the kernel of the centres)")
    a, _ = cholesky_jitter(t @ t.T / m + (reg / n) * np.eye(m), "T Tᵀ/M + λ/n·I (Falkon's preconditioner)")
    tri = functools.partial(sl.solve_triangular, lower=False, check_finite=False)

    def b_apply(g):  # B γ = T⁻¹ A⁻¹ γ (the 1/√n is carried by W and c)
        return tri(t, tri(a, g))

    def w_apply(g):  # W γ = (A⁻ᵀ T⁻ᵀ K_NMᵀ K_NM T⁻¹ A⁻¹ γ + λ A⁻ᵀ A⁻¹ γ) / n
        ag = tri(a, g)
        return tri(a, tri(t, prods.normal(tri(t, ag)), trans="T") + reg * ag, trans="T") / n

    y_fit = y if train is None else y[train]
    c = tri(a, tri(t, prods.rmatmat(y_fit), trans="T"), trans="T") / n
    monitor = None
    if val is not None:
        def monitor(g):
            return float(np.mean((val_prods.matmat(b_apply(g)) - y[val]) ** 2))

    res = cg(w_apply, c, tol, maxiter, monitor=monitor, patience=patience, progress=progress)
    beta = b_apply(res.solution)
    fitted = np.empty_like(y)
    fitted[slice(None) if train is None else train] = prods.matmat(beta)
    if val is not None:
        fitted[val] = val_prods.matmat(beta)
    return FalkonResult(centers, beta, fitted, res.history, res.monitor, res.iterations, res.best_iteration,
                        res.converged, reg, jitter, val)


def gradient_descent_mse_nystrom(k_train_train, y_train, n_centers, learning_rate=1.0, diag_reg=0.0,
                                 diag_reg_absolute_scale=False, *, sampling="uniform", seed=0, memory_budget=None,
                                 store_dtype=np.float32, progress=False):
    """Gradient-flow predictions at any times with the Nyström kernel on M centres: one M×M eigendecomposition.

    Parameters
    ----------
    k_train_train : KernelOperator
        Symmetric (x2 None): K of the N training points (no N×N array is formed).
    y_train : ndarray of shape (N,) or (N, O...)
        Targets; ``n = y_train.size`` normalises the loss 1/(2n) Σ (f − y)², as
        :func:`fastntk.predict.gradient_descent_mse`.
    n_centers : int >= 1
        M (clipped to the distinct training points with a RuntimeWarning).
    learning_rate : float > 0
        η; times are in its units (τ = η·t).
    diag_reg : float >= 0
        The flow is that of K̃ + λI, λ = ``diag_reg`` × trace(K)/N (trace of the exact K, from its
        diagonal) unless ``diag_reg_absolute_scale``.
    sampling, seed, memory_budget, store_dtype, progress : keyword-only
        As :func:`falkon`: how the centres are drawn, and how K_NM is held.

    Returns
    -------
    predict_fn : callable ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)``
        As :func:`fastntk.predict.gradient_descent_mse`'s: ``t`` None (t = ∞) or times of any shape S
        (leading axes of the results); ``fx_train_0`` (N, O...) or scalar, None skips the train set;
        ``fx_test_0`` (N_test, O...) or scalar with ``k_test_train`` a KernelOperator of
        (x_test, x_train), read through its blocks against the centres only. Results are float64.
        ``predict_fn.centers`` (M,) are the centres' indices.

    Notes
    -----
    What is exact and what is approximated: the kernel is replaced by its Nyström approximation
    K̃ = K_NM K_MM⁻¹ K_MN (train) and K̃_test = K_tM K_MM⁻¹ K_MN (test), and gradient flow on the MSE
    loss with K̃ + λI is then solved exactly, in closed form, at every time. With every training point
    a centre (M = N), K̃ = K: the exact dynamics. The t = ∞ test predictions are Nyström kernel ridge
    regression, the solution of :func:`falkon` with the same centres and λ. If K_MM needed a jitter j
    (RuntimeWarning), K_MM + jI stands for K_MM.

    With T = chol(K_MM), Φ = K_NM T⁻¹ (K̃ = Φ Φᵀ) and ΦᵀΦ = T⁻ᵀ K_MN K_NM T⁻¹ = Q diag(s) Qᵀ (the
    M×M eigendecomposition: K̃'s nonzero eigenvalues are s, its eigenvectors Φ Q s^(-1/2)),
    r = f_train_0 − y, z = Qᵀ Φᵀ r and h(λ) = (e^{−λτ/n} − 1)/λ::

        f_train(τ) = f_train_0 + (e^{−λτ/n} − 1) r + K_NM T⁻¹ Q [e^{−λτ/n} h(s) ∘ z]
        f_test(τ)  = f_test_0 + K_tM T⁻¹ Q [h(s + λ) ∘ z]

    (the second term decays all of r at rate λ; the third, the part of r in K̃'s range at the rates
    s + λ). Eigenvalues s ≤ N·eps·max s (eps of the kernel's dtype) count as 0 and are dropped, as in
    :func:`fastntk.predict.gradient_descent_mse`.
    Cost: one pass of N×M kernel blocks for K_MN K_NM (2·N·M² flops) and an M×M ``eigh`` once; each
    call one ``rmatmat`` and one ``matmat`` with K_NM (all times at once: (M, T·O) columns) and one
    with K_tM.
    """
    op = k_train_train
    if not (hasattr(op, "block") and getattr(op, "symmetric", False)):
        raise TypeError(f"k_train_train must be a symmetric KernelOperator (x2 None); got {type(op).__name__}")
    n_tr = op.shape[0]
    y, tail, _ = check_outputs(y_train, n_tr)
    eta = check_positive(learning_rate, "learning_rate")
    if sampling not in ("uniform", "leverage"):
        raise ValueError(f"unknown sampling {sampling!r}; supported: 'uniform', 'leverage'")
    _, reg = check_kernel_or_operator(op, "k_train_train", check_positive(diag_reg, "diag_reg", allow_zero=True),
                                      diag_reg_absolute_scale)
    if sampling == "leverage" and reg == 0:
        raise ValueError("sampling='leverage' needs diag_reg > 0 (ridge leverage scores of K (K + λI)⁻¹)")
    rng = check_seed(seed)
    centers = select_centers(op, None, check_integer(n_centers, "n_centers"), sampling, reg, rng)
    prods = NystromProducts(op, None, centers, memory_budget, store_dtype, progress)
    k_mm = np.asarray(op.block(centers, centers), dtype=np.float64)
    t_chol, _ = cholesky_jitter((k_mm + k_mm.T) / 2, "K_MM (the kernel of the centres)")
    tri = functools.partial(sl.solve_triangular, lower=False, check_finite=False)
    half = tri(t_chol, prods.gram(), trans="T")  # T⁻ᵀ K_MN K_NM
    s, q = sl.eigh(tri(t_chol, half.T, trans="T"), check_finite=False)  # T⁻ᵀ K_MN K_NM T⁻¹ = Q diag(s) Qᵀ
    keep = s > n_tr * np.finfo(op.block_dtype).eps * max(s[-1], 0.0)
    s, basis = s[keep], tri(t_chol, q[:, keep])  # T⁻¹ Q on the kept directions

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        if fx_train_0 is None and fx_test_0 is None:
            raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
        if fx_test_0 is not None and k_test_train is None:
            raise ValueError("k_test_train is needed for test predictions (fx_test_0 is not None)")
        shape = () if t is None else check_times(t).shape
        tau = (np.full(1, np.inf) if t is None else eta * check_times(t).ravel())[:, None]
        f0 = check_initial(0.0 if fx_train_0 is None else fx_train_0, "fx_train_0", (n_tr, *tail)).reshape(y.shape)
        r, m, n = f0 - y, y.shape[1], y.size
        z = basis.T @ prods.rmatmat(r)  # Qᵀ T⁻ᵀ K_MN r
        e_reg = flow_factors(np.array([reg]), tau, n)[0]  # (T, 1): e^{−λτ/n} − 1 (0 for λ = 0)
        out = []
        if fx_train_0 is not None:
            d = (1.0 + e_reg) * flow_factors(s, tau, n)[1]  # (T, S): e^{−λτ/n} h(s)
            coef = basis @ (d[:, :, None] * z).transpose(1, 0, 2).reshape(len(s), tau.size * m)  # (M, T·O)
            train = prods.matmat(coef).reshape(n_tr, tau.size, m) + f0[:, None] + e_reg.T[:, :, None] * r[:, None]
            out.append(train.transpose(1, 0, 2).reshape(*shape, n_tr, *tail))
        if fx_test_0 is not None:
            if not (hasattr(k_test_train, "block") and k_test_train.shape[1:] == (n_tr,)):
                raise TypeError(f"k_test_train must be a KernelOperator of (x_test, x_train) with {n_tr} columns; "
                                f"got {type(k_test_train).__name__} of shape {getattr(k_test_train, 'shape', None)}")
            n_te = k_test_train.shape[0]
            ft0 = check_initial(fx_test_0, "fx_test_0", (n_te, *tail)).reshape(n_te, 1, m)
            h_test = flow_factors(s + reg, tau, n)[1]
            coef = basis @ (h_test[:, :, None] * z).transpose(1, 0, 2).reshape(len(s), tau.size * m)
            test = NystromProducts(k_test_train, None, centers, memory_budget=0).matmat(coef)
            out.append((ft0 + test.reshape(n_te, tau.size, m)).transpose(1, 0, 2).reshape(*shape, n_te, *tail))
        return out[0] if len(out) == 1 else tuple(out)

    predict_fn.centers = centers
    return predict_fn
