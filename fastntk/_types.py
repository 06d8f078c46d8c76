"""Result types of fastntk: one home for every namedtuple and record a public call returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["KERNEL_FIELDS", "META_DEFAULTS", "CGResult", "DiagRegSelection", "FalkonResult", "Gaussian", "Kernel", "KernelRidge", "ODEState", "Spectrum", "StoredKernels"]


#: neural-tangents' ``Kernel`` fields, in its order (``asdict()``).
KERNEL_FIELDS = ("nngp", "ntk", "cov1", "cov2", "x1_is_x2", "is_gaussian", "is_reversed", "is_input",
                 "diagonal_batch", "diagonal_spatial", "shape1", "shape2", "batch_axis", "channel_axis", "mask1",
                 "mask2")

#: The fields that describe a kernel rather than hold one, with their values for unmasked inputs
#: of shape (N, d) as neural-tangents reports them (``channel_axis`` normalised to 1).
META_DEFAULTS = {"x1_is_x2": False, "is_gaussian": False, "is_reversed": False, "is_input": False,
                  "diagonal_batch": True, "diagonal_spatial": False, "shape1": None, "shape2": None,
                  "batch_axis": 0, "channel_axis": 1, "mask1": None, "mask2": None}


class Kernel(tuple):
    """Kernels of x1 against x2: one type whatever ``get`` is.

    A tuple of the requested kernels in ``get``'s order (``('nngp', 'ntk')`` for get=None),
    each also an attribute, as the namedtuple neural-tangents returns for a tuple ``get``
    (``_fields``, ``_asdict``, unpacking). Every other field of neural-tangents' ``Kernel``
    is an attribute too (:data:`KERNEL_FIELDS`): ``cov1`` (N1,) = Σ(x1ᵢ, x1ᵢ) and ``cov2``
    (N2,) or None (x2 None, or not computed), the per-point variances; ``x1_is_x2``,
    ``is_gaussian`` (the outputs are Gaussian given the inputs: the last layer is affine),
    ``shape1`` / ``shape2`` (the shapes of the network's outputs on x1 / x2), ``batch_axis``,
    ``channel_axis``, ``diagonal_batch``, ``diagonal_spatial``, ``is_reversed``, ``is_input``,
    ``mask1``, ``mask2``. ``replace(**fields)`` and ``asdict()`` work as there.

    nngp, ntk : ndarray of shape (N1, N2) (empirical kernels: with the output axes kept).
    """

    def __new__(cls, fields, values, cov1=None, cov2=None, **meta):
        self = super().__new__(cls, values)
        fields = tuple(fields)
        if len(fields) != len(self):
            raise ValueError(f"Kernel needs one value per field {fields}; got {len(self)}")
        unknown = [f for f in (*fields, *meta) if f not in KERNEL_FIELDS]
        if unknown:
            raise TypeError(f"Kernel has no field {unknown[0]!r}; its fields are {KERNEL_FIELDS}")
        self.__dict__.update({**META_DEFAULTS, "cov1": cov1, "cov2": cov2, **meta, **dict(zip(fields, self))})
        self._fields = fields
        return self

    def __getattr__(self, name):  # only reached for names not set: nngp/ntk not computed
        fields = self.__dict__.get("_fields", ())
        raise AttributeError(f"this Kernel holds {fields} (and cov1, cov2); not {name!r}")

    def _asdict(self):
        """The requested fields (``get``) by name, as a namedtuple's ``_asdict``."""
        return dict(zip(self._fields, self))

    def asdict(self):
        """Every field of neural-tangents' Kernel by name (nngp/ntk None when not computed)."""
        return {f: self.__dict__.get(f) for f in KERNEL_FIELDS}

    def replace(self, **changes):
        """A copy with ``changes`` (field name -> value) applied, as neural-tangents' ``Kernel.replace``."""
        fields = self._fields + tuple(f for f in ("nngp", "ntk") if f in changes and f not in self._fields)
        attrs = {f: v for f, v in self.__dict__.items() if f in META_DEFAULTS or f in ("cov1", "cov2")}
        attrs.update(changes)
        values = [attrs.pop(f) if f in attrs and f in changes else self.__dict__[f] for f in fields]
        for f in fields:
            attrs.pop(f, None)
        return Kernel(fields, values, **attrs)

    def __reduce__(self):
        attrs = {f: v for f, v in self.__dict__.items() if f in META_DEFAULTS or f in ("cov1", "cov2")}
        return _rebuild_kernel, (self._fields, tuple(self), attrs)

    def __repr__(self):
        shapes = ", ".join(f"{n}={getattr(v, 'shape', v)}" for n, v in zip(self._fields, self))
        return f"Kernel({shapes})"


def _rebuild_kernel(fields, values, attrs):
    return Kernel(fields, values, **attrs)


class Gaussian(NamedTuple):
    """``(mean, covariance)``; the covariance is per output column (``Cov ⊗ I_O``)."""

    mean: np.ndarray
    covariance: np.ndarray


class _KernelRidgeFields(NamedTuple):
    dual_coef: np.ndarray
    fx_train: np.ndarray
    fx_test: np.ndarray | None


class KernelRidge(_KernelRidgeFields):
    """Kernel ridge regression: ``dual_coef`` (N, ...), ``fx_train`` (N, ...), ``fx_test`` or None.

    Also attributes, outside the 3-tuple (which unpacks as before): ``centers`` None, or for
    ``solver='falkon'`` the indices (M,) of the training points that are the Nyström centres, and
    then ``dual_coef`` (M, ...) holds one coefficient per centre; ``solution``: how the solve went, a
    :class:`CGResult` (``solver='cg'``), a :class:`FalkonResult` (``solver='falkon'``), or None.
    """

    centers = None
    solution = None

    def __new__(cls, dual_coef, fx_train, fx_test, centers=None, solution=None):
        self = super().__new__(cls, dual_coef, fx_train, fx_test)
        self.centers, self.solution = centers, solution
        return self


class Spectrum(NamedTuple):
    """Eigenvalues (descending) of K_reg and the numbers derived from them."""

    eigenvalues: np.ndarray
    lambda_min: float
    lambda_max: float
    condition_number: float
    effective_rank: float


class DiagRegSelection(NamedTuple):
    """Chosen ``diag_reg`` and the GCV and leave-one-out curves over the grid ``diag_regs``."""

    diag_reg: float
    diag_regs: np.ndarray
    gcv: np.ndarray
    loo: np.ndarray


class _CGFields(NamedTuple):
    solution: np.ndarray
    iterations: int
    residual: np.ndarray


class CGResult(_CGFields):
    """Conjugate gradients (:func:`fastntk.solvers.cg`): ``(solution, iterations, residual)``.

    ``solution`` (N, M) the best iterate, ``iterations`` run, ``residual`` ‖b − A x‖/‖b‖ per column
    (M,) of the solution. Also attributes, outside the 3-tuple: ``history`` (iterations + 1, M) that
    residual for every iterate (x₀ = 0 first), ``monitor`` (iterations + 1,) the monitored error of
    every iterate (None without a monitor), ``best_iteration`` (the solution's), ``converged``
    (every column reached tol).
    """

    history = None
    monitor = None
    best_iteration = 0
    converged = True

    def __new__(cls, solution, iterations, residual, history=None, monitor=None, best_iteration=0, converged=True):
        self = super().__new__(cls, solution, iterations, residual)
        self.history, self.monitor, self.best_iteration, self.converged = history, monitor, best_iteration, converged
        return self


class FalkonResult(NamedTuple):
    """Falkon (:func:`fastntk.solvers.falkon`): Nyström kernel ridge regression on M centres.

    ``centers`` (M,) int64, ascending: indices of the centres among the N training points.
    ``coefficients`` β (M, O) float64: the fit is f(x) = K(x, x_centers) β.
    ``fitted`` (N, O) float64: K(x_i, x_centers) β at every training point (validation rows included).
    ``residual_history`` (iterations + 1, O): the relative residual of the preconditioned M-dimensional
    system at every iterate (the first is 1). ``validation_history`` (iterations + 1,) or None: the
    validation MSE of every iterate. ``iterations`` run, ``best_iteration`` (the iterate returned: least residual, or
    least validation error), ``converged`` (every output reached tol). ``diag_reg``: the absolute ridge
    λ of the objective. ``jitter``: added to K_MM's diagonal for its Cholesky (0.0 if none needed).
    ``validation_rows`` (N_val,) int64 or None: the held-out training points.
    """

    centers: np.ndarray
    coefficients: np.ndarray
    fitted: np.ndarray
    residual_history: np.ndarray
    validation_history: np.ndarray | None
    iterations: int
    best_iteration: int
    converged: bool
    diag_reg: float
    jitter: float
    validation_rows: np.ndarray | None


class StoredKernels(NamedTuple):
    """Kernels written block by block to .npy files (:func:`fastntk.solvers.store_kernels`): ``paths``
    name -> path of each (N1, N2) .npy, ``manifest`` the path of the record of finished blocks,
    ``n_blocks`` in the block plan, ``computed`` by this call (the others were finished before)."""

    paths: dict
    manifest: object
    n_blocks: int
    computed: int


class ODEState(NamedTuple):
    """State of :func:`fastntk.predict.gradient_descent`'s ODE, as neural-tangents' ``predict.ODEState``.

    ``fx_train`` (N, ...) and ``fx_test`` (N_test, ...) outputs; ``qx_train``, ``qx_test`` their
    velocities ``df/dt`` under momentum (None without). Returned with the leading axes of ``t``.
    ``replace``, ``asdict`` and ``astuple`` are neural-tangents' dataclass methods.
    """

    fx_train: np.ndarray | None = None
    fx_test: np.ndarray | None = None
    qx_train: np.ndarray | None = None
    qx_test: np.ndarray | None = None

    def replace(self, **fields):
        return self._replace(**fields)

    def asdict(self):
        return self._asdict()

    def astuple(self):
        return tuple(self)
