"""Reference values of neural-tangents 0.6.5's predict module for tests/test_predict_general.py.

Run once with the neural-tangents environment (float64):

    /path/to/nt-venv/bin/python tests/compat/generate_predict.py

It writes tests/compat/data/predict.npz: the inputs (random kernels whose output axes are kept,
(N, N, O, O), built from feature maps so that they are positive semi-definite and not of the form
K ⊗ I) and neural-tangents' outputs of gradient_descent (cross-entropy and MSE, with and without
momentum), gradient_descent_mse, gp_inference, gradient_descent_mse_ensemble and max_learning_rate.
Keys are ``<case>/<name>``; ``make_kernels`` below is repeated in the test, which rebuilds the
ensemble's kernel_fn from the stored weights.
"""

from __future__ import annotations

import collections
import sys
import types
from pathlib import Path

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
from neural_tangents import predict

OUT = Path(__file__).parent / "data" / "predict.npz"
N, N_TEST, O, D, P = 6, 4, 3, 5, 24
TIMES = np.array([[0.0, 0.25], [1.0, 4.0]])
Kernels = collections.namedtuple("Kernels", "nngp ntk")


def make_kernels(x1, x2, w_nngp, w_ntk):
    """(nngp, ntk) of shape (N1, N2, O, O): feature maps φ(x) = tanh(x W) of shape (N, O, P)."""
    def features(x, w):
        return np.tanh(np.einsum("nd,odp->nop", x, w))

    out = []
    for w in (w_nngp, w_ntk):
        f1, f2 = features(x1, w), features(x2, w)
        out.append(np.einsum("iap,jbp->ijab", f1, f2) / P)
    return out[0], out[0] + out[1]


def cross_entropy(fx, y_hat):
    return -jnp.mean(jax.nn.log_softmax(fx) * y_hat)


def mse(fx, y_hat):
    return 0.5 * jnp.mean((fx - y_hat) ** 2)


