"""Function-space gradient flow of any differentiable loss, integrated numerically (for predict.gradient_descent).

With the train kernel K and the test-train kernel K_td stacked into one matrix ``[K; K_td]`` and the
outputs into ``f = [f_train; f_test]``, gradient descent on ``L(f_train)`` moves them as
``df/dτ = −[K; K_td] ∇L(f_train)``; with momentum (neural-tangents' continuous form, Qian 1999):
``df/dτ = q``, ``dq/dτ = −[K; K_td] ∇L(f_train) + friction·q``. Blocks are the (rows, M) matrices
of :class:`fastntk._validation.TargetLayout`.

Solver: :func:`scipy.integrate.solve_ivp` with ``METHOD`` (DOP853, the 8th-order Dormand–Prince
pair of Hairer, Nørsett and Wanner, with dense output), relative tolerance ``rtol`` and absolute
tolerance ``rtol·max(max|f_0|, max|q_0|, max|y|)`` (1 where all are 0). neural-tangents integrates
with ``jax.experimental.ode.odeint`` (5th-order Dormand–Prince, rtol = atol = 1.4e-8).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

__all__ = ["METHOD", "gradient_flow", "loss_gradient"]

METHOD = "DOP853"


def loss_gradient(loss, loss_grad, lay):
    """``∇L`` as a function of the (N·P, M) train outputs, returning (N·P, M) float64.

    ``loss_grad(fx, y_hat)`` when given, else ``loss.grad(fx, y_hat)`` when ``loss`` has one, else
    ``jax.grad`` of ``loss(fx, y_hat)`` in float64 (JAX imported here only). ``fx`` and ``y_hat``
    have y_train's shape. The gradient is evaluated once at ``fx = 0`` to check it.
    """
    y = np.ascontiguousarray(lay.from_2d(lay.y))
    if loss_grad is not None:
        if not callable(loss_grad):
            raise TypeError("loss_grad must be callable as loss_grad(fx, y_hat) -> dL/dfx; got "
                            f"{type(loss_grad).__name__}")
        source, fn = "loss_grad", lambda f: loss_grad(f, y)
    elif callable(getattr(loss, "grad", None)):
        source, fn = "loss.grad", lambda f: loss.grad(f, y)
    elif callable(loss):
        source, fn = "jax.grad(loss)", _jax_grad(loss, y)
    else:
        raise TypeError(f"loss must be callable as loss(fx, y_hat); got {type(loss).__name__}")

    def grad_2d(f):
        g = np.asarray(fn(lay.from_2d(f)), dtype=np.float64)
        if g.shape != lay.shape:
            raise ValueError(f"{source} must return dL/dfx of y_train's shape {lay.shape}; got shape {g.shape}")
        if not np.isfinite(g).all():
            raise FloatingPointError(f"{source} is not finite at fx with max|fx| = {np.abs(f).max():.3g}")
        return lay.to_2d(g)

    zeros = np.zeros_like(lay.y)
    if source != "jax.grad(loss)":
        grad_2d(zeros)
        return grad_2d
    try:
        grad_2d(zeros)
    except (ValueError, FloatingPointError):
        raise
    except Exception as err:  # a tracing error: the loss is not a JAX function
        raise TypeError(f"loss could not be differentiated by jax.grad ({type(err).__name__}: {err}); write it with "
                        "jax.numpy, or pass loss_grad=(fx, y_hat) -> dL/dfx for a NumPy loss") from err
    return grad_2d


def _jax_grad(loss, y):
    """``fx -> jax.grad(loss)(fx, y)`` computed in float64, whatever ``jax_enable_x64`` says."""
    try:
        import jax
    except ImportError:
        raise TypeError("loss is differentiated by jax.grad, and JAX is not installed; install jax, or pass "
                        "loss_grad=(fx, y_hat) -> dL/dfx for a NumPy loss") from None
    x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    with x64(True):
        fn = jax.jit(jax.grad(lambda f: loss(f, y)))

    def grad(f):
        with x64(True):
            return np.asarray(fn(f))

    return grad


def gradient_flow(kernel, grad_2d, f0, q0, tau, friction, rtol, y):
    """Outputs (and velocities) at the times ``tau`` (any shape, finite, ≥ 0; any order).

    ``kernel`` (R, N·P) = [K; K_td]; ``f0`` (R, M) initial outputs, train rows first; ``q0``
    (R, M) initial velocities, or None without momentum (``friction`` then unused); ``y`` (N·P, M)
    the targets (they set the absolute tolerance). Returns ``(f, q)``, each (tau.size, R, M) in
    the flat order of ``tau`` (q None without momentum).
    """
    n_train, rows = kernel.shape[1], f0.shape
    blocks = [f0] if q0 is None else [f0, q0]
    z0 = np.concatenate([b.ravel() for b in blocks])

    def rhs(_, z):
        df = -(kernel @ grad_2d(z[:n_train * rows[1]].reshape(n_train, rows[1]))).ravel()
        if q0 is None:
            return df
        q = z[f0.size:]
        return np.concatenate([q, df + friction * q])

    times, inverse = np.unique(tau.ravel(), return_inverse=True)
    if times[-1] == 0:
        z = np.broadcast_to(z0, (times.size, z0.size))
    else:
        scale = max(np.abs(z0).max(initial=0.0), np.abs(y).max(initial=0.0)) or 1.0
        sol = solve_ivp(rhs, (0.0, times[-1]), z0, method=METHOD, t_eval=times, rtol=rtol, atol=rtol * scale)
        if not sol.success:
            raise RuntimeError(f"the ODE solver ({METHOD}) stopped at τ = {sol.t[-1]:.6g}: {sol.message}")
        z = sol.y.T
    z = z[inverse.ravel()]
    f = z[:, :f0.size].reshape(-1, *rows)
    return f, None if q0 is None else z[:, f0.size:].reshape(-1, *rows)
