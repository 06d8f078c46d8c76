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


def _chain_inputs(n_inputs, shape, b1, b2, seed=3):
    """Diagonal-layout pair arrays (P, b1·b2) of random images and their per-position variances."""
    rng = np.random.default_rng(seed)
    p = int(np.prod(shape))
    x1, x2 = rng.standard_normal((b1, p, n_inputs)), rng.standard_normal((b2, p, n_inputs))
    k = np.ascontiguousarray(np.einsum("ipc,jpc->pij", x1, x2) / n_inputs).reshape(p, b1 * b2)
    return k, np.einsum("ipc,ipc->pi", x1, x1) / n_inputs, np.einsum("ipc,ipc->pi", x2, x2) / n_inputs


def _chain_steps(shape, layers, v1, v2):
    """conv_chain's steps for Convs ``layers`` = [(window, strides, padding, activation or None)] from
    inputs of spatial ``shape`` with variances v1 (P, b1), v2 (P, b2), and the spatial shape at the end.
    Each step's variances are the previous ones through its rule (a stand-in for the self pass's)."""
    steps = []
    for window, strides, padding, name in layers:
        plan = spec.window_plan(shape, window, strides, padding)
        index = _joint_index(shape, plan, window, strides, padding)
        # the variances after the Conv: its rule on the taps' sum (every tap of a diagonal entry reads the diagonal)
        v1, v2 = (RULE[0] * np.stack([v[row[row >= 0]].sum(0) for row in index]) + RULE[1] for v in (v1, v2))
        ops = None if name is None else select(np.zeros(1)).plan([spec.Act(getattr(activations, name)())], 8,
                                                                 first=False)[0].ops
        steps.append((index, RULE, ops, np.ascontiguousarray(v1), np.ascontiguousarray(v2)))
        shape = tuple(n for n, _ in plan)
        if name is not None:  # the variances entering the next Conv: the dual at coincident points
            v1, v2 = np.abs(v1), np.abs(v2)
    return steps, shape


CHAINS = [((8, 8), [((3, 3), (1, 1), "SAME", "relu")] * 3),
          ((7, 5), [((3, 2), (2, 1), "VALID", "erf"), ((2, 2), (1, 1), "SAME", None),
                    ((1, 1), (1, 1), "VALID", "gelu")]),
          ((9,), [((4,), (3,), "CIRCULAR", "relu"), ((3,), (1,), "SAME", "relu")])]


