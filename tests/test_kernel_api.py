"""neural-tangents' kernel_fn call conventions: get of any Kernel field (any case), the Kernel's
descriptive fields, replace/asdict, diagonal_batch, ignored keyword arguments, and the layers'
neural-tangents keywords (do_stabilize, Elementwise without fn or nngp_fn).

The descriptive fields' expected values are those neural-tangents 0.6.5 reports for the same
networks and inputs (shape1 = (N, width of the last layer), channel_axis normalised to 1).
"""

import pathlib
import pickle

import numpy as np
import pytest

from fastntk import stax
from fastntk._types import KERNEL_FIELDS, Kernel

X = np.random.default_rng(0).standard_normal((3, 4))
Y = 2 * X[:2]


@pytest.fixture
def mlp():
    return stax.serial(stax.Dense(5, 1.3, 0.1), stax.Relu(), stax.Dense(1, 1.3, 0.1))


@pytest.mark.parametrize("x2", [None, Y])
def test_fields_as_neural_tangents_reports_them(mlp, x2):
    k = mlp.kernel_fn(X, x2)
    n2 = 3 if x2 is None else 2
    assert (k.shape1, k.shape2) == ((3, 1), (n2, 1))
    assert k.x1_is_x2 is (x2 is None) and k.is_gaussian is True
    assert (k.is_reversed, k.is_input, k.diagonal_batch, k.diagonal_spatial) == (False, False, True, False)
    assert (k.batch_axis, k.channel_axis, k.mask1, k.mask2) == (0, 1, None, None)
    assert (k.cov2 is None) == (x2 is None)
    np.testing.assert_allclose(k.cov1, np.diagonal(mlp.kernel_fn(X, None, "nngp")), rtol=1e-14)  # x·x vs the Gram
    hidden = stax.serial(stax.Dense(5), stax.Relu()).kernel_fn(X, x2)
    assert hidden.is_gaussian is False and hidden.shape1 == (3, 5)
    assert list(k.asdict()) == list(KERNEL_FIELDS)


def test_get_any_field_any_case(mlp):
    k = mlp.kernel_fn(X, Y)
    np.testing.assert_array_equal(mlp.kernel_fn(X, Y, "NTK"), k.ntk)
    np.testing.assert_array_equal(mlp.kernel_fn(X, Y, "cov1"), k.cov1)
    np.testing.assert_array_equal(mlp.kernel_fn(X, Y, "cov2"), k.cov2)
    assert mlp.kernel_fn(X, None, "cov2") is None
    assert mlp.kernel_fn(X, Y, "shape2") == (2, 1)
    mixed = mlp.kernel_fn(X, Y, ("Nngp", "shape1", "cov1"))
    assert mixed._fields == ("nngp", "shape1", "cov1") and mixed.shape1 == (3, 1)
    np.testing.assert_array_equal(mixed.nngp, k.nngp)
    with pytest.raises(ValueError, match="unknown get 'foo'"):
        mlp.kernel_fn(X, Y, "foo")
    with pytest.raises(ValueError, match="distinct"):
        mlp.kernel_fn(X, Y, ("ntk", "NTK"))


def test_replace_asdict_pickle(mlp):
    k = mlp.kernel_fn(X, Y, ("ntk",))
    r = k.replace(nngp=np.ones(2), is_gaussian=False)
    assert r._fields == ("ntk", "nngp") and r.is_gaussian is False and r.shape1 == (3, 1)
    assert r.ntk is k.ntk and r.cov1 is k.cov1
    with pytest.raises(TypeError, match="no field 'bogus'"):
        k.replace(bogus=1)
    with pytest.raises(AttributeError, match=r"this Kernel holds \('ntk',\)"):
        k.nngp
    assert k.asdict()["nngp"] is None
    back = pickle.loads(pickle.dumps(k))
    assert type(back) is Kernel and back._fields == k._fields and back.shape2 == (2, 1)
    np.testing.assert_array_equal(back.cov2, k.cov2)


def test_diagonal_batch_false_gives_full_covariances(mlp):
    k = mlp.kernel_fn(X, Y, diagonal_batch=False)
    np.testing.assert_array_equal(k.cov1, mlp.kernel_fn(X, None, "nngp"))
    np.testing.assert_array_equal(k.cov2, mlp.kernel_fn(Y, None, "nngp"))
    assert k.diagonal_batch is False


