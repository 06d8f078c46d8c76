"""fastntk._core (src/core.cpp over cpp/include/fastntk): the vectorisable atan2 and the ReLU
family's angle, the mirror, the fused tile pass, and the glue's buffer checks."""

import numpy as np
import pytest
from conftest import RTOL, assert_close, assert_rounding
from threadpoolctl import ThreadpoolController

from fastntk import _core, _reference, stax
from fastntk._blas import GEMM, one_blas_thread

ULP_BOUND = 2  # cpp/include/fastntk/math.hpp: "within 2 ulp of std::atan2"


def _elementwise(f, a, b):
    """f(a, b, out) of the module on float64 copies of a and b (1-D or scalars); returns out."""
    a, b = (np.atleast_1d(np.ascontiguousarray(v, dtype=np.float64)) for v in (a, b))
    out = np.empty_like(a)
    f(a, b, out)
    return out


def _atan2(y, x):
    return _elementwise(_core.atan2, y, x)


def _ulps(actual, expected):
    """|actual − expected| in units of the last place of expected (exact zeros: 0 or inf)."""
    return np.abs(actual - expected) / np.spacing(np.abs(expected))


def test_atan2_random_within_2_ulp():
    """1e6 pairs: all four quadrants, magnitudes 1e-300 … 1e300 and ratios of every size."""
    rng = np.random.default_rng(0)
    n = 500_000
    wide = [rng.standard_normal(n) * 10.0 ** rng.uniform(-300, 300, n) for _ in range(2)]
    near = [rng.standard_normal(n) for _ in range(2)]  # the rational core and π/4 switch
    y, x = np.concatenate([wide[0], near[0]]), np.concatenate([wide[1], near[1]])
    assert {(a, b) for a, b in zip(np.sign(y[:1000]), np.sign(x[:1000]))} == {(-1, -1), (-1, 1), (1, -1), (1, 1)}
    ulps = _ulps(_atan2(y, x), np.arctan2(y, x))
    assert ulps.max() <= ULP_BOUND


def test_atan2_near_the_branch_points():
    """Ratios |y/x| around the 0.66 switch of the core, 1 (steep/flat) and the axes."""
    q = np.concatenate(
        [np.linspace(0.6, 0.7, 20_001), np.linspace(0.999, 1.001, 20_001), np.geomspace(1e-20, 1e-3, 1000)]
    )
    for sy in (1, -1):
        for sx in (1, -1):
            for y, x in ((q, np.ones_like(q)), (np.ones_like(q), q)):
                ulps = _ulps(_atan2(sy * y, sx * x), np.arctan2(sy * y, sx * x))
                assert ulps.max() <= ULP_BOUND


def test_angle_from_cos_sin_within_2_ulp():
    """θ from ρ = cos θ and s = sin θ (math.hpp): against arctan2(s, ρ) of the same rounded pair,
    relative 2 ulp from θ = 1/2 on and absolute 2·2⁻⁵² below (the accuracy the ReLU family's
    T_dot = c − dθ needs); ρ over [−1, 1] with ρ → ±1 at every scale and around the π/4, π/2 and
    3π/4 switches; NaN in, NaN out."""
    rng = np.random.default_rng(0)
    gaps = 10.0 ** rng.uniform(-17, 0, 200_000)
    rho = np.concatenate([rng.uniform(-1, 1, 500_000), 1 - gaps, -1 + gaps, np.linspace(-0.72, -0.70, 10_001),
                          np.linspace(0.70, 0.72, 10_001), np.linspace(-1e-3, 1e-3, 10_001), [-1.0, 0.0, 1.0]])
    s = np.sqrt((1 - rho) * (1 + rho))
    expected = np.arctan2(s, rho)
    err = np.abs(_elementwise(_core.angle_from_cos_sin, rho, s) - expected)
    assert (err / np.where(expected >= 0.5, np.spacing(expected), 2.0**-52)).max() <= ULP_BOUND
    assert np.isnan(_elementwise(_core.angle_from_cos_sin, [np.nan, 0.5], [0.5, np.nan])).all()


