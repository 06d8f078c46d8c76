"""The compiled window pass ``_core.conv_window`` against plain loops: every tap of a Conv (one tap moving
both positions of a pair) or of a pool (one position), the Dense rule, and the activation fused after it."""

import numpy as np
import pytest

from fastntk import _core, activations, spec
from fastntk._backend import select
from fastntk._conv import _joint_index

RULE = (0.7, 0.1, 0.3, 0.5, 0.2)  # k_scale, k_offset, t_from_k, t_scale, t_offset
CASES = [((8, 8), (3, 3), (1, 1), "SAME"), ((7, 5), (3, 2), (2, 1), "VALID"), ((6,), (3,), (1,), "CIRCULAR"),
         ((9,), (4,), (3,), "SAME"), ((4, 3, 2), (2, 2, 2), (1, 1, 1), "SAME")]


def _index(shape, window, strides, padding):
    return _joint_index(shape, spec.window_plan(shape, window, strides, padding), window, strides, padding)


def _loop(k, t, index, pair):
    """s_K, s_T by explicit loops over outputs and taps."""
    m, taps = index.shape
    out_shape = (k.shape[0], m, m, k.shape[3]) if pair else (k.shape[0], m, k.shape[2])
    sk, st = np.zeros(out_shape), np.zeros(out_shape)
    for o1 in range(m):
        for tap in range(taps):
            q1 = index[o1, tap]
            if q1 < 0:
                continue
            if not pair:
                sk[:, o1] += k[:, q1]
                st[:, o1] += t[:, q1]
                continue
            for o2 in range(m):
                q2 = index[o2, tap]
                if q2 >= 0:
                    sk[:, o1, o2] += k[:, q1, q2]
                    st[:, o1, o2] += t[:, q1, q2]
    return sk, st


def _rule(sk, st, with_t=True):
    ks, ko, tk, ts, to = RULE
    return ks * sk + ko, tk * sk + (ts * st if with_t else 0.0) + to


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("pair", [True, False])
@pytest.mark.parametrize("c", [1, 3, 70])
def test_conv_window_is_the_loop(case, pair, c):
    index = _index(*case)
    n = int(np.prod(case[0]))
    rng = np.random.default_rng(1)
    shape = (2, n, n, c) if pair else (2, n, c)
    k, t = rng.standard_normal(shape), rng.standard_normal(shape)
    out_shape = (2, index.shape[0], index.shape[0], c) if pair else (2, index.shape[0], c)
    sk, st = _loop(k, t, index, pair)
    for with_t in (True, False):
        ko, to = np.full(out_shape, np.nan), np.full(out_shape, np.nan)
        _core.conv_window(k, t if with_t else None, ko, to, index, RULE)
        want_k, want_t = _rule(sk, st, with_t)
        np.testing.assert_allclose(ko, want_k, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(to, want_t, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["relu", "erf", "gelu"])
@pytest.mark.parametrize("pair", [True, False])
def test_fused_activation_is_the_pass_then_the_tiles(name, pair):
    """The activation run on each output chunk equals conv_window then fc_tiles on the whole result."""
    index = _index((5, 4), (3, 3), (1, 1), "SAME")
    m = n = index.shape[0]
    rng = np.random.default_rng(2)
    b1, b2 = 3, 37
    x1, x2 = rng.standard_normal((b1, n, 4)), rng.standard_normal((b2, n, 4))
    if pair:
        k = np.ascontiguousarray(np.einsum("ipc,jqc->ipqj", x1, x2) / 4)
        var1 = np.einsum("ipc,ipc->ip", x1, x1) / 4 * RULE[0] * 9 + RULE[1]
        v2 = np.einsum("ipc,ipc->ip", x2, x2) / 4 * RULE[0] * 9 + RULE[1]
        var2 = np.ascontiguousarray(v2.T).reshape(1, -1)
    else:
        k = np.ascontiguousarray(np.einsum("ipc,jpc->pij", x1, x2) / 4).reshape(1, n, b1 * b2)
        var1 = np.ascontiguousarray((np.einsum("ipc,ipc->pi", x1, x1) / 4) * RULE[0] * 9 + RULE[1])
        var2 = np.ascontiguousarray((np.einsum("ipc,ipc->pi", x2, x2) / 4) * RULE[0] * 9 + RULE[1])
    t = np.abs(k)
    ops = select(np.zeros(1)).plan([spec.Act(getattr(activations, name)())], 8, first=False)[0].ops
    fused_k, fused_t = np.empty_like(k), np.empty_like(k)
    _core.conv_window(k, t, fused_k, fused_t, index, RULE, ops, var1, var2, 1e-7)
    want_k, want_t = np.empty_like(k), np.empty_like(k)
    _core.conv_window(k, t, want_k, want_t, index, RULE)
    if pair:
        tiles = (want_k.reshape(1, b1 * m, m * b2), want_t.reshape(1, b1 * m, m * b2),
                 var1.reshape(1, 1, -1), var2.reshape(1, 1, -1))
    else:
        tiles = (want_k.reshape(m, b1, b2), want_t.reshape(m, b1, b2), var1[:, None, :], var2[:, None, :])
    _core.fc_tiles(*tiles, ops, 1e-7)
    np.testing.assert_allclose(fused_k, want_k, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(fused_t, want_t, rtol=1e-14, atol=1e-15)


def test_conv_window_bad_arguments():
    index = _index((4,), (3,), (1,), "SAME")
    k = np.ones((1, 4, 4, 2))
    out = np.empty((1, 4, 4, 2))
    with pytest.raises(ValueError, match="k must be 4-D"):
        _core.conv_window(np.ones((4, 4)), None, out, out.copy(), index, RULE)
    with pytest.raises(ValueError, match=r"k_out must have shape \(1, 4, 4, 2\)"):
        _core.conv_window(k, None, np.empty((1, 3, 4, 2)), out, index, RULE)
    with pytest.raises(ValueError, match="beyond n = 4"):
        _core.conv_window(k, None, out, out.copy(), index + 1, RULE)
    with pytest.raises(ValueError, match="t_out must not share memory with k_out"):
        _core.conv_window(k, None, out, out, index, RULE)
    with pytest.raises(ValueError, match="rule must hold 5 numbers"):
        _core.conv_window(k, None, out, out.copy(), index, RULE[:4])
    two = select(np.zeros(1)).plan([spec.Act(activations.relu()), spec.Act(activations.relu())], 8, first=False)
    with pytest.raises(ValueError, match="exactly one activation"):
        _core.conv_window(k, None, out, out.copy(), index, RULE, two[0].ops, np.ones((1, 4)), np.ones((1, 8)))
    relu = select(np.zeros(1)).plan([spec.Act(activations.relu())], 8, first=False)[0].ops
    with pytest.raises(ValueError, match=r"var2 must have shape \(1, m C\) or \(A, m C\)"):
        _core.conv_window(k, None, out, out.copy(), index, RULE, relu, np.ones((1, 4)), np.ones(8))
