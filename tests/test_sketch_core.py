"""fastntk._core's random-feature kernels (src/core.cpp over cpp/include/fastntk/sketch.hpp): the fast
Walsh–Hadamard transform and TensorSRHT against fastntk._reference and an explicit Hadamard matrix, in
float64 and float32, on edge inputs and strided views; TensorSRHT's unbiasedness; the glue's checks."""

import numpy as np
import pytest
import scipy.linalg
from conftest import assert_rounding

from fastntk import _core, _reference

DTYPES = (np.float64, np.float32)


def _fwht(a):
    """_core.fwht on a copy of a (its dtype kept); returns the copy."""
    a = np.array(a)
    _core.fwht(a)
    return a


def _signs(rng, n, dtype=np.float64):
    return rng.choice(np.array([-1.0, 1.0], dtype=dtype), n)


def _srht_inputs(rng, n, p, q, P, Q, m, dtype=np.float64):
    """(x, y, signs_x, signs_y, index_x, index_y): standard normal rows, ±1 signs, uniform indices."""
    x = rng.standard_normal((n, p)).astype(dtype)
    y = rng.standard_normal((n, q)).astype(dtype)
    return x, y, _signs(rng, P, dtype), _signs(rng, Q, dtype), rng.integers(0, P, m), rng.integers(0, Q, m)


def _tensor_srht(x, y, signs_x, signs_y, index_x, index_y):
    """_core.tensor_srht into a new (N, m) out of x's dtype, NaN before the call (so every entry must be written)."""
    out = np.full((len(x), len(index_x)), np.nan, dtype=x.dtype)
    _core.tensor_srht(x, y, signs_x, signs_y, index_x, index_y, out)
    return out


def _reference_of(x, y, signs_x, signs_y, index_x, index_y):
    """The float64 reference of the same (possibly float32) inputs: input rounding is not the kernel's error."""
    return _reference.tensor_srht(x.astype(np.float64), y.astype(np.float64), signs_x, signs_y, index_x, index_y)


# --- Fast Walsh–Hadamard transform -------------------------------------------------------------


@pytest.mark.parametrize("n", [2**k for k in range(11)])
def test_fwht_of_the_identity_is_the_hadamard_matrix(n):
    """Rows of I_n H_n = H_n: the transform is Sylvester's H_n entry for entry (sums of ±1 and 0s are exact)."""
    np.testing.assert_array_equal(_fwht(np.eye(n)), scipy.linalg.hadamard(n))
    np.testing.assert_array_equal(_fwht(np.eye(n, dtype=np.float32)), scipy.linalg.hadamard(n))


@pytest.mark.parametrize("n", [2**k for k in range(11)])
def test_fwht_against_explicit_hadamard(n):
    a = np.random.default_rng(n).standard_normal((7, n))
    assert_rounding(_fwht(a), _reference.fwht(a), f"n = {n}")
    a32 = a.astype(np.float32)
    assert_rounding(_fwht(a32), _reference.fwht(a32), f"float32, n = {n}")  # float32 rounding of float64's result


