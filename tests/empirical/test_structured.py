"""fastntk.empirical._structured and _jacobian: neural-tangents fixtures, structured == Jacobian, tiles, dtypes."""


import numpy as np
import pytest
from _nets import TOL, mlp
from conftest import RTOL, assert_close, fixture_paths, load_fixture

from fastntk import stax
from fastntk.empirical import empirical_ntk_fn, pseudo_ntk


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
        init_fn, apply_fn, _ = mlp(widths, O, act, 1.3, b_std, parameterization=parameterization)
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


def test_identities_between_modes(rng):
    init_fn, apply_fn, _ = mlp((16, 8), 4, "gelu")
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
    init_fn, apply_fn, _ = mlp((12, 9), 3, "tanh")
    x1, x2 = rng.standard_normal((7, 4)), None if x2_none else rng.standard_normal((5, 4))
    _, params = init_fn(3, x1.shape)
    ntk_fn = empirical_ntk_fn(apply_fn, trace_axes)
    ref = ntk_fn(x1, x2, params)
    for rows in (1, 3):
        assert_close(ntk_fn(x1, x2, params, block_rows=rows), ref, TOL, f"block_rows={rows}")


def test_float32_follows_inputs_and_inputs_unchanged(rng):
    init_fn, apply_fn, _ = mlp((32,), 2)
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


@pytest.mark.parametrize(("trace_axes", "diagonal_axes"), [((-1,), ()), ((), (-1,)), ((), ())])
def test_upper_triangle_tiles_match_x2_given(trace_axes, diagonal_axes, rng):
    """x2=None (upper-triangle tiles, mirrored) == x2 = a copy of x1 (all tiles), several tilings."""
    init_fn, apply_fn, _ = mlp((8, 6), 3, "gelu")
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


def test_pseudo_ntk_approaches_trace_ntk(rng):
    """pNTK − trace eNTK = (1/O) Σ_{a≠b} Θ̂_ab, whose entries are O(m^(−1/2)) at
    initialisation (Mohamadi, Bae & Sutherland 2023, Thm. 4.1): log-log slope ≈ −1/2."""
    x = rng.standard_normal((10, 5))
    widths, errors = [64, 256, 1024, 4096], []
    for m in widths:
        init_fn, apply_fn, _ = mlp((m, m), 5, "relu")
        trace_fn = empirical_ntk_fn(apply_fn)
        errs = []
        for seed in range(3):
            _, params = init_fn(seed, x.shape)
            trace = trace_fn(x, None, params)
            errs.append(np.linalg.norm(pseudo_ntk(apply_fn, x, None, params) - trace) / np.linalg.norm(trace))
        errors.append(np.mean(errs))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.75 <= slope <= -0.3, (slope, errors)
