"""fastntk.empirical front end: kernel_fn and nngp_fn, and bad input to every public function."""


import sys

import numpy as np
import pytest
from _nets import TOL, mlp
from conftest import assert_close

from fastntk.empirical import (
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk_fn,
    linearize,
    monte_carlo_kernel_fn,
    pseudo_ntk,
    train_and_track,
)


def test_nngp_and_kernel_fn(rng):
    init_fn, apply_fn, _ = mlp((8,), 3, "relu")
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    _, params = init_fn(5, x1.shape)
    f1, f2 = apply_fn(params, x1), apply_fn(params, x2)
    assert_close(empirical_nngp_fn(apply_fn)(x1, x2, params), f1 @ f2.T / 3, TOL, "nngp trace")
    assert_close(empirical_nngp_fn(apply_fn, ())(x1, x2, params), np.einsum("ia,jb->ijab", f1, f2), TOL)
    kernel_fn = empirical_kernel_fn(apply_fn)
    k = kernel_fn(x1, x2, None, params)
    assert k._fields == ("nngp", "ntk")
    assert_close(k.ntk, empirical_ntk_fn(apply_fn)(x1, x2, params), TOL)
    assert kernel_fn(x1, None, "ntk", params).shape == (4, 4)


def test_bad_inputs(rng, monkeypatch):
    init_fn, apply_fn, _ = mlp((4,), 2)
    x = rng.standard_normal((3, 5))
    _, params = init_fn(0, x.shape)
    ntk_fn = empirical_ntk_fn(apply_fn)
    monkeypatch.delitem(sys.modules, "jax", raising=False)  # with jax loaded, any callable may be a JAX function
    with pytest.raises(TypeError, match="apply_fn"):
        empirical_ntk_fn(lambda p, x: x)
    with pytest.raises(ValueError, match="x2"):
        ntk_fn(x, rng.standard_normal((2, 4)), params)
    with pytest.raises(ValueError, match="x1"):
        ntk_fn(np.full((2, 5), np.nan), None, params)
    with pytest.raises(TypeError, match="x1"):
        ntk_fn(np.ones((2, 5), int), None, params)
    with pytest.raises(ValueError, match="params"):
        ntk_fn(x, None, params[:-1])
    with pytest.raises(ValueError, match=r"params\[0\]\[0\]"):
        ntk_fn(x[:, :4], None, params)
    with pytest.raises(ValueError, match="block_rows"):
        ntk_fn(x, None, params, block_rows=0)
    with pytest.raises(ValueError, match="N1 == N2"):
        empirical_ntk_fn(apply_fn, (0,))(x, x[:2], params)
    with pytest.raises(ValueError, match="get"):
        empirical_kernel_fn(apply_fn)(x, None, "nnpg", params)
    with pytest.raises(ValueError, match="n_samples"):
        monte_carlo_kernel_fn(init_fn, apply_fn, 0, [4, 2])
    with pytest.raises(ValueError, match="learning_rate"):
        train_and_track(apply_fn, params, x, np.zeros((3, 2)), x, learning_rate=-1.0)
    with pytest.warns(RuntimeWarning, match="learning_rate"):
        train_and_track(apply_fn, params, x, np.zeros((3, 2)), x, learning_rate=1e3, n_steps=1)
    with pytest.raises(ValueError, match="y_train"):
        train_and_track(apply_fn, params, x, np.zeros((3, 1)), x)


def _setup():
    init_fn, apply_fn, _ = mlp((4,), 2)
    x = np.random.default_rng(0).standard_normal((3, 5))
    _, params = init_fn(0, x.shape)
    bad_w = [params[0], (), (params[2][0].copy(), params[2][1])]
    bad_w[2][0][1, 1] = np.nan
    return init_fn, apply_fn, x, params, bad_w