def test_fwht_small_cases_by_hand():
    """Sylvester's order, H_4 = [[1, 1, 1, 1], [1, −1, 1, −1], [1, 1, −1, −1], [1, −1, −1, 1]]."""
    np.testing.assert_array_equal(_fwht(np.array([[5.0]])), [[5.0]])
    np.testing.assert_array_equal(_fwht(np.array([[1.0, 2.0]])), [[3.0, -1.0]])
    np.testing.assert_array_equal(_fwht(np.array([[1.0, 2.0, 3.0, 4.0]])), [[10.0, -2.0, -4.0, 0.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fwht_edge_rows(dtype):
    """Zero rows stay zero, duplicated rows give identical rows, one row and no rows are fine."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 64)).astype(dtype)
    a[1] = 0.0
    a[3] = a[2]
    h = _fwht(a)
    np.testing.assert_array_equal(h[1], 0.0)
    np.testing.assert_array_equal(h[3], h[2])
    np.testing.assert_array_equal(_fwht(a[2:3]), h[2:3])  # N = 1: the same numbers as within a block
    assert _fwht(np.empty((0, 64), dtype)).shape == (0, 64)


def test_fwht_involution_and_row_strided_view():
    """H_n H_n = n I, in place on a row-strided view, the columns around it untouched."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 256))
    buffer = np.full((5, 256 + 9), np.nan)
    view = buffer[:, 4 : 4 + 256]
    view[...] = a
    _core.fwht(view)
    assert_rounding(view, _reference.fwht(a))
    _core.fwht(view)
    assert_rounding(view / 256, a)
    assert np.isnan(buffer[:, :4]).all()
    assert np.isnan(buffer[:, 4 + 256 :]).all()


# --- TensorSRHT ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("p", "q", "P", "Q", "m"),
    [(3, 5, 4, 8, 20), (3, 5, 4, 8, 100), (13, 6, 16, 8, 300), (13, 6, 32, 16, 50), (7, 1, 8, 1, 9), (1, 1, 1, 1, 3)],
)
def test_tensor_srht_against_reference(p, q, P, Q, m, dtype):
    """p, q not powers of 2 (zero padding, also beyond the next power), m below and above P·Q."""
    rng = np.random.default_rng(p * 1000 + m)
    args = _srht_inputs(rng, 11, p, q, P, Q, m, dtype)
    if m > P:
        assert len(np.unique(args[4])) < m  # repeated indices
    assert_rounding(_tensor_srht(*args), _reference_of(*args), f"{dtype.__name__} p={p} q={q} P={P} Q={Q} m={m}")


def test_tensor_srht_repeated_pairs_repeat_columns():
    rng = np.random.default_rng(3)
    x, y, sx, sy, _, _ = _srht_inputs(rng, 6, 5, 3, 8, 4, 0)
    index_x, index_y = np.array([1, 5, 1, 1, 7]), np.array([2, 0, 2, 3, 2])
    out = _tensor_srht(x, y, sx, sy, index_x, index_y)
    np.testing.assert_array_equal(out[:, 0], out[:, 2])
    assert_rounding(out, _reference_of(x, y, sx, sy, index_x, index_y))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_srht_edge_rows(dtype):
    """Zero rows give zeros, duplicated rows identical outputs, N = 1 and N = 0 run, every entry written."""
    rng = np.random.default_rng(4)
    x, y, sx, sy, ix, iy = _srht_inputs(rng, 5, 6, 3, 8, 4, 40, dtype)
    x[1] = 0.0
    y[2] = 0.0
    x[4], y[4] = x[3], y[3]
    out = _tensor_srht(x, y, sx, sy, ix, iy)
    np.testing.assert_array_equal(out[1:3], 0.0)
    np.testing.assert_array_equal(out[4], out[3])
    np.testing.assert_array_equal(_tensor_srht(x[3:4], y[3:4], sx, sy, ix, iy), out[3:4])
    assert_rounding(out, _reference_of(x, y, sx, sy, ix, iy))
    assert _tensor_srht(x[:0], y[:0], sx, sy, ix, iy).shape == (0, 40)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_srht_empty_factors_and_no_features(dtype):
    """p = 0 or q = 0: x ⊗ y is empty, the sketch zero (P, Q may be 1); m = 0: nothing to write."""
    rng = np.random.default_rng(5)
    x, y, sx, sy, ix, iy = _srht_inputs(rng, 4, 5, 3, 8, 4, 12, dtype)
    np.testing.assert_array_equal(_tensor_srht(x[:, :0], y, sx[:1], sy, ix % 1, iy), 0.0)
    np.testing.assert_array_equal(_tensor_srht(x, y[:, :0], sx, sy, ix, iy), 0.0)
    assert _tensor_srht(x, y, sx, sy, ix[:0], iy[:0]).shape == (4, 0)
    assert _reference.tensor_srht(x[:, :0], y, sx[:1], sy, ix % 1, iy).shape == (4, 12)


def test_tensor_srht_row_strided_views():
    """out and the inputs as row-strided views of larger arrays; out's neighbouring columns untouched."""
    rng = np.random.default_rng(6)
    x, y, sx, sy, ix, iy = _srht_inputs(rng, 7, 5, 3, 8, 4, 30)
    x_big, y_big = np.zeros((7, 12)), np.zeros((7, 9))
    x_big[:, 2:7], y_big[:, 5:8] = x, y
    buffer = np.full((7, 30 + 11), np.nan)
    out = buffer[:, 6 : 6 + 30]
    _core.tensor_srht(x_big[:, 2:7], y_big[:, 5:8], sx, sy, ix, iy, out)
    assert_rounding(out, _reference.tensor_srht(x, y, sx, sy, ix, iy))
    assert np.isnan(buffer[:, :6]).all()
    assert np.isnan(buffer[:, 6 + 30 :]).all()


@pytest.mark.parametrize("indices", ["fixed", "redrawn"])
def test_tensor_srht_is_unbiased(indices):
    """E over the signs of ⟨S(x ⊗ y), S(x' ⊗ y')⟩ = ⟨x, x'⟩⟨y, y'⟩ for any indices (sketch.hpp's header).

    Each of the 2000 seeded draws gives the Gram G (3, 3) of three sketched rows; the draws are
    independent with bounded entries, so by the central limit theorem each entry's mean lies within
    5 standard errors (its sample standard deviation / √2000) of its expectation except with
    probability ~6e-7 (the sample deviation itself is within ~2% of the true one at 2000 draws).
    The test has power: 5 standard errors are below 10% of the scale ‖x‖‖x'‖‖y‖‖y'‖, so a bias
    of that size fails it (a sketch whose Gram is 5% too large already does, by 5.5 and 7.2 standard
    errors for fixed and redrawn indices).
    """
    rng = np.random.default_rng(7)
    n_draws, p, q, P, Q, m = 2000, 5, 3, 8, 4, 24
    x, y, _, _, ix, iy = _srht_inputs(rng, 3, p, q, P, Q, m)
    x[1] += x[0]  # rows that are correlated, so that the off-diagonal targets are not ~0
    y[2] -= y[1]
    grams = np.empty((n_draws, 3, 3))
    for k in range(n_draws):
        if indices == "redrawn":
            ix, iy = rng.integers(0, P, m), rng.integers(0, Q, m)
        s = _tensor_srht(x, y, _signs(rng, P), _signs(rng, Q), ix, iy)
        grams[k] = s @ s.T
    target = (x @ x.T) * (y @ y.T)
    standard_error = grams.std(axis=0, ddof=1) / np.sqrt(n_draws)
    deviation = np.abs(grams.mean(axis=0) - target)
    assert (deviation <= 5 * standard_error).all(), (deviation / standard_error).max()
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    assert (5 * standard_error <= 0.1 * np.outer(norms, norms)).all()


# --- Bad input --------------------------------------------------------------------------------


def _valid_srht_args():
    rng = np.random.default_rng(8)
    x, y, sx, sy, ix, iy = _srht_inputs(rng, 4, 5, 3, 8, 4, 10)
    return {"x": x, "y": y, "signs_x": sx, "signs_y": sy, "index_x": ix, "index_y": iy, "out": np.empty((4, 10))}


def _row_gapped(a):
    """a with non-contiguous rows (every other column of a wider array)."""
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    wide[:, ::2] = a
    return wide[:, ::2]


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    ("name", "bad", "match"),
    [
        ("x", lambda a: a.astype(np.int64), "x must be float32 or float64"),
        ("x", lambda a: a.astype(">f8"), "x must be float32 or float64"),
        ("y", lambda a: a.astype(np.float32), "y must have the dtype of x"),
        ("signs_x", lambda a: a.astype(np.float32), "signs_x must have the dtype of x"),
        ("signs_y", lambda a: a.astype(np.float32), "signs_y must have the dtype of x"),
        ("out", lambda a: a.astype(np.float32), "out must have the dtype of x"),
        ("index_x", lambda a: a.astype(np.int32), "index_x must be int64"),
        ("index_y", lambda a: a.astype(np.float64), "index_y must be int64"),
        ("x", lambda a: a[0], "x must be 2-D"),
        ("x", _row_gapped, "x must have contiguous rows"),
        ("y", lambda a: a[:3], r"y must have as many rows as x \(4\)"),
        ("y", _row_gapped, "y must have contiguous rows"),
        ("signs_x", lambda a: a[:6], r"signs_x must have a power-of-2 length P >= p = 5"),
        ("signs_x", lambda a: a[:4], r"signs_x must have a power-of-2 length P >= p = 5"),
        ("signs_y", lambda a: a[:2], r"signs_y must have a power-of-2 length Q >= q = 3"),
        ("signs_y", lambda a: np.zeros(0), r"signs_y must have a power-of-2 length"),
        ("signs_x", lambda a: a[None], "signs_x must be 1-D"),
        ("signs_x", lambda a: np.repeat(a, 2)[::2], "signs_x must be contiguous"),
        ("index_x", lambda a: np.where(np.arange(10) == 3, 8, a), r"index_x\[3\] = 8 is not in \[0, P\) = \[0, 8\)"),
        ("index_x", lambda a: np.where(np.arange(10) == 0, -1, a), r"index_x\[0\] = -1"),
        ("index_y", lambda a: np.where(np.arange(10) == 9, 4, a), r"index_y\[9\] = 4 is not in \[0, Q\) = \[0, 4\)"),
        ("index_y", lambda a: a[:9], r"index_y must have the shape of index_x \(10,\)"),
        ("out", lambda a: a[:, :9], r"out must have shape \(4, 10\)"),
        ("out", lambda a: a[:3], r"out must have shape \(4, 10\)"),
        ("out", _row_gapped, "out must have contiguous rows"),
        ("out", _read_only, "out must be writeable"),
    ],
)
def test_tensor_srht_rejects(name, bad, match):
    args = _valid_srht_args()
    args[name] = bad(args[name])
    with pytest.raises(ValueError, match=match):
        _core.tensor_srht(*args.values())


def test_tensor_srht_rejects_out_sharing_memory():
    args = _valid_srht_args()
    buffer = np.zeros((4, 15))
    buffer[:, :5] = args["x"]
    args["x"], args["out"] = buffer[:, :5], buffer[:, 5:]
    with pytest.raises(ValueError, match="out must not share memory with x"):
        _core.tensor_srht(*args.values())


def test_tensor_srht_rejects_non_arrays():
    args = _valid_srht_args()
    args["signs_y"] = list(args["signs_y"])
    with pytest.raises(TypeError, match="incompatible function arguments"):
        _core.tensor_srht(*args.values())


@pytest.mark.parametrize(
    ("a", "match"),
    [
        (np.zeros((3, 6)), r"a must have a power-of-2 number of columns \(n >= 1\); got shape \(3, 6\)"),
        (np.zeros((3, 0)), r"a must have a power-of-2 number of columns"),
        (np.zeros(8), r"a must be 2-D; got shape \(8,\)"),
        (np.zeros((3, 8), np.int64), "a must be float32 or float64"),
        (np.zeros((3, 8), np.float16), "a must be float32 or float64"),
        (np.zeros((3, 16))[:, ::2], "a must have contiguous rows"),
        (_read_only(np.zeros((3, 8))), "a must be writeable"),
    ],
)
def test_fwht_rejects(a, match):
    with pytest.raises(ValueError, match=match):
        _core.fwht(a)


# --- the Fourier TensorSRHT's products ---------------------------------------------------------


def _spectra(dtype, n=6, pa=5, pb=9, n_pairs=11, seed=3):
    rng = np.random.default_rng(seed)
    complex_type = np.result_type(dtype, np.complex64)
    ha = (rng.standard_normal((n, pa)) + 1j * rng.standard_normal((n, pa))).astype(complex_type)
    hb = (rng.standard_normal((n, pb)) + 1j * rng.standard_normal((n, pb))).astype(complex_type)
    ia, ib = rng.integers(0, pa, n_pairs), rng.integers(0, pb, n_pairs)
    sa, sb = (rng.choice([-1.0, 1.0], n_pairs).astype(dtype) for _ in range(2))
    return ha, hb, ia, ib, sa, sb


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_real", [0, 1])
def test_fourier_products_against_complex_arithmetic(dtype, n_real):
    ha, hb, ia, ib, sa, sb = _spectra(dtype)
    a = np.where(sa < 0, np.conj(ha[:, ia]), ha[:, ia])
    b = np.where(sb < 0, np.conj(hb[:, ib]), hb[:, ib])
    z = 0.3 * a * b
    want = np.hstack([z.real, z.imag, 0.2 * (ha[:, :1] * hb[:, :1]).real][: 2 + n_real])
    out = np.empty((6, 22 + n_real), dtype)
    _core.fourier_products(ha, hb, ia, ib, sa, sb, n_real, 0.3, 0.2, out)
    assert_rounding(out, want)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda args: {**args, "ia": args["ia"] + 5}, r"ia\[\d+\] = \d+ is not in \[0, the columns of ha\)"),
        (lambda args: {**args, "sb": args["sb"][:3]}, r"sb must be contiguous of shape \(11,\)"),
        (lambda args: {**args, "out": np.empty((6, 21))}, r"out must have shape \(6, 22\)"),
        (lambda args: {**args, "n_real": 2}, "n_real must be 0 or 1"),
    ],
)
def test_fourier_products_rejects(change, match):
    ha, hb, ia, ib, sa, sb = _spectra(np.float64)
    args = {"ha": ha, "hb": hb, "ia": ia, "ib": ib, "sa": sa, "sb": sb, "n_real": 0, "scale": 1.0,
            "real_scale": 1.0, "out": np.empty((6, 22))}
    with pytest.raises(ValueError, match=match):
        _core.fourier_products(**change(args))
