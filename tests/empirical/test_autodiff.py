"""fastntk.empirical._autodiff: the one block loop behind the torch and jax shims, run on a NumPy shim."""

import numpy as np
import pytest
from _nets import TOL
from conftest import assert_close

from fastntk.empirical import _autodiff


class LinearShim:
    """J(x)[i, a, p] = Σ_k x[i, k] T[k, a, p]: Jacobians and NTK-vector products in NumPy; counts calls."""

    def __init__(self, x1, x2, n_out=3, n_params=7, seed=0):
        self.T = np.random.default_rng(seed).standard_normal((x1.shape[1], n_out, n_params))
        self.x1, self.x2, self.n_out, self.n_params = x1, x2, n_out, n_params
        self.calls = 0

    def jacobian(self, x):
        self.calls += 1
        return np.einsum("ik,kap->iap", x, self.T)

    def ntvp(self, xa, xb):
        return np.einsum("iap,jbp->ijab", self.jacobian(xa), self.jacobian(xb))


@pytest.mark.parametrize("ntvp", [False, True])
@pytest.mark.parametrize("block_rows", [None, 1, 2, 5])
@pytest.mark.parametrize("sym", [True, False])
def test_blocks_equal_the_whole_contraction(sym, block_rows, ntvp, rng):
    x1, x2 = rng.standard_normal((5, 4)), None if sym else rng.standard_normal((3, 4))
    shim = LinearShim(x1, x2)
    J1, J2 = shim.jacobian(x1), shim.jacobian(x1 if sym else x2)
    full = np.einsum("iap,jbp->ijab", J1, J2)
    refs = {"full": full, "diag": np.einsum("ijaa->ija", full), "trace": np.einsum("ijaa->ij", full)}
    for mode, ref in refs.items():
        out = _autodiff.ntk(shim, mode, ntvp, block_rows, np.float64)
        assert out.dtype == np.float64
        assert_close(out, ref, TOL, f"{mode} block_rows={block_rows}")


def test_diagonal_blocks_reuse_the_row_jacobian(rng):
    """x2 None with 3 blocks: 3 row Jacobians + 6 off-diagonal column Jacobians, not 3 + 9."""
    shim = LinearShim(rng.standard_normal((6, 4)), None)
    _autodiff.ntk(shim, "trace", False, 2, np.float64)
    assert shim.calls == 3 + 6


def test_result_dtype_is_the_requested_one(rng):
    x = rng.standard_normal((4, 2)).astype(np.float32)
    out = _autodiff.ntk(LinearShim(x, None), "full", False, None, np.float32)
    assert out.dtype == np.float32
    assert out.shape == (4, 4, 3, 3)
