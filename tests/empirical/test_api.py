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
    monte_carlo_kernel_fn,
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
