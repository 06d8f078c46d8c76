"""fastntk.empirical: fixtures from neural-tangents, structured vs brute force, limits, lazy regime."""

import sys

import numpy as np
import pytest
from conftest import RTOL, assert_close, fixture_paths, load_fixture

from fastntk import stax
from fastntk.predict import max_learning_rate
from fastntk.empirical import (
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk_fn,
    linearize,
    monte_carlo_kernel_fn,
    pseudo_ntk,
    train_and_track,
)

TOL = RTOL["empirical"]
ACTIVATIONS = {"relu": stax.Relu, "erf": stax.Erf, "gelu": stax.Gelu, "tanh": stax.Tanh,
               "sin": lambda: stax.Sin(1.2, 0.7, 0.3), "leaky": lambda: stax.LeakyRelu(0.1)}


def _mlp(widths, out_dim, act="relu", W_std=1.5, b_std=0.1, parameterization="ntk"):
    layers = []
    for m in widths:
        layers += [stax.Dense(m, W_std, b_std, parameterization), ACTIVATIONS[act]()]
    return stax.serial(*layers, stax.Dense(out_dim, W_std, b_std, parameterization))


def _fixture_params(z, init_fn, d):
    """Parameters from W0, b0, ... in the layout of init_fn (b absent when b_std=None)."""
    _, template = init_fn(0, (1, d))
    params, k = [], 0
    for p in template:
        if len(p) == 2:
            params.append((z[f"W{k}"], z.get(f"b{k}")))
            k += 1
        else:
            params.append(())
    return params


@pytest.mark.parametrize("implementation", [1, 3])
@pytest.mark.parametrize("path", fixture_paths("empirical"), ids=lambda p: p.stem)
def test_fixture(path, implementation):
    z, spec = load_fixture(path)
    init_fn, apply_fn, _ = eval(spec["stax"], {"stax": stax})
    params = _fixture_params(z, init_fn, z["x1"].shape[1])
    x1, x2 = z["x1"], z.get("x2")
    assert_close(apply_fn(params, x1), z["f1"], TOL, "f1")
    if x2 is not None:
        assert_close(apply_fn(params, x2), z["f2"], TOL, "f2")
    full = empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=implementation)(x1, x2, params)
    assert_close(full, z["ntk_full"], TOL, "ntk_full")
    trace = empirical_ntk_fn(apply_fn, implementation=implementation)(x1, x2, params)
    assert_close(trace, z["ntk_trace"], TOL, "ntk_trace")
    assert_close(pseudo_ntk(apply_fn, x1, x2, params, implementation=implementation), z["ntk_pseudo"], TOL, "pseudo")


def _all_kernels(apply_fn, x1, x2, params, implementation):
    return [empirical_ntk_fn(apply_fn, t, d, implementation=implementation)(x1, x2, params)
            for t, d in (((-1,), ()), ((), ()), ((), (-1,)))] + [
        pseudo_ntk(apply_fn, x1, x2, params, implementation=implementation)]


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("b_std", [0.2, None])
@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "tanh", "sin", "leaky"])
def test_structured_matches_brute_force(act, b_std, parameterization, rng):
    for widths, O, n1, n2 in (((7, 5), 3, 4, 3), ((6,), 1, 1, None), ((4, 5, 3), 2, 3, None)):
        init_fn, apply_fn, _ = _mlp(widths, O, act, 1.3, b_std, parameterization)
        x1 = rng.standard_normal((n1, 4))
        x2 = None if n2 is None else rng.standard_normal((n2, 4))
        _, params = init_fn(rng, x1.shape)
        for fast, brute in zip(_all_kernels(apply_fn, x1, x2, params, 3), _all_kernels(apply_fn, x1, x2, params, 1)):
            assert fast.shape == brute.shape
            assert_close(fast, brute, TOL, f"{widths} O={O}")


