"""fastntk.network: the finite network's rule table (init, apply, JVP, VJP) against identities
that need no stored numbers: JVP = directional finite difference, ⟨ct, J v⟩ = ⟨Jᵀ ct, v⟩, and the
walks agree with each other on nested and padded specs."""

import numpy as np
import pytest

from fastntk import network, stax

X = np.random.default_rng(3).standard_normal((6, 4))


def _net(parameterization, b_std):
    inner = stax.serial(stax.Dense(7, 1.4, b_std, parameterization=parameterization), stax.Gelu(), stax.Identity())
    return stax.serial(inner, stax.Dense(5, 1.2, b_std, parameterization=parameterization), stax.Erf(),
                       stax.Dense(3, 1.1, b_std, parameterization=parameterization))


def _flat_random_like(flat, rng):
    return [p if len(p) != 2 else (rng.standard_normal(p[0].shape), None if p[1] is None else
                                   rng.standard_normal(p[1].shape)) for p in flat]


CASES = [("ntk", 0.1), ("standard", 0.1), ("ntk", None), ("standard", None)]


@pytest.mark.parametrize(("parameterization", "b_std"), CASES)
def test_jvp_is_the_directional_derivative(parameterization, b_std):
    layer = _net(parameterization, b_std)
    _, params = layer.init_fn(0, X.shape)
    net = network.pairs(layer.kernel_fn.spec, params)
    dparams = _flat_random_like([p for _, p in net], np.random.default_rng(1))
    f, df = network.jvp(net, dparams, X)
    np.testing.assert_allclose(f, network.apply(net, X), rtol=1e-14)
    h = 1e-6
    moved = [(leaf, p if len(p) != 2 else (p[0] + h * dp[0], None if p[1] is None else p[1] + h * dp[1]))
             for (leaf, p), dp in zip(net, dparams)]
    back = [(leaf, p if len(p) != 2 else (p[0] - h * dp[0], None if p[1] is None else p[1] - h * dp[1]))
            for (leaf, p), dp in zip(net, dparams)]
    fd = (network.apply(moved, X) - network.apply(back, X)) / (2 * h)
    np.testing.assert_allclose(df, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("parameterization", "b_std"), CASES)
def test_vjp_is_the_adjoint_of_jvp(parameterization, b_std):
    """⟨ct, J·v⟩ = ⟨Jᵀ·ct, v⟩ for random v and ct."""
    layer = _net(parameterization, b_std)
    _, params = layer.init_fn(2, X.shape)
    net = network.pairs(layer.kernel_fn.spec, params)
    rng = np.random.default_rng(4)
    v = _flat_random_like([p for _, p in net], rng)
    ct = rng.standard_normal((X.shape[0], 3))
    _, jv = network.jvp(net, v, X)
    grads = network.vjp(net, X, ct)
    rhs = sum(np.sum(g[0] * d[0]) + (0.0 if g[1] is None else np.sum(g[1] * d[1]))
              for g, d in zip(grads, v) if len(g) == 2)
    np.testing.assert_allclose(np.sum(ct * jv), rhs, rtol=1e-12)


def test_unflatten_inverts_pairs():
    layer = _net("ntk", 0.1)
    _, params = layer.init_fn(0, X.shape)
    spec = layer.kernel_fn.spec
    flat = [p for _, p in network.pairs(spec, params)]
    rebuilt = network.unflatten(spec, flat)
    assert [len(p) for p in rebuilt] == [len(p) for p in params]
    np.testing.assert_array_equal(network.apply(network.pairs(spec, rebuilt), X), layer.apply_fn(params, X))


def test_init_draws_are_seeded_and_standard_scaled():
    """'standard' scales W by W_std/√fan_in at init; 'ntk' keeps the raw N(0, 1) draws."""
    (_, ntk), (_, std) = (stax.Dense(3, 2.0, 0.5, parameterization=p).init_fn(5, (2, 4)) for p in ("ntk", "standard"))
    np.testing.assert_allclose(std[0], ntk[0] * 2.0 / 2.0, rtol=1e-15)
    np.testing.assert_allclose(std[1], ntk[1] * 0.5, rtol=1e-15)
    np.testing.assert_array_equal(stax.Dense(3).init_fn(5, (2, 4))[1][0], stax.Dense(3).init_fn(5, (2, 4))[1][0])
