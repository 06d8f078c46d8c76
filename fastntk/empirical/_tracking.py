"""Training a finite network next to its linearization, and Monte Carlo averages over initialisations.

``linearize`` and ``train_and_track`` work on fastntk networks through :class:`._net.Net` (one
forward-mode JVP per linearized evaluation, one VJP per gradient step); the NTKs they need come
from :mod:`._native`. ``running_average`` is the loop behind ``monte_carlo_kernel_fn``.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable

import numpy as np
import scipy.linalg

from .._validation import check_array, check_positive
from . import _native
from ._axes import NtkImplementation

_STRUCTURED = NtkImplementation.STRUCTURED_DERIVATIVES


# --------------------------------------------------------------------------- parameter arithmetic
def _sub_params(params, params0):
    return [p if len(p) != 2 else (p[0] - q[0], None if p[1] is None else p[1] - q[1])
            for p, q in zip(params, params0)]


def _axpy(params, grads, scale):
    return [p if len(p) != 2 else (p[0] + scale * g[0], None if p[1] is None else p[1] + scale * g[1])
            for p, g in zip(params, grads)]


def _flat(params):
    return np.concatenate([a.ravel() for p in params if len(p) == 2 for a in p if a is not None])


def _cast(params, dtype):
    return [p if len(p) != 2 else (p[0].astype(dtype, copy=False), None if p[1] is None else
                                   p[1].astype(dtype, copy=False)) for p in params]


def _first_fan_in(params):
    return next(p[0].shape[0] for p in params if len(p) == 2)


# --------------------------------------------------------------------------- linearization
def linearize(net, params):
    """f_lin(params, x) = f(θ₀, x) + J(x)(θ − θ₀) around θ₀ = ``params`` (copied)."""
    net.refuse_spatial("linearize")
    params0 = [p if len(p) != 2 else (np.array(p[0]), None if p[1] is None else np.array(p[1]))
               for p in net.check_params(params)]
    d = _first_fan_in(params0)

    def f_lin(params, x, **kwargs):
        x = check_array(x, "x")
        if x.shape[1] != d:
            raise ValueError(f"x must have {d} features (the rows of params[0][0] given to linearize); "
                             f"got x.shape={x.shape}")
        p = net.check_params(params, d, x_name="x")
        f0, df = net.jvp(params0, _sub_params(p, params0), x)
        return f0 + df

    f_lin.__doc__ = "f(θ₀, x) + J(x)(params − θ₀) for x of shape (N, d); see fastntk.empirical.linearize."
    return f_lin


# --------------------------------------------------------------------------- lazy-regime diagnostics
def _check_training(net, params, x_train, y_train, x_test, learning_rate, n_steps, record_every):
    net.refuse_spatial("train_and_track")
    x_train = check_array(x_train, "x_train")
    x_test = check_array(x_test, "x_test")
    if x_test.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_test must have the same number of features as x_train (d={x_train.shape[1]}); "
                         f"got x_test.shape={x_test.shape}")
    want = (x_train.shape[0], net.out_dim)
    if y_train is not None and np.ndim(y_train) != 2:
        raise ValueError(f"y_train must be 2-D of shape {want} (x_train rows, network outputs); "
                         f"got shape {np.shape(y_train)}")
    y_train = check_array(y_train, "y_train")
    if y_train.shape != want:
        raise ValueError(f"y_train must have shape {want} (x_train rows, network outputs); got {y_train.shape}")
    dtype = np.result_type(x_train, x_test)
    learning_rate = check_positive(learning_rate, "learning_rate")
    for name, v, lo in (("n_steps", n_steps, 0), ("record_every", record_every, 1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}; got {v!r}")
    p0 = net.check_params(params, x_train.shape[1], x_name="x_train")
    return p0, x_train.astype(dtype, copy=False), y_train, x_test.astype(dtype, copy=False), learning_rate


def _kernel_regression(net, params, x_train, y_train, x_test, f0_train, f0_test):
    """f₀(x_test) + Θ̂₀(x_test, X) Θ̂₀(X, X)⁻¹ (y − f₀(X)), with the full (N·O × N·O) empirical NTK."""
    n, o = y_train.shape
    k_dd = _native.ntk(net, params, x_train, None, (), (), _STRUCTURED).transpose(0, 2, 1, 3).reshape(n * o, n * o)
    k_td = _native.ntk(net, params, x_test, x_train, (), (), _STRUCTURED).transpose(0, 2, 1, 3) \
        .reshape(x_test.shape[0] * o, n * o)
    alpha = scipy.linalg.lstsq(k_dd, (y_train - f0_train).ravel(), cond=None)[0]
    return f0_test + (k_td @ alpha).reshape(x_test.shape[0], o)


def train_and_track(net, params, x_train, y_train, x_test, learning_rate, n_steps, record_every):
    """GD on the network and on its linearization; the records of ``fastntk.empirical.train_and_track``."""
    p0, x_train, y_train, x_test, learning_rate = _check_training(net, params, x_train, y_train, x_test,
                                                                  learning_rate, n_steps, record_every)

    def ntk(p):  # the kernels are computed in the dtype of the inputs, as empirical_ntk_fn does
        return _native.ntk(net, _cast(p, x_train.dtype), x_train, None, (1,), (), _STRUCTURED)

    k0, norm0, n = ntk(p0), np.linalg.norm(_flat(p0)), y_train.size
    lr_max = 2 * n / np.linalg.eigvalsh(k0).max()  # GD on the linearized model is stable iff η < 2n/λ_max(Θ̂₀)
    if learning_rate >= lr_max:
        warnings.warn(f"learning_rate={learning_rate} >= 2n/λ_max(Θ̂₀) = {lr_max:.3g}: the linearized model "
                      "diverges (the network itself may still converge, in the catapult phase)", RuntimeWarning,
                      stacklevel=3)
    f0_test, f0_train, p, p_lin = net.forward(p0, x_test)[0], net.forward(p0, x_train)[0], p0, p0
    f_kr = _kernel_regression(net, _cast(p0, x_train.dtype), x_train, y_train, x_test, f0_train, f0_test)
    rec = {k: [] for k in ("step", "loss", "param_change", "kernel_change", "lin_gap", "kr_gap", "fx_train",
                           "fx_test")}
    for t in range(n_steps + 1):
        resid = net.forward(p, x_train)[0] - y_train
        if t % record_every == 0 or t == n_steps:
            lin_test = f0_test + net.jvp(p0, _sub_params(p_lin, p0), x_test)[1]
            rec["step"].append(t)
            rec["loss"].append(0.5 * np.sum(resid**2) / n)
            rec["param_change"].append(np.linalg.norm(_flat(p) - _flat(p0)) / norm0)
            rec["kernel_change"].append(np.linalg.norm(ntk(p) - k0) / np.linalg.norm(k0))
            f_test = net.forward(p, x_test)[0]
            rec["lin_gap"].append(np.abs(f_test - lin_test).max())
            rec["kr_gap"].append(np.abs(f_test - f_kr).max())
            rec["fx_train"].append(resid + y_train)
            rec["fx_test"].append(f_test)
        if t == n_steps:
            break
        dlin = net.jvp(p0, _sub_params(p_lin, p0), x_train)[1]
        p = _axpy(p, net.vjp(p, x_train, resid), -learning_rate / n)
        p_lin = _axpy(p_lin, net.vjp(p0, x_train, f0_train + dlin - y_train), -learning_rate / n)
    return {k: np.asarray(v) for k, v in rec.items()}


# --------------------------------------------------------------------------- Monte Carlo
def check_n_samples(n_samples):
    """[n, ...]: a positive int or an increasing sequence of them."""
    seq = [n_samples] if isinstance(n_samples, numbers.Integral) else list(n_samples) \
        if isinstance(n_samples, Iterable) and not isinstance(n_samples, (str, bytes)) else None
    if (not seq or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in seq)
            or any(b <= a for a, b in zip(seq, seq[1:]))):
        raise ValueError(f"n_samples must be a positive int or an increasing sequence of them; got {n_samples!r}")
    return [int(n) for n in seq]


def seed_sequence(key):
    """A SeedSequence from ``key``: a non-negative int, a SeedSequence, a Generator or a jax-style key array."""
    if isinstance(key, np.random.SeedSequence):
        return key
    if isinstance(key, np.random.Generator):
        return np.random.SeedSequence(key.integers(2**63))
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        if key < 0:
            raise ValueError(f"key must be a non-negative integer seed; got {key!r}")
        return np.random.SeedSequence(int(key))
    arr = np.asarray(key) if isinstance(key, (list, tuple)) or hasattr(key, "__array__") else None
    if arr is not None and arr.dtype.kind in "ui" and arr.ndim == 1 and arr.size and (arr >= 0).all():
        return np.random.SeedSequence([int(k) for k in arr])
    raise TypeError(f"key must be a non-negative int seed, a numpy Generator or SeedSequence, or a 1-D array of "
                    f"non-negative ints (a jax PRNGKey); got {type(key).__name__}")


def running_average(samples, kernel_fn, counts, x1, x2, names):
    """Yield the average of ``kernel_fn(x1, x2, names, params_s)`` over s < n for each n in counts.

    ``samples`` yields the parameters params_0, params_1, ...; sums run in sample order and are
    divided by n, as neural-tangents' Monte Carlo does."""
    total, done = None, 0
    for n in counts:
        for _ in range(done, n):
            k = kernel_fn(x1, x2, names, next(samples))
            total = list(k) if total is None else [t + v for t, v in zip(total, k)]
        done = n
        yield [t / n for t in total]


def ntk_vp_fn(net, x1, x2, params):
    """ct ↦ J(x1) J(x2)ᵀ ct of a fastntk network (NumPy): one VJP on x2, one JVP on x1."""
    x1, x2, dtype = net.check_inputs(x1, x2)
    xb = x1 if x2 is None else x2
    p = net.check_params(params, x1.shape[-1], dtype)

    def ntk_vp(cotangents):
        ct = check_array(cotangents, "cotangents", ndim=2, dtype=dtype)
        if ct.shape != (xb.shape[0], net.out_dim):
            raise ValueError(f"cotangents must have the shape of f(params, x2), {(xb.shape[0], net.out_dim)}; "
                             f"got {ct.shape}")
        return net.jvp(p, net.vjp(p, xb, ct), x1)[1]

    return ntk_vp