@pytest.mark.parametrize("layers", [
    (stax.Dense(5), stax.Dense(4, b_std=0.3), stax.Relu(), stax.Dense(3)),  # Dense after Dense
    (stax.Erf(), stax.Dense(6, b_std=0.1), stax.Gelu(), stax.Dense(3), stax.Sin()),  # act first and last
    (stax.Dense(6), stax.Relu(), stax.Identity(), stax.Dense(4), stax.Tanh(), stax.Erf(), stax.Dense(2)),
    (stax.Dense(3, parameterization="standard"),),  # a linear model
], ids=["dense-dense", "act-ends", "act-act", "linear"])
def test_unusual_layer_orders(layers, rng):
    init_fn, apply_fn, _ = stax.serial(*layers)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    _, params = init_fn(6, x1.shape)
    for fast, brute in zip(_all_kernels(apply_fn, x1, x2, params, 3), _all_kernels(apply_fn, x1, x2, params, 1)):
        assert_close(fast, brute, TOL)


@pytest.mark.parametrize(("trace_axes", "diagonal_axes", "shape"), [
    ((-1,), (), (5, 5)), ((), (), (5, 5, 3, 3)), ((), (-1,), (5, 5, 3)), ((0,), (), (3, 3)),
    ((), (0,), (5, 3, 3)), ((0,), (1,), (3,)), ((1,), (0,), (5,)), ((0, 1), (), ()), ((), (0, 1), (5, 3)),
])
def test_axes_match_brute_force(trace_axes, diagonal_axes, shape, rng):
    init_fn, apply_fn, _ = _mlp((6, 4), 3, "erf")
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    _, params = init_fn(1, x1.shape)
    fast = empirical_ntk_fn(apply_fn, trace_axes, diagonal_axes)(x1, x2, params)
    brute = empirical_ntk_fn(apply_fn, trace_axes, diagonal_axes, implementation=1)(x1, x2, params)
    assert fast.shape == shape
    assert_close(fast, brute, TOL)


def test_identities_between_modes(rng):
    init_fn, apply_fn, _ = _mlp((16, 8), 4, "gelu")
    x1, x2 = rng.standard_normal((6, 3)), rng.standard_normal((5, 3))
    _, params = init_fn(2, x1.shape)
    full = empirical_ntk_fn(apply_fn, ())(x1, x2, params)
    diag = empirical_ntk_fn(apply_fn, (), (-1,))(x1, x2, params)
    trace = empirical_ntk_fn(apply_fn)(x1, x2, params)
    assert_close(diag, np.einsum("ijaa->ija", full), TOL, "diag")
    assert_close(trace, diag.mean(-1), TOL, "trace")
    assert_close(pseudo_ntk(apply_fn, x1, x2, params), full.sum((2, 3)) / 4, TOL, "pseudo")
    sym = empirical_ntk_fn(apply_fn, ())(x1, None, params)
    assert_close(sym, sym.transpose(1, 0, 3, 2), TOL, "symmetry")
    assert np.linalg.eigvalsh(empirical_ntk_fn(apply_fn)(x1, None, params)).min() > -1e-10


@pytest.mark.parametrize("trace_axes", [(-1,), ()])
@pytest.mark.parametrize("x2_none", [True, False])
def test_tiled_equals_untiled(trace_axes, x2_none, rng):
    init_fn, apply_fn, _ = _mlp((12, 9), 3, "tanh")
    x1, x2 = rng.standard_normal((7, 4)), None if x2_none else rng.standard_normal((5, 4))
    _, params = init_fn(3, x1.shape)
    ntk_fn = empirical_ntk_fn(apply_fn, trace_axes)
    ref = ntk_fn(x1, x2, params)
    for rows in (1, 3):
        assert_close(ntk_fn(x1, x2, params, block_rows=rows), ref, TOL, f"block_rows={rows}")


def test_float32_follows_inputs_and_inputs_unchanged(rng):
    init_fn, apply_fn, _ = _mlp((32,), 2)
    x = rng.standard_normal((4, 3))
    _, params = init_fn(0, x.shape)
    x_copy, w_copy = x.copy(), params[0][0].copy()
    k64 = empirical_ntk_fn(apply_fn)(x, None, params)
    k32 = empirical_ntk_fn(apply_fn)(x.astype(np.float32), None, params)
    assert k64.dtype == np.float64
    assert k32.dtype == np.float32
    assert_close(k32, k64, RTOL["float32_vs_float64"])
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(params[0][0], w_copy)


