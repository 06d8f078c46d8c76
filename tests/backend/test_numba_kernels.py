"""fastntk._backend.numba_kernels: Gauss–Hermite dual kernels, against their NumPy twin
``fastntk._reference._gauss_hermite_dual`` (same rule, so to rounding)."""

import numpy as np
import pytest
import scipy.special
from conftest import (
    RTOL,
    activation_catalogue,
    assert_close,
    np_sin,
    np_tanh,
    np_tanh_prime,
)

from fastntk import _reference
from fastntk._backend import numba_kernels
from fastntk.activations import QuadratureDual, central_difference


def _tile(n1=9, n2=7, seed=0, zero_variance=True):
    """Σ₁₂ (n1, n2) with variances v1 (n1,), v2 (n2,): ρ uniform in [−1, 1] plus ρ = ±1
    exactly, and (optionally) a zero variance in each batch."""
    rng = np.random.default_rng(seed)
    v1, v2 = rng.uniform(0.05, 4, n1), rng.uniform(0.05, 4, n2)
    if zero_variance:
        v1[2] = v2[3] = 0.0
    rho = rng.uniform(-1, 1, (n1, n2))
    rho[0, 0], rho[1, 1] = 1.0, -1.0
    return rho * np.sqrt(np.outer(v1, v2)), v1, v2


def _spec(act):
    """The QuadratureDual rule of a catalogue activation (shared with the other test modules,
    so Numba compiles each function once per session)."""
    return activation_catalogue()[act].layer.kernel_fn.spec.activation.dual