def test_neural_tangents_keywords_are_ignored(mlp):
    np.testing.assert_array_equal(mlp.kernel_fn(X, Y, "ntk", mask_constant=0.0, rng=None, diagonal_spatial=True),
                                  mlp.kernel_fn(X, Y, "ntk"))


def test_per_point_fields_alone_take_the_diagonal_pass(mlp):
    full = mlp.kernel_fn(X, Y)
    k = mlp.kernel_fn(X, Y, ("cov1", "cov2"))
    np.testing.assert_array_equal(k.cov1, full.cov1)
    np.testing.assert_allclose(k.cov2, full.cov2, rtol=1e-15)


def test_out_with_a_capitalised_get(mlp):
    out = np.empty((3, 2))
    mlp.kernel_fn(X, Y, "NTK", out=out)
    np.testing.assert_array_equal(out, mlp.kernel_fn(X, Y, "ntk"))
    with pytest.raises(ValueError, match="other fields"):
        mlp.kernel_fn(X, Y, ("ntk", "cov1"), out=(out,))


def test_do_stabilize_is_accepted_and_changes_nothing():
    for make in (lambda s: stax.Relu(do_stabilize=s), lambda s: stax.LeakyRelu(0.1, do_stabilize=s),
                 lambda s: stax.ABRelu(-0.5, 1.0, do_stabilize=s)):
        a, b = (stax.serial(stax.Dense(3), make(s), stax.Dense(1)).kernel_fn(X, Y) for s in (False, True))
        np.testing.assert_array_equal(a.ntk, b.ntk)
    with pytest.raises(TypeError, match="do_stabilize"):
        stax.Relu(do_stabilize="yes")


def _erf_nngp(cov12, var1, var2):
    return 2 / np.pi * np.arcsin(2 * cov12 / np.sqrt((1 + 2 * var1) * (1 + 2 * var2)))


def test_elementwise_without_fn_or_nngp_fn():
    kernels_only = stax.serial(stax.Dense(3), stax.Elementwise(nngp_fn=_erf_nngp), stax.Dense(1))
    erf = stax.serial(stax.Dense(3), stax.Erf(), stax.Dense(1))
    np.testing.assert_allclose(kernels_only.kernel_fn(X, Y, "ntk"), erf.kernel_fn(X, Y, "ntk"), rtol=1e-12)
    _, params = kernels_only.init_fn(0, X.shape)
    with pytest.raises(NotImplementedError, match="needs fn"):
        kernels_only.apply_fn(params, X)
    finite_only = stax.serial(stax.Dense(3), stax.Elementwise(fn=np.tanh), stax.Dense(1))
    _, params = finite_only.init_fn(0, X.shape)
    assert finite_only.apply_fn(params, X).shape == (3, 1)
    with pytest.raises(NotImplementedError, match="needs nngp_fn"):
        finite_only.kernel_fn(X, Y)
    with pytest.raises(ValueError, match="neither"):
        stax.Elementwise()


SPATIAL = np.load(pathlib.Path(__file__).parent / "compat" / "data" / "spatial.npz")


@pytest.mark.parametrize(("tag", "kwargs"), [("full", {}), ("diag", {"diagonal_spatial": True})])
def test_inputs_with_location_axes_match_neural_tangents(tag, kwargs):
    """(N, H, W, d) inputs: the kernel of every pair of locations, NT's axis order (generate_spatial.py)."""
    kernel_fn = stax.serial(stax.Dense(7, 1.2, 0.1), stax.Relu(), stax.Dense(1, 1.2, 0.1)).kernel_fn
    k = kernel_fn(SPATIAL["x"], SPATIAL["y"], **kwargs)
    for f in ("nngp", "ntk", "cov1", "cov2"):
        np.testing.assert_allclose(getattr(k, f), SPATIAL[f"{tag}_{f}"], rtol=1e-13, atol=1e-15, err_msg=f)
    assert k.shape1 == (3, 2, 4, 1) and k.channel_axis == 3
    sym = kernel_fn(SPATIAL["x"], None)
    for f in ("nngp", "ntk", "cov1"):
        np.testing.assert_allclose(getattr(sym, f), SPATIAL[f"sym_{f}"], rtol=1e-13, atol=1e-15, err_msg=f)
    assert sym.cov2 is None
    np.testing.assert_array_equal(kernel_fn(SPATIAL["x"], SPATIAL["y"], "cov1", **kwargs), k.cov1)


