"""fastntk.empirical._axes: trace/diagonal axes and construction arguments."""


import pytest
from _nets import TOL, mlp
from conftest import assert_close

from fastntk.empirical import empirical_ntk_fn


@pytest.mark.parametrize(("trace_axes", "diagonal_axes", "shape"), [
    ((-1,), (), (5, 5)), ((), (), (5, 5, 3, 3)), ((), (-1,), (5, 5, 3)), ((0,), (), (3, 3)),
    ((), (0,), (5, 3, 3)), ((0,), (1,), (3,)), ((1,), (0,), (5,)), ((0, 1), (), ()), ((), (0, 1), (5, 3)),
])
def test_axes_match_brute_force(trace_axes, diagonal_axes, shape, rng):
    init_fn, apply_fn, _ = mlp((6, 4), 3, "erf")
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    _, params = init_fn(1, x1.shape)
    fast = empirical_ntk_fn(apply_fn, trace_axes, diagonal_axes)(x1, x2, params)
    brute = empirical_ntk_fn(apply_fn, trace_axes, diagonal_axes, implementation=1)(x1, x2, params)
    assert fast.shape == shape
    assert_close(fast, brute, TOL)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"trace_axes": (2,)}, ValueError, "trace_axes"),
    ({"trace_axes": "a"}, TypeError, "trace_axes"),
    ({"trace_axes": (-1,), "diagonal_axes": (-1,)}, ValueError, "disjoint"),
    ({"implementation": 7}, ValueError, "implementation"),
    ({"vmap_axes": 1}, ValueError, "vmap_axes"),
])
def test_bad_construction(kwargs, exc, match):
    _, apply_fn, _ = mlp((4,), 1)
    with pytest.raises(exc, match=match):
        empirical_ntk_fn(apply_fn, **kwargs)
