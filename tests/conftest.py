"""Shared test helpers: reference fixtures and the per-dtype tolerance table."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy.special import erf as scipy_erf

DATA = Path(__file__).parent / "data"


def child_process(**env):
    """``cwd`` and ``env`` keyword arguments for a child Python process that must import the fastntk this
    session imported (in CI an installed one, which the source checkout, without the compiled module,
    must not shadow): run from the directory holding that package, with it first on PYTHONPATH, and
    the variables ``env`` set."""
    import fastntk

    home = str(Path(fastntk.__file__).parents[1])
    path = os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")]))
    return {"cwd": home, "env": {**os.environ, "PYTHONPATH": path, **env}}

#: Normwise relative tolerance max|a − b| / max|b| per comparison kind (tests/data/README.md).
RTOL = {
    "float64": 1e-12,
    "float64_coincident_relu_ntk": 1e-7,  # neural-tangents' own rounding at θ = 0
    "float32_vs_float64": 1e-5,
    "predict": 1e-10,
    "empirical": 1e-10,
}


def normwise_error(actual, expected):
    """max|actual − expected| / max|expected| (0 when both are 0)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    scale = np.abs(expected).max()
    err = np.abs(actual - expected).max()
    return err / scale if scale > 0 else err


def assert_close(actual, expected, rtol, what=""):
    err = normwise_error(actual, expected)
    assert err <= rtol, f"{what}: normwise error {err:.3e} > {rtol:.1e}"


#: What the library promises across memory layouts (out= views, memmaps), block sizes, BLAS
#: builds and SIMD variants: agreement to rounding, not bitwise. BLAS may block a Gram
#: differently for another leading dimension or alignment (1 ulp in a few entries seen on
#: AVX-512 OpenBLAS), and the ulps then pass through every layer; 256 eps leaves room for
#: that amplification (measured ≤ 5e-16 for float64 on the 2-core development machine).
ROUNDING = {np.dtype(np.float64): 256 * np.finfo(np.float64).eps, np.dtype(np.float32): 256 * np.finfo(np.float32).eps}


def assert_rounding(actual, expected, what=""):
    """actual equals expected up to rounding of actual's dtype (normwise, see ROUNDING)."""
    assert np.shape(actual) == np.shape(expected), f"{what}: shape {np.shape(actual)} != {np.shape(expected)}"
    assert_close(actual, expected, ROUNDING[np.asarray(actual).dtype], what)


def load_fixture(path):
    """(arrays dict, spec dict) of one reference .npz (no pickle)."""
    z = np.load(path, allow_pickle=False)
    arrays = {k: z[k] for k in z.files if k != "spec"}
    return arrays, json.loads(str(z["spec"]))


