"""Numba kernels for activations given as Python functions (Gauss–Hermite dual kernels).

The user's φ and φ' are compiled once per function (memoised) and passed to the
quadrature kernels as first-class functions, so each activation costs one compilation.
A function Numba cannot compile (a JAX function, ``scipy.special.expit``) is reported by
:func:`compiles`, once, so that the caller can take its NumPy path instead.
Twin: ``fastntk._reference._gauss_hermite_dual``.
"""

from __future__ import annotations

import functools
import math
import warnings

import numba as nb
import numpy as np

__all__ = ["compiles", "quad_diag", "quad_tile", "use_serial_kernels"]


@functools.lru_cache(maxsize=None)
def hermite_rule(deg):
    """Nodes z and weights w with E[h(Z)] ≈ Σ w h(z) for Z ~ N(0, 1)."""
    x, w = np.polynomial.hermite.hermgauss(deg)
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


def _jit(f):
    """Compile a scalar function; NumPy ufuncs (np.tanh) are wrapped first."""
    if isinstance(f, np.ufunc):
        ufunc = f

        def f(x):
            return ufunc(x)

    return nb.njit(nogil=True)(f)


@functools.lru_cache(maxsize=None)
def _compiled(fn, df):
    fn_jit = _jit(fn)
    base = getattr(df, "central_difference_of", None)
    if base is fn:

        @nb.njit(nogil=True)
        def df_jit(x):
            h = 6.0554544523933395e-06 * max(1.0, abs(x))
            return (fn_jit(x + h) - fn_jit(x - h)) / (2.0 * h)

    else:
        df_jit = _jit(df)
    return fn_jit, df_jit


def _try_compile(fn, df):
    try:
        fn_jit, df_jit = _compiled(fn, df)
        fn_jit(0.5), df_jit(0.5)  # compile now (float64), not inside the quadrature kernel
    except nb.core.errors.NumbaError as err:
        name = getattr(fn, "__name__", type(fn).__name__)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(f"Numba could not compile fn={name!r} or its derivative ({first}); its "
                      "Gauss-Hermite quadrature runs in NumPy instead, which is slower", RuntimeWarning,
                      stacklevel=3)
        return False
    return True


_COMPILES: dict = {}


def compiles(rule):
    """Whether Numba compiles the rule's φ and φ'; memoised per function (a central difference
    of fn counts as fn), so a function Numba rejects gives one RuntimeWarning."""
    central = getattr(rule.df, "central_difference_of", None) is rule.fn
    key = (rule.fn, None if central else rule.df)
    if key not in _COMPILES:
        _COMPILES[key] = _try_compile(rule.fn, rule.df)
    return _COMPILES[key]


@nb.njit(nogil=True, parallel=True)
def _quad_tile(k, t, with_ntk, v1, v2, z, w, fn, df):
    n1, n2 = k.shape
    deg = z.shape[0]
    for i in nb.prange(n1):
        su = math.sqrt(v1[i])
        fu = np.empty(deg)
        dfu = np.empty(deg)
        for a in range(deg):
            fu[a] = fn(su * z[a])
            dfu[a] = df(su * z[a]) if with_ntk else 0.0
        for j in range(n2):
            sv = math.sqrt(v2[j])
            # ρ = Σ12/(√Σ11·√Σ22), not Σ12/√(Σ11·Σ22), whose product overflows; Σ11 itself
            # where Σ11 = Σ22, so ρ = 1 exactly at coincident points (_reference._gauss_hermite_dual).
            scale = v1[i] if v1[i] == v2[j] else su * sv
            rho = k[i, j] / scale if scale > 0.0 else 0.0
            rho = min(1.0, max(-1.0, rho))
            c = math.sqrt(1.0 - rho * rho)
            sigma = 0.0
            t_dot = 0.0
            for a in range(deg):
                inner_f = 0.0
                inner_d = 0.0
                for b in range(deg):
                    v = sv * (rho * z[a] + c * z[b])
                    inner_f += w[b] * fn(v)
                    if with_ntk:
                        inner_d += w[b] * df(v)
                sigma += w[a] * fu[a] * inner_f
                t_dot += w[a] * dfu[a] * inner_d
            k[i, j] = sigma
            if with_ntk:
                t[i, j] *= t_dot


def use_serial_kernels():
    """Replace the threaded tile kernel by its serial compilation (a fork()ed child's; see
    ``fastntk._backend.cpu``). Same arithmetic, same results."""
    global _quad_tile
    _quad_tile = nb.njit(nogil=True)(_quad_tile.py_func)


@nb.njit(nogil=True)
def _quad_diag(k, t, with_ntk, z, w, fn, df):
    for i in range(k.shape[0]):
        s = math.sqrt(k[i])
        sigma = 0.0
        t_dot = 0.0
        for a in range(z.shape[0]):
            f = fn(s * z[a])
            sigma += w[a] * f * f
            if with_ntk:
                g = df(s * z[a])
                t_dot += w[a] * g * g
        k[i] = sigma
        if with_ntk:
            t[i] *= t_dot


def quad_tile(rule, k, t, v1, v2):
    """Apply a quadrature rule (``activations.QuadratureDual``) to a tile in place.

    k : (n1, n2) Σ₁₂, replaced by E[φ(u)φ(v)]; t : (n1, n2) Θ₁₂ or None, multiplied by
    E[φ'(u)φ'(v)]; v1 : (n1,), v2 : (n2,) float64 variances.
    """
    fn_jit, df_jit = _compiled(rule.fn, rule.df)
    z, w = hermite_rule(rule.deg)
    with_ntk = t is not None
    _quad_tile(k, t if with_ntk else np.empty((0, 0), k.dtype), with_ntk, v1, v2, z, w, fn_jit, df_jit)


def quad_diag(rule, k, t):
    """Apply a numerical layer to per-point values k = Σ(x, x), t = Θ(x, x) (float64, in place)."""
    fn_jit, df_jit = _compiled(rule.fn, rule.df)
    z, w = hermite_rule(rule.deg)
    with_ntk = t is not None
    _quad_diag(k, t if with_ntk else np.empty(0), with_ntk, z, w, fn_jit, df_jit)