@pytest.mark.parametrize("shape, layers", CHAINS)
@pytest.mark.parametrize("b1, b2", [(1, 1), (3, 37), (2, 300), (70, 70)])
@pytest.mark.parametrize("with_t", [True, False])
def test_conv_chain_is_conv_window_step_by_step(shape, layers, b1, b2, with_t):
    """Every chunk through every step in cache equals conv_window (with its fused activation) run step by
    step over the whole arrays, then (Flatten) the mean over the positions."""
    k, v1, v2 = _chain_inputs(5, shape, b1, b2)
    t = np.abs(k) if with_t else None
    steps, _ = _chain_steps(shape, layers, v1, v2)
    want_k, want_t = k[None], None if t is None else t[None]
    for index, rule, ops, s1, s2 in steps:
        out_k, out_t = np.empty((1, index.shape[0], b1 * b2)), np.empty((1, index.shape[0], b1 * b2))
        if ops is None:
            _core.conv_window(want_k, want_t, out_k, out_t, index, rule)
        else:
            _core.conv_window(want_k, want_t, out_k, out_t, index, rule, ops, s1, s2, 1e-7)
        want_k, want_t = out_k, out_t
    m = want_k.shape[1]
    got_k, got_t = np.full((m, b1 * b2), np.nan), np.full((m, b1 * b2), np.nan)
    _core.conv_chain(k, t, steps, b2, 1e-7, got_k, got_t)
    np.testing.assert_allclose(got_k, want_k[0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(got_t, want_t[0], rtol=1e-14, atol=1e-15)
    mean_k, mean_t = np.full(b1 * b2, np.nan), np.full(b1 * b2, np.nan)
    _core.conv_chain(k, t, steps, b2, 1e-7, mean_k, mean_t)
    np.testing.assert_allclose(mean_k, want_k[0].sum(0) / m, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(mean_t, want_t[0].sum(0) / m, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("b", [1, 5, 70, 300])
def test_conv_chain_upper_computes_the_upper_triangle(b):
    """upper: the entries (i, j >= i) of a diagonal tile equal the full pass; those below are 0 or equal."""
    shape, layers = CHAINS[0]
    k, v1, _ = _chain_inputs(4, shape, b, b)
    steps, _ = _chain_steps(shape, layers, v1, v1)
    full = [np.empty(b * b), np.empty(b * b)]
    _core.conv_chain(k, None, steps, b, 1e-7, *full)
    upper = [np.full(b * b, np.nan), np.full(b * b, np.nan)]
    _core.conv_chain(k, None, steps, b, 1e-7, *upper, upper=True)
    above = np.triu(np.ones((b, b), dtype=bool)).ravel()
    for f, u in zip(full, upper):
        np.testing.assert_array_equal(u[above], f[above])
        assert np.all((u[~above] == 0) | (u[~above] == f[~above]))


def test_conv_chain_bad_arguments():
    shape, layers = CHAINS[0]
    k, v1, v2 = _chain_inputs(3, shape, 2, 3)
    steps, _ = _chain_steps(shape, layers, v1, v2)
    out = np.empty(6)
    with pytest.raises(ValueError, match="k must be 2-D"):
        _core.conv_chain(k.ravel(), None, steps, 3, 0.0, out, out.copy())
    with pytest.raises(ValueError, match="width must divide C = 6"):
        _core.conv_chain(k, None, steps, 4, 0.0, out, out.copy())
    with pytest.raises(ValueError, match="at least one step"):
        _core.conv_chain(k, None, [], 3, 0.0, out, out.copy())
    bad = [(steps[0][0] + 64,) + tuple(steps[0][1:])] + steps[1:]
    with pytest.raises(ValueError, match=r"steps\[0\]: index holds 64, beyond n = 64"):
        _core.conv_chain(k, None, bad, 3, 0.0, out, out.copy())
    bad = steps[:1] + [steps[1][:4] + (np.ones((64, 2)),)] + steps[2:]
    with pytest.raises(ValueError, match=r"steps\[1\]: var2 must have shape \(64, 3\)"):
        _core.conv_chain(k, None, bad, 3, 0.0, out, out.copy())
    with pytest.raises(ValueError, match=r"k_out must have shape \(6,\)"):
        _core.conv_chain(k, None, steps, 3, 0.0, np.empty(5), out)
    with pytest.raises(ValueError, match="upper needs k_out, t_out of shape"):
        _core.conv_chain(k, None, steps, 3, 0.0, np.empty((64, 6)), np.empty((64, 6)), upper=True)
    with pytest.raises(ValueError, match="must not share memory"):
        _core.conv_chain(k, None, steps, 3, 0.0, out, out)


@pytest.mark.parametrize("b1, b2, channels", [(1, 1, 1), (3, 37, 3), (70, 300, 8)])
def test_conv_chain_forms_the_inputs_gram(b1, b2, channels):
    """From the inputs (k None, x1, x2t): the Gram per position, formed chunk by chunk, as from the Gram array."""
    shape, layers = CHAINS[0]
    p = int(np.prod(shape))
    rng = np.random.default_rng(4)
    x1, x2 = rng.standard_normal((b1, p, channels)), rng.standard_normal((b2, p, channels))
    x2t = np.ascontiguousarray(x2.transpose(1, 2, 0))
    k = np.ascontiguousarray(np.einsum("ipc,jpc->pij", x1, x2) / channels).reshape(p, b1 * b2)
    v1, v2 = np.einsum("ipc,ipc->pi", x1, x1) / channels, np.einsum("ipc,ipc->pi", x2, x2) / channels
    steps, _ = _chain_steps(shape, layers, v1, v2)
    for out_shape in ((b1 * b2,), (p, b1 * b2)):
        want, got = [np.empty(out_shape), np.empty(out_shape)], [np.empty(out_shape), np.empty(out_shape)]
        _core.conv_chain(k, None, steps, b2, 1e-7, *want)
        _core.conv_chain(None, None, steps, b2, 1e-7, *got, x1=x1, x2t=x2t)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match=r"without k, x1 \(n1, n, c\) and x2t \(n, c, width\) are needed"):
        _core.conv_chain(None, None, steps, b2, 0.0, *got, x1=x1)
    with pytest.raises(ValueError, match="width must be x2t's last axis"):
        _core.conv_chain(None, None, steps, b2 + 1, 0.0, *got, x1=x1, x2t=x2t)
    with pytest.raises(ValueError, match="t needs k"):
        _core.conv_chain(None, k, steps, b2, 0.0, *got, x1=x1, x2t=x2t)
