"""fastntk.empirical._torch: nn.Sequential (structured) and generic modules (torch.func)."""


import numpy as np
import pytest
from _nets import TOL
from conftest import assert_close

from fastntk import stax
from fastntk.empirical import empirical_ntk_fn


def _torch_reference(model, x1, x2):
    """Full (N1, N2, O, O) NTK by PyTorch's tutorial recipe: vmap(jacrev) + einsum."""
    torch = pytest.importorskip("torch")
    from torch.func import functional_call, jacrev, vmap

    theta = {k: v.detach() for k, v in model.named_parameters()}

    def f(th, x):
        return functional_call(model, th, (x[None],))[0]

    def jac(x):
        return [j.flatten(2) for j in vmap(jacrev(f), (None, 0))(theta, x).values()]

    return sum(torch.einsum("iap,jbp->ijab", a, b) for a, b in zip(jac(x1), jac(x2))).numpy()


def _torch_act(name):
    nn = pytest.importorskip("torch").nn
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU("tanh"),
            "sigmoid": nn.Sigmoid, "silu": nn.SiLU, "softplus": lambda: nn.Softplus(beta=2.0, threshold=1.5),
            "leaky": lambda: nn.LeakyReLU(0.1), "identity": nn.Identity}[name]()


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", "gelu_tanh", "sigmoid", "silu", "softplus", "leaky",
                                 "identity"])
def test_torch_sequential_matches_torch_func(act):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 7), _torch_act(act),
                          nn.Sequential(nn.Linear(7, 5, bias=False), _torch_act(act)), nn.Linear(5, 3)).double()
    x1, x2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    full = _torch_reference(model, x1, x2)
    refs = {"trace": np.einsum("ijaa->ij", full) / 3, "full": full, "diag": np.einsum("ijaa->ija", full)}
    for (ta, da), name in zip((((-1,), ()), ((), ()), ((), (-1,))), ("trace", "full", "diag")):
        for implementation in (3, 1, 2):
            k = empirical_ntk_fn(model, ta, da, implementation=implementation)(x1, x2)
            assert isinstance(k, torch.Tensor)
            assert k.dtype == torch.float64
            assert_close(k.numpy(), refs[name], TOL, f"{name} implementation={implementation}")


def test_torch_generic_module_and_params():
    """A non-Sequential module (torch.func path) and params given as a dict; NumPy in, NumPy out."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.hidden, self.out = nn.Linear(3, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = torch.tanh(self.inp(x))
            return self.out(h + torch.relu(self.hidden(h)))

    torch.manual_seed(1)
    model = Residual().double()
    x = np.random.default_rng(0).standard_normal((5, 3))
    ref = _torch_reference(model, torch.from_numpy(x), torch.from_numpy(x))
    for implementation, rows in ((0, None), (2, None), (1, 2), (2, 2)):
        k = empirical_ntk_fn(model, (), implementation=implementation)(x, None, block_rows=rows)
        assert isinstance(k, np.ndarray)
        assert_close(k, ref, TOL, f"implementation={implementation} block_rows={rows}")
    assert_close(empirical_ntk_fn(model)(x), np.einsum("ijaa->ij", ref) / 2, TOL, "trace")
    assert_close(empirical_ntk_fn(model, (0,))(x), np.einsum("iiab->ab", ref) / 5, TOL, "trace over the batch axis")
    # params dict = the module's parameters replaced
    seq = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    params = {k: torch.randn_like(v) for k, v in seq.named_parameters()}
    k_params = empirical_ntk_fn(seq)(x, None, params)
    with torch.no_grad():
        for k, v in seq.named_parameters():
            v.copy_(params[k])
    assert_close(k_params, empirical_ntk_fn(seq)(x), TOL, "params dict")


def test_torch_linear_equals_stax_standard(rng):
    """nn.Linear stack == stax Dense(parameterization='standard') with W = weightᵀ, b = bias; float32 kept."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 9), nn.ReLU(), nn.Linear(9, 3))
    apply_fn = stax.serial(stax.Dense(9, 1.0, 1.0, parameterization="standard"), stax.Relu(), stax.Dense(3, 1.0, 1.0, parameterization="standard"))[1]
    lin = [m for m in model if isinstance(m, nn.Linear)]
    params = [(lin[0].weight.detach().numpy().T, lin[0].bias.detach().numpy()[None]), (),
              (lin[1].weight.detach().numpy().T, lin[1].bias.detach().numpy()[None])]
    x = rng.standard_normal((7, 4)).astype(np.float32)
    k = empirical_ntk_fn(model)(x)
    assert k.dtype == np.float32
    assert_close(k, empirical_ntk_fn(apply_fn)(x, None, params), 1e-6)


def test_torch_bad_inputs():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ntk_fn = empirical_ntk_fn(model)
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="params lacks"):
        ntk_fn(x, None, {"0.weight": model[0].weight})
    with pytest.raises(ValueError, match=r"params\['0.bias'\]"):
        ntk_fn(x, None, {**dict(model.named_parameters()), "0.bias": torch.zeros(5)})
    with pytest.raises(TypeError, match="params"):
        ntk_fn(x, None, [1, 2])
    with pytest.raises(ValueError, match="x2"):
        ntk_fn(x, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="x1 must have 3 features"):
        ntk_fn(np.ones((2, 5), np.float32))


def test_torch_bad_params_and_inputs_name_the_argument():
    """NaN/inf, integer and misshapen parameters, and inputs the module cannot take."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return torch.tanh(self.lin(x)) + x[:, :2]

    x = np.ones((2, 3))
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    res = Residual().double()
    own = dict(seq.named_parameters())
    with pytest.raises(ValueError, match=r"params\['0.weight'\] contains NaN"):
        empirical_ntk_fn(seq)(x, None, {**own, "0.weight": torch.full((4, 3), float("nan"))})
    with pytest.raises(ValueError, match=r"params\['lin.bias'\] contains inf"):
        empirical_ntk_fn(res, implementation=1)(x, None, {"lin.weight": res.lin.weight,
                                                            "lin.bias": torch.full((2,), float("inf"))})
    with torch.no_grad():
        seq[2].bias[0] = float("nan")  # the module's own parameters are checked too
    with pytest.raises(ValueError, match=r"params\['2.bias'\] contains NaN"):
        empirical_ntk_fn(seq)(x)
    with pytest.raises(TypeError, match=r"params\['lin.weight'\] must be a floating-point tensor"):
        empirical_ntk_fn(res)(x, None, {"lin.weight": torch.ones((2, 3), dtype=torch.int64), "lin.bias": res.lin.bias})
    with pytest.raises(ValueError, match=r"params\['lin.weight'\] must have shape \(2, 3\)"):
        empirical_ntk_fn(res)(x, None, {"lin.weight": "ab", "lin.bias": res.lin.bias})
    with pytest.raises(ValueError, match=r"the module cannot be applied to x1 of shape \(2, 5\)"):
        empirical_ntk_fn(res)(np.ones((2, 5)))
    with pytest.raises(TypeError, match="x1 must be a float32 or float64"):
        empirical_ntk_fn(res)(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="x1 must be an array"):
        empirical_ntk_fn(res)(None)