def test_linearize_matches_central_difference(rng):
    init_fn, apply_fn, _ = _mlp((10, 8), 3, "erf", b_std=0.3)
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


def test_nngp_and_kernel_fn(rng):
    init_fn, apply_fn, _ = _mlp((8,), 3, "relu")
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


def test_width_limit_rate(rng):
    """‖Θ̂_m − Θ‖/‖Θ‖ = O(m^(−1/2)): the log-log slope over widths is about −1/2."""
    x = rng.standard_normal((8, 6))
    widths, errors = [64, 256, 1024, 4096], []
    for m in widths:
        init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(m, 1.5, 0.1), stax.Relu(), stax.Dense(m, 1.5, 0.1),
                                                   stax.Erf(), stax.Dense(4, 1.5, 0.1))
        inf = kernel_fn(x, None, "ntk")
        ntk_fn = empirical_ntk_fn(apply_fn)
        errors.append(np.mean([np.linalg.norm(ntk_fn(x, None, init_fn(s, x.shape)[1]) - inf) / np.linalg.norm(inf)
                               for s in range(3)]))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.7 <= slope <= -0.3, (slope, errors)


def test_monte_carlo_running_average(rng):
    init_fn, apply_fn, kernel_fn = _mlp((256,), 2, "relu")
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
        init_fn, apply_fn, _ = _mlp((m,), 1, "relu")
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
        init_fn, apply_fn, _ = _mlp((m,), 2, "erf")
        _, params = init_fn(2, x_train.shape)
        lr = 0.9 * max_learning_rate(empirical_ntk_fn(apply_fn)(x_train, None, params), y.size)
        rec = train_and_track(apply_fn, params, x_train, y, x_test, learning_rate=lr, n_steps=600, record_every=600)
        assert rec["loss"][-1] < 1e-6 * rec["loss"][0], m  # converged
        gaps[m] = rec["kr_gap"][-1]
    assert gaps[4096] < gaps[512] < gaps[32], gaps
    assert gaps[4096] < 0.1 * gaps[32], gaps


def test_pseudo_ntk_approaches_trace_ntk(rng):
    """pNTK − trace eNTK = (1/O) Σ_{a≠b} Θ̂_ab, whose entries are O(m^(−1/2)) at
    initialisation (Mohamadi, Bae & Sutherland 2023, Thm. 4.1): log-log slope ≈ −1/2."""
    x = rng.standard_normal((10, 5))
    widths, errors = [64, 256, 1024, 4096], []
    for m in widths:
        init_fn, apply_fn, _ = _mlp((m, m), 5, "relu")
        trace_fn = empirical_ntk_fn(apply_fn)
        errs = []
        for seed in range(3):
            _, params = init_fn(seed, x.shape)
            trace = trace_fn(x, None, params)
            errs.append(np.linalg.norm(pseudo_ntk(apply_fn, x, None, params) - trace) / np.linalg.norm(trace))
        errors.append(np.mean(errs))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.75 <= slope <= -0.3, (slope, errors)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"trace_axes": (2,)}, ValueError, "trace_axes"),
    ({"trace_axes": "a"}, TypeError, "trace_axes"),
    ({"trace_axes": (-1,), "diagonal_axes": (-1,)}, ValueError, "disjoint"),
    ({"implementation": 7}, ValueError, "implementation"),
    ({"vmap_axes": 1}, ValueError, "vmap_axes"),
])
def test_bad_construction(kwargs, exc, match):
    _, apply_fn, _ = _mlp((4,), 1)
    with pytest.raises(exc, match=match):
        empirical_ntk_fn(apply_fn, **kwargs)


def test_bad_inputs(rng, monkeypatch):
    init_fn, apply_fn, _ = _mlp((4,), 2)
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