def fixture_paths(kind):
    return sorted((DATA / kind).glob("*.npz"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- Infinite-width kernel suite (test_stax, test_kernels, test_reference, ...) ----------

RTOL.update(
    {
        # Gauss–Hermite dual kernels: the Numba backend against the NumPy reference, same rule.
        "quadrature_same_rule": 1e-12,
        # φ' or E[φ'φ'] by a central difference (step ∛eps): rounding of the inputs, amplified by 1/h.
        "central_difference": 1e-10,
        # Row blocks of different heights: BLAS may round the Gram entries differently.
        "tiled_vs_untiled": 256 * np.finfo(np.float64).eps,  # see ROUNDING
        # fastntk against an mpmath (40-digit) evaluation of the recursion.
        "mpmath": 1e-14,
        # neural-tangents' (1 + 2K)² − 4K² for large K (inf_special_scale100_erf_*: ntk_diag*).
        "nt_erf_cancellation": 5e-12,
    }
)

#: neural-tangents activation names whose dual kernels share the arc-cosine (θ) path.
RELU_FAMILY = frozenset({"Relu", "LeakyRelu", "ABRelu", "Abs"})


def feature_points(n=12, d=6, seed=0):
    """(n, d) standard normal points (seeded) with a duplicated point (row 3 = row 1) and a zero one (row 5)."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    x[3] = x[1]
    x[5] = 0.0
    return x


def gram_error(phi, k):
    """‖Φ Φᵀ − K‖_F/‖K‖_F: how far features Φ (N, m) are from the kernel K (N, N)."""
    return np.linalg.norm(phi @ phi.T - k) / np.linalg.norm(k)


def has_coincident_pairs(x1, x2=None):
    """True when a non-zero row of x1 equals a row of x2 (x2 None: always, the diagonal).

    Zero rows are left out: their θ is π/2 by rule, not from rounded Gram entries.
    """
    if x2 is None:
        return True
    equal = (x1[:, None, :] == x2[None, :, :]).all(-1)
    return bool(equal[np.abs(x1).sum(1) > 0].any())


# Activations given as Python functions: defined once at module level, because Numba
# compiles each function once per process (a new lambda per test would recompile).
def np_sin(x):
    return np.sin(x)


def np_cos(x):
    return np.cos(x)


def np_tanh(x):
    return np.tanh(x)


def np_tanh_prime(x):
    return 1.0 - np.tanh(x) ** 2


def erf_nngp(cov12, var1, var2):
    """E[erf(u) erf(v)] (Williams 1997): (2/π) arcsin(2Σ₁₂ / √((1 + 2Σ₁₁)(1 + 2Σ₂₂)))."""
    return (2 / np.pi) * np.arctan2(2 * cov12, np.sqrt((1 + 2 * var1) * (1 + 2 * var2) - 4 * cov12**2))


def erf_d_nngp(cov12, var1, var2):
    """E[erf'(u) erf'(v)] = (4/π) / √((1 + 2Σ₁₁)(1 + 2Σ₂₂) − 4Σ₁₂²)."""
    return (4 / np.pi) / np.sqrt((1 + 2 * var1) * (1 + 2 * var2) - 4 * cov12**2)


@dataclass(frozen=True)
class ActivationCase:
    """One activation of the catalogue below.

    layer : a fastntk.stax layer
    rtol : normwise tolerance of the backend against fastntk._reference (same formulas)
    exact_dual : True when the dual kernels are exact (closed form or user-given), so that
        kernel_fn(x, x) is symmetric to rounding; a deg×deg quadrature is not symmetric in
        (Σ₁₁, Σ₂₂), to the size of its own error.
    """

    layer: tuple
    rtol: float
    exact_dual: bool


@functools.cache
def activation_catalogue():
    """{id: ActivationCase} of every kind of activation fastntk supports, with non-default
    parameters where the layer has any. Built once: each numerical activation compiles once."""
    from fastntk import stax

    exact, quad = RTOL["float64"], RTOL["quadrature_same_rule"]
    diff = RTOL["central_difference"]
    cases = {
        "relu": (stax.Relu(), exact, True),
        "leaky_relu": (stax.LeakyRelu(0.2), exact, True),
        "abrelu": (stax.ABRelu(-0.4, 1.3), exact, True),
        "abs": (stax.Abs(), exact, True),
        "erf": (stax.Erf(1.2, 0.8, 0.1), exact, True),
        "sigmoid_like": (stax.Sigmoid_like(), exact, True),
        "gelu": (stax.Gelu(), exact, True),
        "sin": (stax.Sin(1.1, 0.9, 0.3), exact, True),
        "cos": (stax.Cos(0.9, 1.2, -0.2), exact, True),
        "identity": (stax.Identity(), exact, True),
        "tanh": (stax.Tanh(), quad, False),
        "softplus": (stax.Softplus(), quad, False),
        "silu": (stax.Silu(), quad, False),
        "gelu_tanh": (stax.Gelu(approximate=True), quad, False),
        "numerical_df": (stax.ElementwiseNumerical(np_tanh, 20, np_tanh_prime), quad, False),
        "numerical": (stax.ElementwiseNumerical(np_sin, 20), diff, False),
        "elementwise_d": (stax.Elementwise(scipy_erf, erf_nngp, erf_d_nngp), exact, True),
        "elementwise": (stax.Elementwise(scipy_erf, erf_nngp), diff, True),
    }
    return {name: ActivationCase(*case) for name, case in cases.items()}


#: Hidden widths of the nets built by fc_net: distinct, so 'standard' fan-ins are exercised.
WIDTHS = (7, 3, 11, 5, 9)


def fc_net(layer, depth, parameterization="ntk", b_std=0.2, W_std=1.3):
    """stax.serial of depth × (Dense(WIDTHS[l]), layer) and a Dense(1) readout."""
    from fastntk import stax

    layers = []
    for width in WIDTHS[:depth]:
        layers += [stax.Dense(width, W_std, b_std, parameterization=parameterization), layer]
    return stax.serial(*layers, stax.Dense(1, W_std, b_std, parameterization=parameterization))