LAYERS = {
    "tanh_df": (QuadratureDual(np_tanh, np_tanh_prime, 20), RTOL["quadrature_same_rule"]),
    "tanh_df_deg3": (QuadratureDual(np_tanh, np_tanh_prime, 3), RTOL["quadrature_same_rule"]),
    "sin_central_difference": (_spec("numerical"), RTOL["central_difference"]),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_quad_tile_matches_reference(name):
    layer, rtol = LAYERS[name]
    k12, v1, v2 = _tile()
    sigma, t_dot = _reference.dual(layer, k12, v1[:, None], v2[None, :])
    k, t = k12.copy(), np.full_like(k12, 2.0)
    numba_kernels.quad_tile(layer, k, t, v1, v2)
    assert_close(k, sigma, rtol, "E[φφ]")
    assert_close(t, 2.0 * t_dot, rtol, "Θ·E[φ'φ']")


def test_quad_tile_nngp_only_gives_the_same_nngp():
    layer, _ = LAYERS["tanh_df"]
    k12, v1, v2 = _tile()
    with_ntk, alone = k12.copy(), k12.copy()
    numba_kernels.quad_tile(layer, with_ntk, np.ones_like(k12), v1, v2)
    numba_kernels.quad_tile(layer, alone, None, v1, v2)
    np.testing.assert_array_equal(alone, with_ntk)


def test_quad_tile_on_a_strided_block():
    """The driver passes row blocks of a larger result (row stride > n2)."""
    layer, rtol = LAYERS["tanh_df"]
    k12, v1, v2 = _tile()
    big_k, big_t = np.zeros((9, 12)), np.zeros((9, 12))
    big_k[:, 3:10], big_t[:, 3:10] = k12, 1.0
    numba_kernels.quad_tile(layer, big_k[:, 3:10], big_t[:, 3:10], v1, v2)
    sigma, t_dot = _reference.dual(layer, k12, v1[:, None], v2[None, :])
    assert_close(big_k[:, 3:10], sigma, rtol, "E[φφ]")
    assert_close(big_t[:, 3:10], t_dot, rtol, "E[φ'φ']")
    assert not big_k[:, :3].any()
    assert not big_k[:, 10:].any()


@pytest.mark.parametrize("name", list(LAYERS))
def test_quad_diag_matches_reference(name):
    layer, rtol = LAYERS[name]
    k = np.random.default_rng(1).uniform(0, 4, 11)
    k[3] = 0.0
    sigma, t_dot = _reference.dual(layer, k, k, k)
    kk, t = k.copy(), np.full_like(k, 3.0)
    numba_kernels.quad_diag(layer, kk, t)
    assert_close(kk, sigma, rtol, "E[φ²]")
    assert_close(t, 3.0 * t_dot, rtol, "Θ·E[φ'²]")


def test_quad_diag_equals_tile_at_rho_one():
    """On the diagonal (ρ = 1, √(1 − ρ²) = 0) the 2-D rule collapses to the 1-D rule."""
    layer, _ = LAYERS["tanh_df"]
    v = np.array([0.0, 0.3, 1.0, 2.5])
    k_tile, t_tile = np.diag(v).copy(), np.ones((4, 4))
    numba_kernels.quad_tile(layer, k_tile, t_tile, v, v)
    k_diag, t_diag = v.copy(), np.ones(4)
    numba_kernels.quad_diag(layer, k_diag, t_diag)
    assert_close(np.diag(k_tile), k_diag, 1e-15, "E[φ²]")
    assert_close(np.diag(t_tile), t_diag, 1e-15, "E[φ'²]")


def square(x):
    return x * x


def twice(x):
    return 2.0 * x


@pytest.mark.parametrize("deg", [3, 8])
def test_quad_tile_is_exact_for_polynomials(deg):
    """φ = x²: E[u²v²] = Σ₁₁Σ₂₂ + 2Σ₁₂², E[φ'(u)φ'(v)] = 4Σ₁₂ (Isserlis);
    exact for deg ≥ 3."""
    k12, v1, v2 = _tile(zero_variance=False)
    k, t = k12.copy(), np.ones_like(k12)
    numba_kernels.quad_tile(QuadratureDual(square, twice, deg), k, t, v1, v2)
    assert_close(k, np.outer(v1, v2) + 2 * k12**2, 1e-13, "E[u²v²]")
    assert_close(t, 4 * k12, 1e-13, "E[4uv]")


@pytest.mark.parametrize("deg", [2, 5, 25, 100])
def test_hermite_rule_integrates_gaussian_moments(deg):
    z, w = numba_kernels.hermite_rule(deg)
    assert z.shape == w.shape == (deg,)
    assert (w > 0).all()
    assert np.sum(w) == pytest.approx(1.0, abs=1e-14)
    assert np.sum(w * z**2) == pytest.approx(1.0, abs=1e-13)
    assert np.sum(w * z**3) == pytest.approx(0.0, abs=1e-13)
    if deg >= 3:
        assert np.sum(w * z**4) == pytest.approx(3.0, abs=1e-12)
    assert numba_kernels.hermite_rule(deg) is numba_kernels.hermite_rule(deg)


def test_compiled_functions_are_memoised():
    first = numba_kernels._compiled(np_tanh, np_tanh_prime)
    assert numba_kernels._compiled(np_tanh, np_tanh_prime) is first


def test_central_difference_is_compiled_from_fn():
    """A df made by activations.central_difference(fn) is rebuilt in Numba from fn."""
    df = central_difference(np_sin)
    fn_jit, df_jit = numba_kernels._compiled(np_sin, df)
    for x in (-7.5, -1.0, 0.0, 0.3, 12.0):
        assert fn_jit(x) == pytest.approx(np.sin(x), abs=1e-15)
        assert df_jit(x) == pytest.approx(df(np.float64(x)), abs=1e-15)
        assert df_jit(x) == pytest.approx(np.cos(x), abs=2e-9)


@pytest.mark.parametrize("ufunc", [np.tanh, np.exp], ids=lambda f: f.__name__)
def test_numpy_ufuncs_are_compiled(ufunc):
    assert numba_kernels._jit(ufunc)(0.7) == pytest.approx(ufunc(0.7), rel=1e-15)  # libm vs NumPy's SIMD


# --- NumPy fallback for functions Numba cannot compile ----------------------------------------


def _expit(x):
    """Through scipy.special.expit, which Numba cannot compile."""
    return scipy.special.expit(x)


def _sigmoid_tanh(x):
    """The same function in a form Numba compiles."""
    return 0.5 * (1 + np.tanh(0.5 * x))


def test_numpy_quadrature_equals_numba_for_a_compilable_function():
    from fastntk._backend import cpu

    layer, _ = LAYERS["tanh_df"]
    k12, v1, v2 = _tile(n1=23)
    k_nb, t_nb = k12.copy(), np.full_like(k12, 2.0)
    numba_kernels.quad_tile(layer, k_nb, t_nb, v1, v2)
    for block in (2**22, 7 * 20 * 20 * 3):  # one block, and blocks of 3 rows
        k_np, t_np = k12.copy(), np.full_like(k12, 2.0)
        cpu._QUAD_BLOCK_VALUES, saved = block, cpu._QUAD_BLOCK_VALUES
        try:
            cpu._quad_tile_numpy(layer, k_np, t_np, v1, v2)
        finally:
            cpu._QUAD_BLOCK_VALUES = saved
        assert_close(k_np, k_nb, RTOL["quadrature_same_rule"], "E[φφ]")
        assert_close(t_np, t_nb, RTOL["quadrature_same_rule"], "Θ·E[φ'φ']")
    d_nb, t_nb = v1.copy(), np.full_like(v1, 2.0)
    numba_kernels.quad_diag(layer, d_nb, t_nb)
    d_np, t_np = v1.copy(), np.full_like(v1, 2.0)
    cpu._quad_tile_numpy(layer, d_np[:, None], t_np[:, None], d_np, d_np, diagonal=True)
    assert_close(d_np, d_nb, RTOL["quadrature_same_rule"], "E[φ²]")
    assert_close(t_np, t_nb, RTOL["quadrature_same_rule"], "Θ·E[φ'²]")


def test_uncompilable_function_falls_back_to_numpy_with_one_warning():
    from fastntk import stax

    x = np.random.default_rng(5).standard_normal((6, 3))

    def net(layer):
        return stax.serial(stax.Dense(1, 1.0, 0.1), layer, stax.Dense(1, 1.0, 0.1))[2]

    with pytest.warns(RuntimeWarning, match="Numba could not compile fn='_expit'.*slower"):
        kernels = net(stax.ElementwiseNumerical(_expit, 30))(x, None)
    # Once per function: a second warning here would fail the test (filterwarnings = error).
    diag = net(stax.ElementwiseNumerical(_expit, 30))(x, None, "ntk", diagonal=True)
    same = net(stax.ElementwiseNumerical(_sigmoid_tanh, 30))(x, None)
    assert_close(kernels.nngp, same.nngp, RTOL["quadrature_same_rule"], "nngp")
    # φ' by a central difference: the two forms' rounding (~1e-16) amplified by 1/h ~ 2e5.
    assert_close(kernels.ntk, same.ntk, RTOL["central_difference"], "ntk")
    assert_close(diag, np.diag(same.ntk), RTOL["central_difference"], "diagonal ntk")