def _bad_calls():
    """(id, call(init_fn, apply_fn, x, params, params_with_nan), exception, match) for every public function."""
    y = np.zeros((3, 2))
    ntk = empirical_ntk_fn
    return [
        ("ntk-x1-None", lambda i, f, x, p, q: ntk(f)(None, None, p), TypeError, "x1 must be an array"),
        ("ntk-x1-1d", lambda i, f, x, p, q: ntk(f)(x[0], None, p), ValueError, "x1 must be 2-D"),
        ("ntk-x1-str", lambda i, f, x, p, q: ntk(f)("abc", None, p), TypeError, "x1 must be a float32"),
        ("ntk-x2-3d", lambda i, f, x, p, q: ntk(f)(x, x[None], p), ValueError, "x2 must be 2-D"),
        ("ntk-x2-inf", lambda i, f, x, p, q: ntk(f)(x, np.full((2, 5), np.inf), p), ValueError, "x2 contains inf"),
        ("ntk-params-None", lambda i, f, x, p, q: ntk(f)(x, None, None), ValueError, "params must be a list"),
        ("ntk-params-str", lambda i, f, x, p, q: ntk(f)(x, None, "abc"), ValueError, "params must be a list"),
        ("ntk-params-entry", lambda i, f, x, p, q: ntk(f)(x, None, [p[0], (), "ab"]), ValueError,
         r"params\[2\] must be a \(W, b\) pair"),
        ("ntk-params-W-shape", lambda i, f, x, p, q: ntk(f)(x, None, [p[0], (), (p[0][0], p[2][1])]), ValueError,
         r"params\[2\]\[0\] \(W\) must have shape \(4, 2\)"),
        ("ntk-params-W-int", lambda i, f, x, p, q: ntk(f)(x, None, [p[0], (), (p[2][0].astype(int), p[2][1])]),
         TypeError, r"params\[2\]\[0\] \(W\) must be a floating-point array"),
        ("ntk-params-b-shape", lambda i, f, x, p, q: ntk(f)(x, None, [p[0], (), (p[2][0], np.zeros(2))]),
         ValueError, r"params\[2\]\[1\] \(b\) must be of shape \(1, 2\)"),
        ("ntk-params-NaN", lambda i, f, x, p, q: ntk(f)(x, None, q), ValueError, r"params\[2\]\[0\] \(W\) contains NaN"),
        ("ntk-params-NaN-jacobian", lambda i, f, x, p, q: ntk(f, implementation=1)(x, None, q), ValueError,
         r"params\[2\]\[0\] \(W\) contains NaN"),
        ("ntk-trace_axes-None", lambda i, f, x, p, q: ntk(f, None), TypeError, "trace_axes"),
        ("ntk-diagonal_axes-str", lambda i, f, x, p, q: ntk(f, (), "x"), TypeError, "diagonal_axes"),
        ("ntk-f-str", lambda i, f, x, p, q: ntk("abc"), TypeError, "f must be the apply_fn"),
        ("pseudo-x2", lambda i, f, x, p, q: pseudo_ntk(f, x, x[:, :3], p), ValueError, "x2 must have the same"),
        ("pseudo-params-NaN", lambda i, f, x, p, q: pseudo_ntk(f, x, None, q), ValueError, r"params\[2\]\[0\]"),
        ("pseudo-implementation", lambda i, f, x, p, q: pseudo_ntk(f, x, None, p, implementation="x"), ValueError,
         "implementation"),
        ("pseudo-block_rows", lambda i, f, x, p, q: pseudo_ntk(f, x, None, p, block_rows=-1), ValueError, "block_rows"),
        ("nngp-x1-None", lambda i, f, x, p, q: empirical_nngp_fn(f)(None, None, p), TypeError, "x1"),
        ("nngp-params-NaN", lambda i, f, x, p, q: empirical_nngp_fn(f)(x, None, q), ValueError, r"params\[2\]\[0\]"),
        ("nngp-axis0", lambda i, f, x, p, q: empirical_nngp_fn(f, (0,))(x, x[:2], p), ValueError, "N1 == N2"),
        ("kernel-params-None", lambda i, f, x, p, q: empirical_kernel_fn(f)(x, None, "ntk"), ValueError, "params"),
        ("kernel-get", lambda i, f, x, p, q: empirical_kernel_fn(f)(x, None, 5, p), ValueError, "get"),
        ("linearize-params-None", lambda i, f, x, p, q: linearize(f, None), ValueError, "params must be a list"),
        ("linearize-params-NaN", lambda i, f, x, p, q: linearize(f, q), ValueError, r"params\[2\]\[0\]"),
        ("linearize-x", lambda i, f, x, p, q: linearize(f, p)(p, x[:, :3]), ValueError, "x must have 5 features"),
        ("linearize-x-None", lambda i, f, x, p, q: linearize(f, p)(p, None), TypeError, "x must be an array"),
        ("linearize-params", lambda i, f, x, p, q: linearize(f, p)(p[:1], x), ValueError, "params must be a list"),
        ("mc-key-str", lambda i, f, x, p, q: monte_carlo_kernel_fn(i, f, "abc", 2), TypeError, "key must be"),
        ("mc-key-negative", lambda i, f, x, p, q: monte_carlo_kernel_fn(i, f, -1, 2), ValueError, "key must be"),
        ("mc-n_samples-0", lambda i, f, x, p, q: monte_carlo_kernel_fn(i, f, 0, 0), ValueError, "n_samples"),
        ("mc-n_samples-str", lambda i, f, x, p, q: monte_carlo_kernel_fn(i, f, 0, "ab"), ValueError, "n_samples"),
        ("mc-init_fn", lambda i, f, x, p, q: monte_carlo_kernel_fn(None, f, 0, 2), TypeError, "init_fn"),
        ("mc-apply_fn", lambda i, f, x, p, q: monte_carlo_kernel_fn(i, None, 0, 2), TypeError, "apply_fn"),
        ("mc-x1", lambda i, f, x, p, q: monte_carlo_kernel_fn(i, f, 0, 2)(x[0]), ValueError, "x1 must be 2-D"),
        ("mc-x1-sequence", lambda i, f, x, p, q: monte_carlo_kernel_fn(i, f, 0, [1, 2])(None), TypeError, "x1"),
        ("mc-get", lambda i, f, x, p, q: monte_carlo_kernel_fn(i, f, 0, [1, 2])(x, None, "nnpg"), ValueError, "get"),
        ("train-learning_rate-str", lambda i, f, x, p, q: train_and_track(f, p, x, y, x, learning_rate="a"),
         TypeError, "learning_rate"),
        ("train-learning_rate-inf", lambda i, f, x, p, q: train_and_track(f, p, x, y, x, learning_rate=np.inf),
         ValueError, "learning_rate"),
        ("train-n_steps", lambda i, f, x, p, q: train_and_track(f, p, x, y, x, n_steps=1.5), ValueError, "n_steps"),
        ("train-record_every", lambda i, f, x, p, q: train_and_track(f, p, x, y, x, record_every=0), ValueError,
         "record_every"),
        ("train-y_train-1d", lambda i, f, x, p, q: train_and_track(f, p, x, np.zeros(3), x), ValueError,
         r"y_train must be 2-D of shape \(3, 2\)"),
        ("train-y_train-NaN", lambda i, f, x, p, q: train_and_track(f, p, x, y + np.nan, x), ValueError,
         "y_train contains NaN"),
        ("train-x_test", lambda i, f, x, p, q: train_and_track(f, p, x, y, x[:, :2]), ValueError,
         "x_test must have the same number of features as x_train"),
        ("train-x_test-None", lambda i, f, x, p, q: train_and_track(f, p, x, y, None), TypeError, "x_test"),
        ("train-x_train", lambda i, f, x, p, q: train_and_track(f, p, x[:, :2], y, x[:, :2]), ValueError,
         r"params\[0\]\[0\] \(W\) must have shape \(2, 4\) for x_train"),
        ("train-params-NaN", lambda i, f, x, p, q: train_and_track(f, q, x, y, x), ValueError, r"params\[2\]\[0\]"),
    ]


@pytest.mark.parametrize(("call", "exc", "match"), [c[1:] for c in _bad_calls()], ids=[c[0] for c in _bad_calls()])
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call(*_setup())


def test_monte_carlo_key_kinds_agree():
    """An int seed, its SeedSequence and the same entropy as a key array give the same kernel."""
    init_fn, apply_fn, x, _, _ = _setup()
    ref = monte_carlo_kernel_fn(init_fn, apply_fn, 3, 2)(x, None, "ntk")
    assert_close(monte_carlo_kernel_fn(init_fn, apply_fn, np.random.SeedSequence(3), 2)(x, None, "ntk"), ref, 0)
    key = np.array([0, 3], np.uint32)
    assert_close(monte_carlo_kernel_fn(init_fn, apply_fn, key, 2)(x, None, "ntk"),
                 monte_carlo_kernel_fn(init_fn, apply_fn, np.random.SeedSequence(key), 2)(x, None, "ntk"), 0)
