"""fastntk.empirical._memory: every path that allocates N×N or more checks the memory first.

Available memory is patched down; the MemoryError must name the GiB needed and the alternatives,
and come before any forward pass or Jacobian block (those are patched to fail loudly).
"""

import numpy as np
import pytest
from _nets import mlp

from fastntk.empirical import _net, empirical_nngp_fn, empirical_ntk_fn, pseudo_ntk

MATCH = r"needs \d+\.\d+ GiB.*trace_axes=\(-1,\).*pseudo_ntk.*smaller batches.*implementation=3"


@pytest.fixture
def no_memory(monkeypatch):
    """1 KiB available, and no forward pass allowed (the check must come first)."""
    monkeypatch.setattr("fastntk._validation.available_memory", lambda: 1024)

    def forward(*args):
        raise AssertionError("a forward pass ran before the memory check")

    monkeypatch.setattr(_net.Net, "forward", forward)


def _net_and_data(rng, n=40):
    init_fn, apply_fn, _ = mlp((8,), 3)
    x = rng.standard_normal((n, 4))
    return apply_fn, x, init_fn(0, x.shape)[1]


@pytest.mark.parametrize("implementation", [1, 3])
@pytest.mark.parametrize(("trace_axes", "diagonal_axes"), [((-1,), ()), ((), ()), ((), (-1,)), ((0,), ())])
def test_fastntk_network_paths(no_memory, trace_axes, diagonal_axes, implementation, rng):
    apply_fn, x, params = _net_and_data(rng)
    ntk_fn = empirical_ntk_fn(apply_fn, trace_axes, diagonal_axes, implementation=implementation)
    with pytest.raises(MemoryError, match=MATCH):
        ntk_fn(x, None, params)
    with pytest.raises(MemoryError, match=MATCH):
        ntk_fn(x, x[:40], params)


def test_pseudo_ntk_and_nngp(no_memory, rng):
    apply_fn, x, params = _net_and_data(rng)
    with pytest.raises(MemoryError, match=MATCH):
        pseudo_ntk(apply_fn, x, None, params)
    with pytest.raises(MemoryError, match="empirical NNGP"):
        empirical_nngp_fn(apply_fn)(x, None, params)
    with pytest.raises(MemoryError, match="empirical NNGP"):
        empirical_nngp_fn(apply_fn, ())(x, x, params)


def test_estimate_counts_the_result_and_the_features(monkeypatch, rng):
    """With 4 MiB: the trace NTK of 300 points fits (0.7 MB), the full one (6.5 MB) does not, and the
    features of a 2048-wide network (300·2048·8 B per layer input) do not either."""
    monkeypatch.setattr("fastntk._validation.available_memory", lambda: 4 * 2**20)
    apply_fn, x, params = _net_and_data(rng, 300)
    assert empirical_ntk_fn(apply_fn)(x, None, params).shape == (300, 300)
    with pytest.raises(MemoryError, match=r"full empirical NTK of shape \(300, 300, 3, 3\)"):
        empirical_ntk_fn(apply_fn, ())(x, None, params)
    init_fn, wide_fn, _ = mlp((2048, 2048), 1)
    with pytest.raises(MemoryError, match=r"trace empirical NTK of shape \(300, 300\)"):
        empirical_ntk_fn(wide_fn)(x, None, init_fn(0, x.shape)[1])


@pytest.mark.parametrize("implementation", [1, 2])
def test_torch_paths(monkeypatch, implementation):
    torch = pytest.importorskip("torch")
    from fastntk.empirical import _torch

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = torch.nn.Linear(4, 3)

        def forward(self, x):
            return torch.tanh(self.inp(x)) + x[:, :3]

    monkeypatch.setattr("fastntk._validation.available_memory", lambda: 1024)
    monkeypatch.setattr(_torch._Shim, "jacobian", lambda *a: pytest.fail("a Jacobian block ran first"))
    monkeypatch.setattr(_torch._Shim, "ntvp", lambda *a: pytest.fail("an NTK-vector product ran first"))
    x = np.random.default_rng(0).standard_normal((40, 4))
    with pytest.raises(MemoryError, match=MATCH):
        empirical_ntk_fn(Residual().double(), (), implementation=implementation)(x)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).double()
    monkeypatch.setattr(_net.Net, "forward", lambda *a: pytest.fail("a forward pass ran first"))
    with pytest.raises(MemoryError, match=MATCH):
        empirical_ntk_fn(seq)(x)


@pytest.mark.parametrize("implementation", [1, 2])
def test_jax_paths(monkeypatch, implementation):
    jnp = pytest.importorskip("jax.numpy")
    from fastntk.empirical import _jax

    monkeypatch.setattr("fastntk._validation.available_memory", lambda: 1024)
    monkeypatch.setattr(_jax._Shim, "jacobian", lambda *a: pytest.fail("a Jacobian block ran first"))
    monkeypatch.setattr(_jax._Shim, "ntvp", lambda *a: pytest.fail("an NTK-vector product ran first"))
    rng = np.random.default_rng(0)
    p, x = {"W": rng.standard_normal((4, 3))}, rng.standard_normal((40, 4))
    with pytest.raises(MemoryError, match=MATCH):
        empirical_ntk_fn(lambda p, x: jnp.tanh(x @ p["W"]), (), implementation=implementation)(x, None, p)
    with pytest.raises(MemoryError, match=MATCH):
        pseudo_ntk(lambda p, x: jnp.tanh(x @ p["W"]), x, None, p, implementation=implementation)
