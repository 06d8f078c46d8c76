"""Result types of fastntk: one home for every namedtuple and record a public call returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CGResult", "DiagRegSelection", "Gaussian", "Kernel", "KernelRidge", "ODEState", "Spectrum"]


class Kernel(tuple):
    """Kernels of x1 against x2: one type whatever ``get`` is.

    A tuple of the requested kernels in ``get``'s order (``('nngp', 'ntk')`` for get=None),
    each also an attribute, as the namedtuple neural-tangents returns for a tuple ``get``
    (``_fields``, ``_asdict``, unpacking); plus ``cov1`` (N1,) = Σ(x1ᵢ, x1ᵢ) and ``cov2``
    (N2,) or None (x2 None, or not computed), the per-point variances neural-tangents'
    ``Kernel`` carries.

    nngp, ntk : ndarray of shape (N1, N2) (empirical kernels: with the output axes kept).
    """

    def __new__(cls, fields, values, cov1=None, cov2=None):
        self = super().__new__(cls, values)
        if len(fields) != len(self):
            raise ValueError(f"Kernel needs one value per field {tuple(fields)}; got {len(self)}")
        self._fields, self.cov1, self.cov2 = tuple(fields), cov1, cov2
        return self

    def __getattr__(self, name):
        fields = self.__dict__.get("_fields", ())
        if name in fields:
            return self[fields.index(name)]
        raise AttributeError(f"this Kernel holds {fields} (and cov1, cov2); not {name!r}")

    def _asdict(self):
        return dict(zip(self._fields, self))

    def __reduce__(self):
        return Kernel, (self._fields, tuple(self), self.cov1, self.cov2)

    def __repr__(self):
        shapes = ", ".join(f"{n}={getattr(v, 'shape', v)}" for n, v in zip(self._fields, self))
        return f"Kernel({shapes})"




class Gaussian(NamedTuple):
    """``(mean, covariance)``; the covariance is per output column (``Cov ⊗ I_O``)."""

    mean: np.ndarray
    covariance: np.ndarray


class KernelRidge(NamedTuple):
    """Kernel ridge regression: ``dual_coef`` (N, ...), ``fx_train`` (N, ...), ``fx_test`` or None."""

    dual_coef: np.ndarray
    fx_train: np.ndarray
    fx_test: np.ndarray | None


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


class CGResult(NamedTuple):
    """``solution`` (N, M), ``iterations`` run, ``residual`` ‖b − A x‖/‖b‖ per column (M,)."""

    solution: np.ndarray
    iterations: int
    residual: np.ndarray


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
