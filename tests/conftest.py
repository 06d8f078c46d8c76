"""Shared test helpers: reference fixtures and the per-dtype tolerance table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"

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