def test_atan2_zeros_tiny_and_huge():
    """+0 in either argument, the smallest normal, subnormals (all but the very smallest)
    and the largest finite values, in all sign combinations."""
    v = np.array([0.0, 2.2250738585072014e-308, 1e-310, 1e-320, 1e-300, 1.0, 1e300, np.finfo(float).max])
    signed = np.concatenate([v, -v[1:]])
    y, x = (a.ravel() for a in np.meshgrid(signed, signed))
    expected = np.arctan2(y, x)
    actual = _atan2(y, x)
    exact_zero = expected == 0
    np.testing.assert_array_equal(actual[exact_zero], expected[exact_zero])
    assert _ulps(actual[~exact_zero], expected[~exact_zero]).max() <= ULP_BOUND


def test_atan2_propagates_nan():
    """A NaN argument gives NaN (math.hpp); infinities, subnormals and the sign of zero are
    outside its contract: the dual kernels pass only finite, normal-range values."""
    y, x = np.array([1.0, np.nan, 0.0]), np.array([np.nan, 1.0, np.nan])
    assert np.isnan(_atan2(y, x)).all()


def test_atan2_rejects_size_mismatch():
    with pytest.raises(ValueError, match="the two arguments and out must have the same size"):
        _core.atan2(np.ones(3), np.ones(3), np.empty(2))