def main():
    rng = np.random.default_rng(2024)
    x, x_test = rng.standard_normal((N, D)), rng.standard_normal((N_TEST, D))
    w_nngp, w_ntk = rng.standard_normal((O, D, P)), rng.standard_normal((O, D, P))
    nngp_dd, ntk_dd = make_kernels(x, x, w_nngp, w_ntk)
    nngp_td, ntk_td = make_kernels(x_test, x, w_nngp, w_ntk)
    nngp_tt, _ = make_kernels(x_test, x_test, w_nngp, w_ntk)
    y = rng.standard_normal((N, O))
    y_onehot = np.eye(O)[rng.integers(0, O, N)]
    f0, ft0 = 0.3 * rng.standard_normal((N, O)), 0.3 * rng.standard_normal((N_TEST, O))
    q0, qt0 = 0.1 * rng.standard_normal((N, O)), 0.1 * rng.standard_normal((N_TEST, O))
    # A 2-D kernel for trace_axes=(-1,) (the output axis traced)
    k2 = ntk_dd[:, :, 0, 0] + ntk_dd[:, :, 1, 1]
    k2_td = ntk_td[:, :, 0, 0] + ntk_td[:, :, 1, 1]
    out = {"x": x, "x_test": x_test, "w_nngp": w_nngp, "w_ntk": w_ntk, "y": y, "y_onehot": y_onehot,
           "f0": f0, "ft0": ft0, "q0": q0, "qt0": qt0, "t": TIMES}

    def put(case, **values):
        out.update({f"{case}/{k}": np.asarray(v) for k, v in values.items()})

    # gradient_descent: cross-entropy and MSE, kernels (N, N) with trace_axes=(-1,) and (N, N, O, O) with ()
    for name, loss, targets in (("ce", cross_entropy, y_onehot), ("mse", mse, y)):
        fn = predict.gradient_descent(loss, k2, targets, learning_rate=0.7)
        put(f"gd_{name}_2d", train=fn(TIMES, f0, ft0, k2_td)[0], test=fn(TIMES, f0, ft0, k2_td)[1])
        fn = predict.gradient_descent(loss, ntk_dd, targets, learning_rate=0.7, trace_axes=())
        train, test = fn(TIMES, f0, ft0, ntk_td)
        put(f"gd_{name}_4d", train=train, test=test)
        fn = predict.gradient_descent(loss, ntk_dd, targets, learning_rate=0.7, momentum=0.9, trace_axes=())
        state = fn(TIMES, predict.ODEState(f0, ft0, q0, qt0), None, ntk_td)
        put(f"gd_{name}_momentum", fx_train=state.fx_train, fx_test=state.fx_test, qx_train=state.qx_train,
            qx_test=state.qx_test)

    # gradient_descent_mse with the output axes kept, and a 3-D y (N, O, 2) with the last axis traced
    for reg in (0.0, 1e-2):
        fn = predict.gradient_descent_mse(ntk_dd, y, learning_rate=0.7, diag_reg=reg, trace_axes=())
        train, test = fn(TIMES, f0, ft0, ntk_td)
        inf_train, inf_test = fn(None, f0, ft0, ntk_td)
        put(f"mse_4d_reg{reg:g}", train=train, test=test, inf_train=inf_train, inf_test=inf_test)
    y3 = np.stack([y, -2 * y], axis=-1)
    fn = predict.gradient_descent_mse(ntk_dd, y3, diag_reg=1e-3, trace_axes=(-1,))
    f03, ft03 = np.stack([f0, f0 ** 2], -1), np.stack([ft0, -ft0], -1)
    train, test = fn(TIMES, f03, ft03, ntk_td)
    put("mse_3d", y=y3, f0=f03, ft0=ft03, train=train, test=test, inf_test=fn(None, f03, ft03, ntk_td)[1])

    # gp_inference: nngp, ntk and ntkgp posteriors with the output axes kept
    k_dd, k_td = Kernels(nngp_dd, ntk_dd), Kernels(nngp_td, ntk_td)
    k_tt = Kernels(nngp_tt, make_kernels(x_test, x_test, w_nngp, w_ntk)[1])
    post = predict.gp_inference(k_dd, y, diag_reg=1e-3, trace_axes=())(("nngp", "ntk", "ntkgp"), k_td, k_tt)
    for g, v in zip(("nngp", "ntk", "ntkgp"), post):
        put(f"gp_{g}", mean=v.mean, cov=v.covariance)
    train = predict.gp_inference(k_dd, y, diag_reg=1e-3, trace_axes=())("nngp", None, k_tt)
    put("gp_train", mean=train.mean, cov=train.covariance)

    # gradient_descent_mse_ensemble with a kernel_fn whose kernels keep the output axes
    def kernel_fn(x1, x2, get, **kwargs):
        nngp, ntk = make_kernels(x1, x1 if x2 is None else x2, w_nngp, w_ntk)
        if isinstance(get, str):
            return {"nngp": nngp, "ntk": ntk}[get]
        return Kernels(nngp, ntk)

    ens = predict.gradient_descent_mse_ensemble(kernel_fn, x, y, learning_rate=0.7, diag_reg=1e-3, trace_axes=())
    for t_name, t in (("t", TIMES), ("inf", None)):
        for x_name, xt in (("test", x_test), ("train", None)):
            res = ens(t, xt, ("nngp", "ntk"), compute_cov=True)
            for g, v in zip(("nngp", "ntk"), res):
                put(f"ens_{t_name}_{x_name}_{g}", mean=v.mean, cov=v.covariance)

    # max_learning_rate of a kernel with the output axes kept (n defaults to N·O)
    put("lr", default=predict.max_learning_rate(ntk_dd), sized=predict.max_learning_rate(ntk_dd, N * O, momentum=0.5))

    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} arrays)")


if __name__ == "__main__":
    main()
