"""neural-tangents 0.6.5 user code, imports changed to fastntk and nothing else, gives its numbers.

Each test runs one snippet of ``snippets.py`` (the README's, ``examples/``', the notebooks' and
neural-tangents' tests' fully-connected code) with ``nt = fastntk``, ``stax = fastntk.stax``,
``predict = fastntk.predict`` on the inputs stored in ``data/compat.npz``, and compares every
result it records with neural-tangents 0.6.5's (``generate_compat.py``; jax 0.4.23 there, the
installed jax here). Results are compared as they were recorded, so a snippet that raises part-way
is reported with the error after its earlier results were checked.

Tolerances are normwise, max|a - b| / max|b| per result (:data:`RTOL`, :data:`RTOL_RESULT`), with
their reasons. Parameters drawn from the same key differ between the two jax versions by 1 or 2 ulp in
a few entries (tests/test_frameworks.py), so even exact code paths are compared to a tolerance.
"""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

import snippets
from conftest import RTOL as RTOL_TABLE

import fastntk as nt
from fastntk import predict, stax

FIXTURE = Path(__file__).parent / "data" / "compat.npz"

#: float64 kernels, empirical kernels, outputs and kernel-regression predictions: the same
#: mathematics in another order (BLAS blocking, fused recursions, LAPACK routines); measured
#: ≤ 1e-14 here, kernel solves with diag_reg ≥ 1e-4 or well-separated inputs included.
F64 = (RTOL_TABLE["float64"], "float64, the same mathematics in another order")
#: The ReLU NTK at coincident inputs (x2 = None): neural-tangents' arccos of a correlation rounded
#: near 1 loses half the digits there (tests/conftest.py); it reaches every prediction made from
#: that kernel.
RELU_NTK_DIAGONAL = (RTOL_TABLE["float64_coincident_relu_ntk"], "neural-tangents' ReLU NTK rounding at θ = 0")
#: Training loops: each step's rounding differences are carried by the later steps. The losses
#: here contract, so they grow little: measured ≤ 1e-14 (20 SGD steps of predict_test_mse_gd, 8
#: momentum steps of weight_space, 100 and 200 SGD steps of function_space and cookbook_train).
TRAINING = (1e-10, "training loop, rounding carried through every step")

#: Per snippet: (tolerance, reason).
RTOL = dict.fromkeys(snippets.SNIPPETS, F64)
RTOL.update(dict.fromkeys(("weight_space", "function_space", "cookbook_train", "cookbook_ensemble",
                           "predict_test_mse_gd", "vmap_ensemble"), TRAINING))
RTOL.update({
    # neural-tangents solves the ODE with jax's dopri5 at rtol = atol = 1.4e-8; its own result for
    # the MSE loss is 3e-9 off its closed form (mse_general vs mse_closed_form in the fixture).
    "predict_gradient_descent": (1e-7, "neural-tangents' ODE solution, 3e-9 off the exact flow"),
    # float32 (x64 off): a few float32 ulps (eps 1.2e-7); measured ≤ 1.5e-7.
    "float32_readme": (2e-6, "float32"),
})
#: Per result, where it needs other than its snippet's tolerance: (snippet, result) -> (rtol, reason).
#: Snippets run with their data as JAX arrays, and why. fastntk returns NumPy arrays for NumPy inputs
#: (README, "Migrating from neural-tangents"); neural-tangents returns JAX arrays whatever it is given.
JAX_DATA = {
    "infinite_fcn": "the example calls .block_until_ready() on predictions from NumPy data",
}
RTOL_RESULT = {
    **{("readme_infinite_kernel", key): RELU_NTK_DIAGONAL for key in ("ntk_11", "batched_11.ntk")},
    **{("readme_predict_ensemble", key): RELU_NTK_DIAGONAL
       for key in ("y_test_ntk", "unpacked.1", "y_test_ntk_t10", "y_train_ntk_t10")},
    **{("infinite_fcn", key): RELU_NTK_DIAGONAL for key in ("fx_test_ntk", "NTK test.net_loss")},
    # neural-tangents solves in float32, fastntk in float64: the float32 kernel's rounding times the
    # condition of K + 1e-2·tr(K)/N·I; measured ≤ 2.4e-7.
    # diag_reg=1e-4: the solve multiplies the kernels' rounding by cond(K + 1e-4·tr(K)/N·I) ~ 1e3.
    **{("cookbook_infinite", key): (1e-10, "kernel solve with diag_reg=1e-4: rounding times its condition")
       for key in ("nngp_mean", "nngp_std", "ntk_mean", "ntk_std")},
    **{("float32_readme", key): (1e-5, "float32 kernel solve (float32 in neural-tangents, float64 here)")
       for key in ("ntk_inf", "nngp_t1")},
}


def _fixture():
    z = np.load(FIXTURE, allow_pickle=False)
    return z, json.loads(str(z["spec"]))


Z, SPEC = _fixture()


def _inputs(name):
    prefix = f"{name}/in/"
    return {k[len(prefix):]: Z[k] for k in Z.files if k.startswith(prefix)}


def _assert_result(name, key, actual, expected_none):
    if key in expected_none:
        assert actual is None, f"{name}: {key} is {actual!r}; neural-tangents returns None"
        return
    assert actual is not None, f"{name}: {key} is None; neural-tangents returns an array"
    expected = Z[f"{name}/out/{key}"]
    assert actual.shape == expected.shape, f"{name}: {key} has shape {actual.shape}, expected {expected.shape}"
    if expected.dtype.kind in "biuUS":  # flags, integers, keys, dtype names: equal
        np.testing.assert_array_equal(actual, expected, err_msg=f"{name}: {key}")
        return
    assert actual.dtype == expected.dtype, f"{name}: {key} has dtype {actual.dtype}, expected {expected.dtype}"
    rtol, reason = RTOL_RESULT.get((name, key), RTOL[name])
    scale = np.abs(expected).max()
    err = np.abs(actual.astype(np.float64) - expected).max() / (scale if scale > 0 else 1.0)
    assert err <= rtol, f"{name}: {key}: normwise error {err:.3e} > {rtol:.0e} ({reason})"


def _param(name):
    """The snippet name; where neural-tangents itself warns about the user's model (a UserWarning or
    RuntimeWarning, such as FanIn's independence note), the same kind of warning is not an error here
    (pyproject turns warnings into errors). Its DeprecationWarnings are jax 0.4.23 internals."""
    categories = {w.split(":")[0] for w in SPEC["snippets"][name]["warnings"]} & {"UserWarning", "RuntimeWarning"}
    return pytest.param(name, marks=[pytest.mark.filterwarnings(f"ignore::{c}") for c in sorted(categories)])


@pytest.mark.parametrize("name", [_param(name) for name in snippets.SNIPPETS])
def test_snippet_matches_neural_tangents(name):
    spec = SPEC["snippets"][name]
    out, error = snippets.run(name, nt, stax, predict, _inputs(name), as_jax=name in JAX_DATA)
    for key, value in out.items():
        assert key in spec["outputs"], f"{name}: unexpected result {key}"
        _assert_result(name, key, value, spec["none"])
    if error is not None:
        raise error
    assert list(out) == spec["outputs"], f"{name}: results {list(out)}, expected {spec['outputs']}"


def test_fixture_covers_every_snippet():
    """The stored reference has exactly the snippets of snippets.py, each with its inputs."""
    assert set(SPEC["snippets"]) == set(snippets.SNIPPETS)
    assert SPEC["neural_tangents"] == "0.6.5"
    for name in snippets.SNIPPETS:
        assert _inputs(name), name