# --- mirror_upper ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 200])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mirror_upper(dtype, n):
    """Lower triangle := upper triangle, across the 64×64 blocks; the upper is untouched."""
    a = np.random.default_rng(n).standard_normal((n, n)).astype(dtype)
    upper = np.triu(a)
    _core.mirror_upper(a)
    assert a.dtype == dtype
    np.testing.assert_array_equal(a, upper + np.triu(upper, 1).T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mirror_upper_on_a_block_of_a_larger_array(dtype):
    """A square view with row stride > n (a block of a bigger result) is mirrored in place."""
    big = np.arange(80 * 90, dtype=dtype).reshape(80, 90)
    before = big.copy()
    view = big[3:73, 10:80]
    _core.mirror_upper(view)
    expected = before[3:73, 10:80]
    np.testing.assert_array_equal(view, np.triu(expected) + np.triu(expected, 1).T)
    outside = np.ones(big.shape, bool)
    outside[3:73, 10:80] = False
    np.testing.assert_array_equal(big[outside], before[outside])


@pytest.mark.parametrize(
    ("a", "match"),
    [
        (np.zeros((3, 4)), r"a must have shape \(3, 3\); got \(3, 4\)"),
        (np.zeros(4), r"a must have shape"),
        (np.zeros((4, 8))[:, ::2], "a must have contiguous rows"),
        (np.asfortranarray(np.zeros((4, 4))), "a must have contiguous rows"),
        (np.zeros((4, 4), np.float32)[:, ::2][:2], "a must have contiguous rows"),
    ],
    ids=["not_square", "1d", "strided_columns", "fortran", "float32_strided"],
)
def test_mirror_upper_rejects_bad_buffers(a, match):
    with pytest.raises(ValueError, match=match):
        _core.mirror_upper(a)


def test_mirror_upper_rejects_read_only():
    a = np.zeros((3, 3))
    a.flags.writeable = False
    with pytest.raises(ValueError, match="not writeable"):
        _core.mirror_upper(a)


# --- fc_tile / fc_diagonal --------------------------------------------------------------

#: Input Σ = x·x'/d (d = 4), Dense ntk (W² = 2, b² = 0.01), ReLU, Dense ntk.
_OP = _core.op_kinds
RELU_OPS = np.array([[_OP["input"], 0.25, 0, 0, 0], [_OP["dense_ntk"], 2.0, 0.01, 0, 0], [_OP["abrelu"], 0.0, 1.0, 0, 0],
                     [_OP["dense_ntk"], 2.0, 0.01, 0, 0]], float)


def _tile_inputs(dtype=np.float64):
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    var1 = (2.0 * (x1 * x1).sum(1) / 4 + 0.01)[None]  # variance entering the ReLU
    var2 = (2.0 * (x2 * x2).sum(1) / 4 + 0.01)[None]
    return x1, x2, (x1 @ x2.T).astype(dtype), var1, var2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fc_tile_matches_reference(dtype):
    x1, x2, gram, var1, var2 = _tile_inputs(dtype)
    nngp, ntk = np.empty_like(gram), np.empty_like(gram)
    _core.fc_tile(gram, nngp, ntk, var1, var2, RELU_OPS, 0.0)
    net = stax.serial(stax.Dense(7, np.sqrt(2.0), 0.1), stax.Relu(), stax.Dense(1, np.sqrt(2.0), 0.1))
    ref_nngp, ref_ntk = _reference.infinite_kernels(x1, x2, net.kernel_fn.spec)
    rtol = RTOL[{np.float64: "float64", np.float32: "float32_vs_float64"}[dtype]]
    assert_close(nngp, ref_nngp, rtol, "nngp")
    assert_close(ntk, ref_ntk, rtol, "ntk")


def test_fc_tile_in_place_and_nngp_only():
    """sigma may be the nngp buffer itself; ntk=None computes the NNGP alone."""
    _, _, gram, var1, var2 = _tile_inputs()
    nngp, ntk = np.empty_like(gram), np.empty_like(gram)
    _core.fc_tile(gram, nngp, ntk, var1, var2, RELU_OPS, 0.0)
    in_place = gram.copy()
    _core.fc_tile(in_place, in_place, None, var1, var2, RELU_OPS, 0.0)
    assert_rounding(in_place, nngp, "in place, NNGP alone")  # another template instance (no NTK)


def test_fc_diagonal_matches_tile_diagonal():
    x = np.random.default_rng(2).standard_normal((6, 4))
    k, t, var = (x * x).sum(1), np.empty(6), np.empty((1, 6))
    _core.fc_diagonal(k, t, var, RELU_OPS)
    gram = x @ x.T
    np.fill_diagonal(gram, (x * x).sum(1))
    nngp, ntk = np.empty_like(gram), np.empty_like(gram)
    _core.fc_tile(gram, nngp, ntk, var, var, RELU_OPS, 16 * 2 * np.finfo(float).eps)
    np.testing.assert_allclose(np.diag(nngp), k, rtol=1e-15)
    np.testing.assert_allclose(np.diag(ntk), t, rtol=1e-15)
    np.testing.assert_allclose(var[0], 2.0 * (x * x).sum(1) / 4 + 0.01, rtol=1e-15)


def _fc_tile_args():
    _, _, gram, var1, var2 = _tile_inputs()
    return {"sigma": gram, "nngp": np.empty_like(gram), "ntk": np.empty_like(gram), "var1": var1, "var2": var2,
            "ops": RELU_OPS, "rho_tol": 0.0}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ntk": np.empty((5, 2))}, r"ntk must have shape \(5, 3\); got \(5, 2\)"),
        ({"nngp": np.empty((3, 5))}, r"nngp must have shape \(5, 3\)"),
        ({"sigma": np.empty(15)}, r"sigma must have shape"),
        ({"var1": np.empty((2, 5))}, r"var1 must have shape \(1, 5\); got \(2, 5\)"),
        ({"var2": np.empty((1, 4))}, r"var2 must have shape \(1, 3\); got \(1, 4\)"),
        ({"sigma": np.empty((5, 6))[:, ::2]}, "sigma must have contiguous rows"),
        ({"ntk": np.empty((5, 6))[:, ::2]}, "ntk must have contiguous rows"),
        ({"var1": np.empty((1, 10))[:, ::2]}, "var1 must have contiguous rows"),
        ({"ops": RELU_OPS[:, :4].copy()}, r"ops must have shape \(n_ops, 5\); got \(4, 4\)"),
        ({"ops": np.array([[max(_OP.values()) + 1.0, 0, 0, 0, 0]])}, r"ops\[0, 0\] is not an op kind"),
        ({"ops": np.array([[1.5, 0, 0, 0, 0]])}, r"ops\[0, 0\] is not an op kind"),
    ],
    ids=["ntk_shape", "nngp_shape", "sigma_1d", "var1_rows", "var2_cols", "sigma_strided", "ntk_strided",
         "var_strided", "ops_columns", "ops_kind", "ops_fractional_kind"],
)
def test_fc_tile_rejects_bad_buffers(change, match):
    with pytest.raises(ValueError, match=match):
        _core.fc_tile(**(_fc_tile_args() | change))