def test_inputs_with_location_axes_diagonal_and_mismatches():
    kernel_fn = stax.serial(stax.Dense(2), stax.Relu()).kernel_fn
    full = kernel_fn(SPATIAL["x"], None, "ntk")
    np.testing.assert_array_equal(kernel_fn(SPATIAL["x"], None, "ntk", diagonal=True),
                                  np.stack([full[i, i] for i in range(len(full))]))
    with pytest.raises(ValueError, match="spatial shape and channels of x1"):
        kernel_fn(SPATIAL["x"], SPATIAL["y"][..., :3])
    with pytest.raises(ValueError, match="spatial shape and channels of x1"):
        kernel_fn(SPATIAL["x"], SPATIAL["y"][:, :1], diagonal_spatial=True)


def test_activation_on_a_gaussian_kernel_given_as_input():
    """A layer map applied to a Gaussian input, as neural-tangents allows: a Kernel marked is_gaussian."""
    sigma = X @ X.T / X.shape[1]
    given = Kernel(("nngp", "ntk"), (sigma, np.zeros_like(sigma)), np.diagonal(sigma).copy(), None, is_gaussian=True)
    relu = stax.serial(stax.Relu(), stax.Dense(1)).kernel_fn
    np.testing.assert_allclose(relu(given, get="nngp"),
                               stax.serial(stax.Dense(7), stax.Relu(), stax.Dense(1)).kernel_fn(X, None, "nngp"),
                               rtol=1e-13)
    with pytest.raises(ValueError, match="activation 'relu' follows"):
        relu(given.replace(is_gaussian=False))


DENSE = np.load(pathlib.Path(__file__).parent / "compat" / "data" / "dense_s.npz")


def _scaled_net():
    return stax.serial(stax.Dense(8, 1.3, 0.2, parameterization="standard", s=(1, 2)), stax.Erf(),
                       stax.Dense(5, 0.9, 0.1, parameterization="standard", s=(2, 3)), stax.Relu(),
                       stax.Dense(1, 1.1, 0.3, parameterization="standard", s=(3, 1)))