# --------------------------------------------------------------------------- symmetric tiles (x2=None)
@pytest.mark.parametrize(("trace_axes", "diagonal_axes"), [((-1,), ()), ((), (-1,)), ((), ())])
def test_upper_triangle_tiles_match_x2_given(trace_axes, diagonal_axes, rng):
    """x2=None (upper-triangle tiles, mirrored) == x2 = a copy of x1 (all tiles), several tilings."""
    init_fn, apply_fn, _ = _mlp((8, 6), 3, "gelu")
    x = rng.standard_normal((300, 3))  # > 128 rows: the automatic tiling splits the triangle
    _, params = init_fn(9, x.shape)
    ntk_fn = empirical_ntk_fn(apply_fn, trace_axes, diagonal_axes)
    ref = ntk_fn(x, x.copy(), params)
    for rows in (None, 7, 300):
        sym = ntk_fn(x, None, params, block_rows=rows)
        assert_close(sym, ref, TOL, f"block_rows={rows}")
        mirrored = sym.transpose((1, 0, 3, 2)[:sym.ndim] if sym.ndim != 3 else (1, 0, 2))
        iu = np.triu_indices(300, 1)  # exact: the lower triangle is a copy of the upper one
        np.testing.assert_array_equal(sym[iu], mirrored[iu])


# --------------------------------------------------------------------------- PyTorch modules
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
    apply_fn = stax.serial(stax.Dense(9, 1.0, 1.0, "standard"), stax.Relu(), stax.Dense(3, 1.0, 1.0, "standard"))[1]
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


# --------------------------------------------------------------------------- plain JAX functions
@pytest.fixture
def jax64():
    """jax with jax_enable_x64 on for the test, restored afterwards."""
    jax = pytest.importorskip("jax")
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", old)


def _jax_mlp(params, x):
    """Dense(7) → tanh → Dense(3), 'standard' parameterization z = h W + b, params [(W0, b0), (W1, b1)]."""
    jnp = pytest.importorskip("jax.numpy")
    (W0, b0), (W1, b1) = params
    return jnp.tanh(x @ W0 + b0) @ W1 + b1


def _jax_reference(f, params, x):
    """Full (N, N, O, O) NTK of the rows x by jax.jacobian of the whole batch, contracted leaf by leaf."""
    jax = pytest.importorskip("jax")
    jac = [np.asarray(j).reshape(x.shape[0], -1, int(np.prod(j.shape[2:], dtype=int)))
           for j in jax.tree_util.tree_leaves(jax.jit(jax.jacobian(f))(params, x))]
    return sum(np.einsum("iap,jbp->ijab", a, a) for a in jac)


@pytest.mark.parametrize("implementation", [1, 2, 3])
def test_jax_mlp_equals_stax_standard(jax64, implementation, rng):
    """A jax.numpy MLP == the same stax network ('standard'): trace, full, diagonal, pseudo; x2 None or given."""
    init_fn, apply_fn, _ = stax.serial(stax.Dense(7, 1.0, 1.0, "standard"), stax.Tanh(),
                                       stax.Dense(3, 1.0, 1.0, "standard"))
    x1, x2 = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    _, params = init_fn(rng, x1.shape)
    jparams = [params[0], params[2]]
    for t, d in (((-1,), ()), ((), ()), ((), (-1,))):
        for xb, rows in ((x2, None), (None, None), (None, 2)):
            ref = empirical_ntk_fn(apply_fn, t, d)(x1, xb, params)
            k = empirical_ntk_fn(_jax_mlp, t, d, implementation=implementation)(x1, xb, jparams, block_rows=rows)
            assert isinstance(k, np.ndarray)
            assert k.dtype == np.float64
            assert_close(k, ref, TOL, f"trace_axes={t} diagonal_axes={d} x2={xb is not None} block_rows={rows}")
    assert_close(pseudo_ntk(_jax_mlp, x1, x2, jparams, implementation=implementation),
                 pseudo_ntk(apply_fn, x1, x2, params), TOL, "pseudo")