def test_fc_tile_rejects_shared_ntk_buffer_without_input_op():
    args = _fc_tile_args()
    with pytest.raises(ValueError, match="sigma may share its buffer with ntk only when ops start with the input op"):
        _core.fc_tile(**(args | {"ntk": args["sigma"], "ops": RELU_OPS[1:].copy()}))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.ones(6)[::2], None, np.empty((0, 3))), "nngp must be a contiguous 1-D array"),
        ((np.ones((3, 1)), None, np.empty((0, 3))), "nngp must be a contiguous 1-D array"),
        ((np.ones(3), np.ones(2), np.empty((0, 3))), r"ntk must be a contiguous array of shape \(3,\)"),
        ((np.ones(3), None, np.empty((1, 3))), r"var must have shape \(0, 3\); got \(1, 3\)"),
    ],
    ids=["strided", "2d", "ntk_size", "var_rows"],
)
def test_fc_diagonal_rejects_bad_buffers(args, match):
    ops = RELU_OPS[[0, 1]].copy()  # no activation: var has 0 rows
    with pytest.raises(ValueError, match=match):
        _core.fc_diagonal(*args, ops)


# --- fc_gram_tile: the Gram inside the pass ------------------------------------------------


def _gram_tile(x1, x2, self_gram=None, with_ntk=True):
    """fc_gram_tile's NNGP and NTK of RELU_OPS between x1 and x2 (the variances from their norms)."""
    var1, var2 = ((2.0 * (x * x).sum(1, dtype=np.float64) / x.shape[1] + 0.01)[None] for x in (x1, x2))
    nngp = np.full((len(x1), len(x2)), np.nan, x1.dtype)
    ntk = np.full_like(nngp, np.nan) if with_ntk else None
    ops = RELU_OPS.copy()
    ops[0, 1] = 1.0 / x1.shape[1]
    with one_blas_thread():
        _core.fc_gram_tile(x1, x2, nngp, ntk, var1, var2, ops, 0.0, GEMM[x1.dtype.char], self_gram)
    return nngp, ntk, var1, var2, ops


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("n1", "n2", "d"), [(5, 3, 4), (150, 700, 33), (64, 1, 1)])
def test_fc_gram_tile_equals_fc_tile_of_the_blas_gram(dtype, n1, n2, d):
    """Sub-tiles of every shape (partial at both edges) against fc_tile on NumPy's Gram."""
    rng = np.random.default_rng(3)
    x1, x2 = rng.standard_normal((n1, d)).astype(dtype), rng.standard_normal((n2, d)).astype(dtype)
    nngp, ntk, var1, var2, ops = _gram_tile(x1, x2)
    ref_nngp, ref_ntk = np.empty_like(nngp), np.empty_like(ntk)
    _core.fc_tile(x1 @ x2.T, ref_nngp, ref_ntk, var1, var2, ops, 0.0)
    assert_rounding(nngp, ref_nngp, "nngp")
    assert_rounding(ntk, ref_ntk, "ntk")
    nngp_only, *_ = _gram_tile(x1, x2, with_ntk=False)
    assert_rounding(nngp_only, ref_nngp, "nngp alone")


def test_fc_gram_tile_ntk_only_writes_the_gram_into_ntk():
    x1, x2, *_ = _tile_inputs()
    nngp, ntk, var1, var2, ops = _gram_tile(x1, x2)
    alone = np.empty_like(ntk)
    with one_blas_thread():
        _core.fc_gram_tile(x1, x2, None, alone, var1, var2, ops, 0.0, GEMM["d"], None)
    assert_rounding(alone, ntk, "ntk alone")