def test_width_scalings_s_match_neural_tangents():
    """Dense(..., s=(s_in, s_out)), 'standard': W of shape (s_in·n, s_out·out), z = hW/√s_in + b, NTK n_in = width/s_in
    (generate_dense.py)."""
    jax = pytest.importorskip("jax")
    net = _scaled_net()
    k = net.kernel_fn(DENSE["x"], DENSE["y"])
    np.testing.assert_allclose(k.nngp, DENSE["nngp"], rtol=1e-13)
    np.testing.assert_allclose(k.ntk, DENSE["ntk"], rtol=1e-13)
    from fastntk import _reference

    nngp, ntk = _reference.infinite_kernels(DENSE["x"], DENSE["y"], net.kernel_fn.spec)
    np.testing.assert_allclose(ntk, k.ntk, rtol=1e-13)
    with jax.experimental.enable_x64() if not hasattr(jax, "enable_x64") else jax.enable_x64(True):
        out_shape, params = net.init_fn(jax.random.PRNGKey(4), DENSE["x"].shape)
        dense = [p for p in params if p != ()]
        for i, (W, b) in enumerate(dense):
            np.testing.assert_allclose(np.asarray(W), DENSE[f"W{i}"], rtol=1e-14, atol=1e-15)
            np.testing.assert_allclose(np.asarray(b), DENSE[f"b{i}"], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(np.asarray(net.apply_fn(params, DENSE["x"])), DENSE["f"], rtol=1e-12)
    assert out_shape == (4, 1)


def test_dense_on_location_axes_has_neural_tangents_params():
    """Inputs (N, H, d): b has one axis per input axis, (1, 1, out), as in neural-tangents."""
    jax = pytest.importorskip("jax")
    net = stax.serial(stax.Dense(4, 1.2, 0.3), stax.Relu(), stax.Dense(2, 1.0, 0.5))
    with jax.experimental.enable_x64() if not hasattr(jax, "enable_x64") else jax.enable_x64(True):
        _, params = net.init_fn(jax.random.PRNGKey(5), DENSE["x3"].shape)
        for i, (W, b) in enumerate(p for p in params if p != ()):
            assert np.shape(b) == DENSE[f"b3_{i}"].shape
            np.testing.assert_allclose(np.asarray(W), DENSE[f"W3_{i}"], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(np.asarray(net.apply_fn(params, DENSE["x3"])), DENSE["f3"], rtol=1e-12)


def test_dense_takes_neural_tangents_argument_order():
    with pytest.raises(TypeError, match="argument order"):
        stax.Dense(3, 1.0, 0.1, "standard")
    with pytest.raises(ValueError, match="s must be a pair of positive ints"):
        stax.Dense(3, s=(1, 0))
    with pytest.raises(TypeError, match="channel_axis must be an int"):
        stax.Dense(3, channel_axis=1.5)
    same = stax.serial(stax.Dense(3, channel_axis=1), stax.Relu())  # the last axis of (N, d) inputs
    np.testing.assert_array_equal(same.kernel_fn(X, None, "nngp"),
                                  stax.serial(stax.Dense(3), stax.Relu()).kernel_fn(X, None, "nngp"))


LAYOUT = np.load(pathlib.Path(__file__).parent / "compat" / "data" / "layout.npz")


@pytest.mark.parametrize(("case", "axes"), [("t", {"batch_axis": 1, "channel_axis": 0}),
                                            ("mid", {"batch_axis": 0, "channel_axis": 1})])
def test_batch_and_channel_axes_match_neural_tangents(case, axes):
    """Dense(batch_axis, channel_axis): inputs (d, N) and (N, d, H); params, outputs and kernels as
    neural-tangents 0.6.5 (generate_layout.py)."""
    jax = pytest.importorskip("jax")
    net = stax.serial(stax.Dense(6, 1.3, 0.2, **axes), stax.Relu(), stax.Dense(6, 1.1, 0.1, **axes), stax.Erf(),
                      stax.Dense(2, 0.9, 0.3, parameterization="standard", **axes))
    z = {k.split("/", 1)[1]: LAYOUT[k] for k in LAYOUT.files if k.startswith(case + "/")}
    k = net.kernel_fn(z["x1"], z["x2"])
    for f in ("nngp", "ntk", "cov1"):
        np.testing.assert_allclose(getattr(k, f), z[f], rtol=1e-13, atol=1e-15, err_msg=f)
    with jax.experimental.enable_x64() if not hasattr(jax, "enable_x64") else jax.enable_x64(True):
        out_shape, params = net.init_fn(jax.random.PRNGKey(3), z["x1"].shape)
        assert out_shape == tuple(z["out_shape"])
        for i, (W, b) in enumerate(p for p in params if p != ()):
            np.testing.assert_allclose(np.asarray(W), z[f"W{i}"], rtol=1e-14, atol=1e-15)
            assert np.shape(b) == z[f"b{i}"].shape
            np.testing.assert_allclose(np.asarray(b), z[f"b{i}"], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(np.asarray(net.apply_fn(params, z["x1"])), z["f"], rtol=1e-12)
        # NumPy params of the same shapes, and JAX inputs under jit, give the same outputs
        np_params = jax.tree_util.tree_map(np.asarray, params)
        np.testing.assert_allclose(net.apply_fn(np_params, z["x1"]), z["f"], rtol=1e-12)
        np.testing.assert_allclose(np.asarray(jax.jit(net.apply_fn)(params, z["x1"])), z["f"], rtol=1e-12)


def test_layouts_that_cannot_be_computed_are_refused():
    with pytest.raises(ValueError, match="different"):
        stax.serial(stax.Dense(3, channel_axis=0, batch_axis=1), stax.Relu(), stax.Dense(1)).kernel_fn(X)
    with pytest.raises(NotImplementedError, match="FanInConcat, Flatten"):
        stax.serial(stax.Dense(3, batch_axis=1, channel_axis=0), stax.Flatten()).kernel_fn(X.T)
    transposed = stax.serial(stax.Dense(3, batch_axis=1, channel_axis=0), stax.Relu(), stax.Dense(1, batch_axis=1,
                                                                                                  channel_axis=0))
    _, params = transposed.init_fn(0, X.T.shape)
    from fastntk import empirical_ntk_fn

    with pytest.raises(NotImplementedError, match="empirical NTK takes inputs"):
        empirical_ntk_fn(transposed.apply_fn)(X.T, None, params)


def test_diagonal_batch_false_of_x1_with_itself_is_the_nngp(mlp):
    k = mlp.kernel_fn(X, None, diagonal_batch=False)
    np.testing.assert_array_equal(k.cov1, k.nngp)
    assert k.cov2 is None
    spatial = mlp.kernel_fn(SPATIAL["x"], None, diagonal_batch=False)
    np.testing.assert_array_equal(spatial.cov1, spatial.nngp)