def test_jax_generic_function_against_jacobian(jax64, rng):
    """A residual tanh-of-a-sum function with a nested dict pytree: == jax.jacobian einsum; 1 == 2."""
    import functools

    jnp = jax64.numpy

    def f(p, x):
        h = jnp.tanh(x @ p["inp"]["W"] + p["inp"]["b"])
        return (h + jnp.tanh(h @ p["hidden"] + x[:, :1])) @ p["out"][0]

    p = {"inp": {"W": rng.standard_normal((3, 6)), "b": rng.standard_normal(6)},
         "hidden": rng.standard_normal((6, 6)) / 2, "out": [rng.standard_normal((6, 2))]}
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    ref = _jax_reference(f, p, np.concatenate([x1, x2]))
    full, sym = ref[:5, 5:], ref[:5, :5]
    for implementation in (1, 2):
        ntk = functools.partial(empirical_ntk_fn, f, implementation=implementation)
        assert_close(ntk(())(x1, x2, p), full, TOL, f"full implementation={implementation}")
        assert_close(ntk(())(x1, None, p, block_rows=2), sym, TOL, f"x2=None implementation={implementation}")
        assert_close(ntk()(x1, x2, p), np.einsum("ijaa->ij", full) / 2, TOL, "trace")
        assert_close(ntk((), (-1,))(x1, x2, p), np.einsum("ijaa->ija", full), TOL, "diagonal")
        assert_close(ntk((0,))(x1, None, p), np.einsum("iiab->ab", sym) / 5, TOL, "trace over the batch axis")
        assert_close(pseudo_ntk(f, x1, x2, p, implementation=implementation), full.sum((2, 3)) / 2, TOL, "pseudo")


def test_jax_float32_follows_inputs(rng):
    """float32 inputs → float32 result; float64 inputs → float64 even with jax_enable_x64 off."""
    jax = pytest.importorskip("jax")
    x = rng.standard_normal((6, 4))
    _, params = stax.serial(stax.Dense(7, 1.0, 1.0, "standard"), stax.Tanh(),
                            stax.Dense(3, 1.0, 1.0, "standard"))[0](rng, x.shape)
    jparams = [params[0], params[2]]
    ntk_fn = empirical_ntk_fn(_jax_mlp)
    k32 = ntk_fn(jax.numpy.asarray(x, np.float32), None, jparams)
    k64 = ntk_fn(x, None, jparams)
    assert isinstance(k32, np.ndarray)
    assert (k32.dtype, k64.dtype) == (np.float32, np.float64)
    assert_close(k32, k64, RTOL["float32_vs_float64"], "float32")


def test_jax_bad_inputs(monkeypatch, rng):
    import sys

    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    p = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    x = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match=r"f\(params, x\) must return an array of shape \(N, O\)"):
        empirical_ntk_fn(lambda p, x: (x @ p["W"])[..., None])(x, None, p)
    with pytest.raises(ValueError, match=r"got shape \(\)"):
        empirical_ntk_fn(lambda p, x: jnp.sum(x @ p["W"]))(x, None, p)
    f = empirical_ntk_fn(lambda p, x: jnp.tanh(x @ p["W"]) + p["b"])
    with pytest.raises(TypeError, match=r"params\['b'\]"):
        f(x, None, {**p, "b": np.arange(2)})
    with pytest.raises(ValueError, match="params must be a pytree"):
        f(x, None, {})
    with pytest.raises(ValueError, match="x2"):
        f(x, np.ones((2, 4)), p)
    with pytest.raises(ValueError, match="block_rows"):
        f(x, None, p, block_rows=0)
    with pytest.raises(TypeError, match="jax cannot trace"):
        empirical_ntk_fn(lambda p, x: np.asarray(x) @ p["W"])(x, None, p)
    monkeypatch.delitem(sys.modules, "jax")  # without jax imported, an unknown callable is refused
    with pytest.raises(TypeError, match="apply_fn"):
        empirical_ntk_fn(lambda p, x: x)
