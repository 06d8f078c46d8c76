"""fastntk.stax against the neural-tangents reference fixtures."""

import numpy as np
import pytest
from conftest import RTOL, assert_close, fixture_paths, load_fixture

from fastntk import stax

RELU_FAMILY = ("relu", "leaky", "abrelu", "abs")


@pytest.mark.parametrize("path", fixture_paths("infinite"), ids=lambda p: p.stem)
def test_infinite_fixture(path):
    z, spec = load_fixture(path)
    _, _, kernel_fn = eval(spec["stax"], {"stax": stax})
    k = kernel_fn(z["x1"], z.get("x2"), ("nngp", "ntk"))
    coincident = "x2" not in z or "dup" in path.stem
    relu = any(a in path.stem for a in RELU_FAMILY)
    ntk_tol = RTOL["float64_coincident_relu_ntk"] if (relu and coincident) else RTOL["float64"]
    assert_close(k.nngp, z["nngp"], RTOL["float64"], "nngp")
    assert_close(k.ntk, z["ntk"], ntk_tol, "ntk")