def test_fc_gram_tile_symmetric_tile_sees_exact_self_gram():
    """A symmetric result's block: x2 = x1 from its first row on; entries (i, i) of the Gram take
    the given x·x exactly (the per-point pass's), and the sub-tiles wholly below the diagonal are
    skipped (left as they were)."""
    x = np.random.default_rng(4).standard_normal((2100, 6))
    block = x[:1100]
    sq = np.einsum("ij,ij->i", block, block)
    gram = np.full((1100, 2100), np.nan)
    with one_blas_thread():  # the input op alone, Σ = x·x' (1/d = 1): the Gram itself
        _core.fc_gram_tile(block, x, gram, None, np.empty((0, 1100)), np.empty((0, 2100)),
                           np.array([[_OP["input"], 1.0, 0, 0, 0]]), 0.0, GEMM["d"], sq)
    np.testing.assert_array_equal(np.diag(gram), sq)
    ops = RELU_OPS.copy()
    ops[0, 1] = 1.0 / 6
    k, t, var = sq.copy(), np.empty(1100), np.empty((1, 1100))
    _core.fc_diagonal(k, t, var, ops)
    var_all = np.empty((1, 2100))
    _core.fc_diagonal(np.einsum("ij,ij->i", x, x), None, var_all, ops)
    var_all[:, :1100] = var
    nngp, ntk = np.full((1100, 2100), np.nan), np.full((1100, 2100), np.nan)
    with one_blas_thread():
        _core.fc_gram_tile(block, x, nngp, ntk, var, var_all, ops, 0.0, GEMM["d"], sq)
    np.testing.assert_allclose(np.diag(nngp), k, rtol=1e-15)
    np.testing.assert_allclose(np.diag(ntk), t, rtol=1e-15)
    upper = np.triu(np.ones((1100, 2100), bool))
    for a in (gram, nngp, ntk):
        assert np.isfinite(a[upper]).all()
        assert np.isnan(a[1024:, :1024]).all()  # float64 sub-tiles: 64 rows x 1024 columns


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ops": RELU_OPS[1:].copy()}, "needs ops that start with the input op"),
        ({"nngp": None, "ntk": None}, "needs nngp or ntk"),
        ({"x2": np.ones((3, 5))}, r"x2 must have shape \(3, 4\); got \(3, 5\)"),
        ({"x1": np.ones((5, 8))[:, ::2]}, "x1 must have contiguous rows"),
        ({"self_gram": np.ones(4)}, r"self_gram must have shape \(n1,\), n1 <= n2"),
        ({"self_gram": np.ones(5)}, r"self_gram must have shape \(n1,\), n1 <= n2"),  # n1 = 5 > n2 = 3
    ],
    ids=["no_input_op", "no_output", "x2_width", "x1_strided", "self_gram_size", "self_gram_wide"],
)
def test_fc_gram_tile_rejects_bad_buffers(change, match):
    x1, x2, gram, var1, var2 = _tile_inputs()
    args = {"x1": x1, "x2": x2, "nngp": np.empty_like(gram), "ntk": np.empty_like(gram), "var1": var1, "var2": var2,
            "ops": RELU_OPS, "rho_tol": 0.0, "gemm": GEMM["d"], "self_gram": None}
    with pytest.raises(ValueError, match=match):
        _core.fc_gram_tile(**(args | change))


def test_one_blas_thread_nests_and_restores():
    controller = ThreadpoolController()
    before = [lib.num_threads for lib in controller.select(user_api="blas").lib_controllers]
    with one_blas_thread():
        with one_blas_thread():
            inner = [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]
        still = [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]
    after = [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]
    assert all(n == 1 for n in inner + still)
    assert after == before


# An output the glue would have to convert (int64, float32 beside float64) or copy
# (strided, for a c_style argument) must be refused: a copy would take the result.
def _mirror_int():
    _core.mirror_upper(np.triu(np.arange(16).reshape(4, 4)))


def _atan2_float32_out():
    _core.atan2(np.ones(4), np.ones(4), np.zeros(4, np.float32))


def _atan2_strided_out():
    _core.atan2(np.ones(4), np.ones(4), np.zeros(8)[::2])


def _fc_tile_float32_ntk():
    args = _fc_tile_args()
    _core.fc_tile(**(args | {"ntk": np.zeros(args["sigma"].shape, np.float32)}))


@pytest.mark.parametrize("call", [_mirror_int, _atan2_float32_out, _atan2_strided_out, _fc_tile_float32_ntk],
                         ids=lambda f: f.__name__.lstrip("_"))
def test_glue_rejects_outputs_it_would_have_to_copy(call):
    with pytest.raises((ValueError, TypeError)):
        call()


def test_thread_count():
    assert isinstance(_core.has_openmp, bool)
    assert _core.get_num_threads() >= 1
