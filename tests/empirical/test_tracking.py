"""fastntk.empirical._tracking: linearization, Monte Carlo averages, the lazy regime of training."""


import numpy as np
from _nets import TOL, mlp
from conftest import assert_close

from fastntk.empirical import empirical_ntk_fn, linearize, monte_carlo_kernel_fn, train_and_track
from fastntk.predict import max_learning_rate


def test_linearize_matches_central_difference(rng):
    init_fn, apply_fn, _ = mlp((10, 8), 3, "erf", b_std=0.3)
    x = rng.standard_normal((5, 4))
    _, p0 = init_fn(4, x.shape)
    f_lin = linearize(apply_fn, p0)
    v = [() if not p else (rng.standard_normal(p[0].shape), rng.standard_normal(p[1].shape)) for p in p0]

    def shifted(eps):
        return [() if not p else (p[0] + eps * dv[0], p[1] + eps * dv[1]) for p, dv in zip(p0, v)]

    eps = 1e-5
    jv = (apply_fn(shifted(eps), x) - apply_fn(shifted(-eps), x)) / (2 * eps)
    assert_close(f_lin(p0, x), apply_fn(p0, x), 1e-14, "f_lin(θ₀)")
    assert_close(f_lin(shifted(1.0), x) - apply_fn(p0, x), jv, 1e-8, "J·v")


def test_monte_carlo_running_average(rng):
    init_fn, apply_fn, kernel_fn = mlp((256,), 2, "relu")
    x = rng.standard_normal((4, 3))
    mc = monte_carlo_kernel_fn(init_fn, apply_fn, 7, [1, 4, 16])
    estimates = list(mc(x, None, "ntk"))
    assert len(estimates) == 3
    assert_close(estimates[-1], monte_carlo_kernel_fn(init_fn, apply_fn, 7, 16)(x, None, "ntk"), TOL)
    single = empirical_ntk_fn(apply_fn)(x, None, init_fn(np.random.default_rng(np.random.SeedSequence(7).spawn(1)[0]),
                                                          x.shape)[1])
    assert_close(estimates[0], single, TOL, "first sample")
    inf = kernel_fn(x, None, "ntk")
    assert np.linalg.norm(estimates[-1] - inf) < 0.1 * np.linalg.norm(inf)
    k = monte_carlo_kernel_fn(init_fn, apply_fn, 7, 2)(x)
    assert k.nngp.shape == k.ntk.shape == (4, 4)


def test_lazy_regime_shrinks_with_width(rng):
    x_train, x_test = rng.standard_normal((16, 5)), rng.standard_normal((8, 5))
    y = np.sin(x_train[:, :1])
    final = {}
    for m in (32, 2048):
        init_fn, apply_fn, _ = mlp((m,), 1, "relu")
        _, params = init_fn(1, x_train.shape)
        rec = train_and_track(apply_fn, params, x_train, y, x_test, learning_rate=1.0, n_steps=100, record_every=50)
        assert list(rec["step"]) == [0, 50, 100]
        assert rec["loss"][-1] < rec["loss"][0]
        assert rec["param_change"][0] == rec["kernel_change"][0] == rec["lin_gap"][0] == 0
        final[m] = {k: v[-1] for k, v in rec.items()}
    for key in ("param_change", "kernel_change", "lin_gap"):
        assert final[2048][key] < 0.5 * final[32][key], key


def test_trained_network_approaches_kernel_regression(rng):
    """Trained to convergence, a wide network predicts the kernel-regression solution
    f₀ + Θ̂₀(x, X)Θ̂₀⁻¹(y − f₀) of its initial NTK; the gap shrinks as the width grows."""
    x_train, x_test = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    y = np.cos(x_train[:, :2])
    gaps = {}
    for m in (32, 512, 4096):
        init_fn, apply_fn, _ = mlp((m,), 2, "erf")
        _, params = init_fn(2, x_train.shape)
        lr = 0.9 * max_learning_rate(empirical_ntk_fn(apply_fn)(x_train, None, params), y.size)
        rec = train_and_track(apply_fn, params, x_train, y, x_test, learning_rate=lr, n_steps=600, record_every=600)
        assert rec["loss"][-1] < 1e-6 * rec["loss"][0], m  # converged
        gaps[m] = rec["kr_gap"][-1]
    assert gaps[4096] < gaps[512] < gaps[32], gaps
    assert gaps[4096] < 0.1 * gaps[32], gaps


def test_records_the_outputs_it_measures(rng):
    """fx_train and fx_test are the network's outputs at the recorded steps: f(θ₀) first, and the
    recorded loss is 1/(2n)‖fx_train − y‖²."""
    x_train, x_test = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    y = np.cos(x_train[:, :2])
    init_fn, apply_fn, _ = mlp((64,), 2, "relu")
    _, params = init_fn(3, x_train.shape)
    rec = train_and_track(apply_fn, params, x_train, y, x_test, learning_rate=0.5, n_steps=20, record_every=5)
    assert rec["fx_train"].shape == (5, 5, 2) and rec["fx_test"].shape == (5, 4, 2)
    assert_close(rec["fx_train"][0], apply_fn(params, x_train), TOL)
    assert_close(rec["fx_test"][0], apply_fn(params, x_test), TOL)
    assert_close(rec["loss"], 0.5 * ((rec["fx_train"] - y) ** 2).sum(axis=(1, 2)) / y.size, TOL)
