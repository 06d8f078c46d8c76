"""fastntk.batching: neural-tangents' nt.batch sets the block height and changes nothing else."""

import numpy as np
import pytest
from conftest import assert_rounding

import fastntk
from fastntk import empirical_ntk_fn, stax

X = np.random.default_rng(0).standard_normal((37, 5))


def test_batched_kernel_fn_agrees_without_divisibility():
    init_fn, apply_fn, kernel_fn = stax.fc_network(2, "relu", 1.5, 0.1)
    batched = fastntk.batch(kernel_fn, batch_size=8)  # 37 rows: not a multiple of 8
    assert_rounding(batched(X, None, "ntk"), kernel_fn(X, None, "ntk"), "ntk")
    assert_rounding(batched(X, X[:9]).nngp, kernel_fn(X, X[:9]).nngp, "nngp")
    assert batched.spec is kernel_fn.spec
    _, params = init_fn(0, X.shape)
    ntk_fn = empirical_ntk_fn(apply_fn)
    assert_rounding(fastntk.batch(ntk_fn, 5)(X, None, params), ntk_fn(X, None, params), "empirical")


def test_batch_size_zero_returns_the_function():
    kernel_fn = stax.Relu().kernel_fn
    assert fastntk.batch(kernel_fn) is kernel_fn
    assert fastntk.batch(kernel_fn, 0, device_count=2, store_on_device=False) is kernel_fn


@pytest.mark.parametrize(("kwargs", "match"), [({"batch_size": -1}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
                                               ({"device_count": "all"}, "device_count"),
                                               ({"store_on_device": 1}, "store_on_device")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastntk.batch(stax.Relu().kernel_fn, **kwargs)
