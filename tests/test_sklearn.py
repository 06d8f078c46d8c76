"""scikit-learn estimators."""

import pickle

import numpy as np
import pytest
from conftest import assert_rounding
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastntk import predict, stax
from fastntk.sklearn import NTKClassifier, NTKFeatures, NTKRegressor


@parametrize_with_checks([NTKRegressor(), NTKClassifier(), NTKRegressor(diag_reg="gcv", kernel="nngp", depth=1),
                          NTKRegressor(solver="cg", diag_reg=1e-3), NTKRegressor(solver="falkon", n_centers=100),
                          NTKClassifier(solver="falkon", n_centers=100, depth=2),
                          NTKRegressor(solver="features", n_features=128), NTKClassifier(solver="features", n_features=64),
                          NTKFeatures(n_features=64), NTKFeatures(kernel="nngp", n_features=32, depth=1),
                          NTKFeatures(method="sketch", b_std=None, n_features=64, degree=4)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4))
    y = np.sin(x[:, 0]) + 0.1 * x[:, 1] ** 2
    return x[:40], y[:40], x[40:], y[40:]


def test_regressor_is_kernel_regression(data):
    x, y, xt, _ = data
    est = NTKRegressor(depth=2, diag_reg=1e-3).fit(x, y)
    _, _, kernel_fn = stax.fc_network(2, "relu", np.sqrt(2), 0.1)
    k = kernel_fn(x, None, "ntk")
    expected = predict.kernel_ridge(k, y, 1e-3, k_test_train=kernel_fn(xt, x, "ntk")).fx_test
    np.testing.assert_allclose(est.predict(xt), expected, rtol=1e-10, atol=1e-12)


def test_regressor_finite_time_is_gradient_flow(data):
    x, y, xt, _ = data
    est = NTKRegressor(depth=1, t=50.0, learning_rate=0.5, diag_reg=0.0).fit(x, y)
    _, _, kernel_fn = stax.fc_network(1, "relu", np.sqrt(2), 0.1)
    predict_fn = predict.gradient_descent_mse(kernel_fn(x, None, "ntk"), y[:, None], 0.5)
    _, expected = predict_fn(50.0, 0.0, 0.0, kernel_fn(xt, x, "ntk"))
    np.testing.assert_allclose(est.predict(xt), expected[:, 0], rtol=1e-9, atol=1e-12)


def test_long_training_converges_to_ridge(data):
    x, y, xt, _ = data
    ridge = NTKRegressor(diag_reg=1e-2).fit(x, y).predict(xt)
    flow = NTKRegressor(diag_reg=1e-2, t=1e9).fit(x, y).predict(xt)
    np.testing.assert_allclose(flow, ridge, rtol=1e-7, atol=1e-9)


def test_gcv_selection_is_exposed(data):
    x, y, xt, yt = data
    est = NTKRegressor(diag_reg="gcv").fit(x, y)
    sel = est.diag_reg_selection_
    assert est.diag_reg_ == sel.diag_reg
    assert sel.gcv.shape == sel.diag_regs.shape
    assert est.score(xt, yt) > 0.5


def test_classifier_on_digits():
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0)
    clf = make_pipeline(StandardScaler(), NTKClassifier(depth=2)).fit(xtr, ytr)
    assert clf.score(xte, yte) > 0.95


def test_grid_search_and_pickle(data):
    x, y, xt, _ = data
    search = GridSearchCV(NTKRegressor(), {"depth": [1, 2], "kernel": ["ntk", "nngp"]}, cv=3).fit(x, y)
    assert search.best_params_["depth"] in (1, 2)
    est = pickle.loads(pickle.dumps(search.best_estimator_))
    # A pickled copy: its arrays sit at other addresses, and BLAS may round differently there.
    assert_rounding(est.predict(xt), search.predict(xt), "predict")
    assert_rounding(est.kernel_fn_(xt, None, "ntk"), search.best_estimator_.kernel_fn_(xt, None, "ntk"), "kernel")


@pytest.mark.parametrize("solver", ["cg", "falkon"])
def test_large_n_solvers_are_kernel_regression(data, solver):
    """solver='cg' and solver='falkon' with every point a centre give the exact estimator's predictions."""
    x, y, xt, _ = data
    exact = NTKRegressor(depth=2, diag_reg=1e-3).fit(x, y)
    est = NTKRegressor(depth=2, diag_reg=1e-3, solver=solver, n_centers=40).fit(x, y)
    np.testing.assert_allclose(est.predict(xt), exact.predict(xt), rtol=0, atol=1e-6 * np.abs(exact.predict(xt)).max())
    if solver == "falkon":
        assert np.array_equal(est.centers_, np.arange(40)) and est.dual_coef_.shape == (40,)


def test_falkon_classifier_on_digits():
    """One-vs-rest targets of 10 classes through one Falkon solve on 300 of 1257 training points."""
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0)
    clf = make_pipeline(StandardScaler(), NTKClassifier(depth=2, solver="falkon", n_centers=300, diag_reg=1e-3))
    clf.fit(xtr, ytr)
    assert clf[-1].dual_coef_.shape == (300, 10)
    assert clf.score(xte, yte) > 0.93


@pytest.mark.parametrize(
    ("params", "match"),
    [({"kernel": "rbf"}, "kernel must be"), ({"solver": "lu"}, "solver must be"),
     ({"solver": "falkon", "diag_reg": "gcv"}, "diag_reg='gcv' needs solver='exact'"),
     ({"solver": "cg", "t": 3.0}, "t=3.0 needs solver='exact'"), ({"solver": "falkon", "n_centers": 0}, "n_centers"), ({"diag_reg": "loo2"}, "diag_reg must be"), ({"t": -1.0}, "t must be"),
     ({"activation": "rleu"}, "unknown activation"), ({"depth": -1}, "depth must be")],
)
def test_bad_parameters(data, params, match):
    x, y, _, _ = data
    with pytest.raises(ValueError, match=match):
        NTKRegressor(**params).fit(x, y)


def test_features_regressor_approaches_kernel_regression(data):
    """solver='features' is ridge regression with the kernel Φ Φᵀ: its predictions approach the exact
    kernel ridge predictions as n_features grows (errors of one draw ~ n_features^(−1/2))."""
    x, y, xt, _ = data
    exact = NTKRegressor(depth=2, diag_reg=1e-2).fit(x, y).predict(xt)
    err = [np.linalg.norm(NTKRegressor(depth=2, diag_reg=1e-2, solver="features", n_features=m, random_state=1)
                          .fit(x, y).predict(xt) - exact) / np.linalg.norm(exact) for m in (256, 4096)]
    assert err[1] < 0.1 and err[1] < err[0] / 2, err


def test_ntk_features_in_a_pipeline_with_ridge(data):
    """NTKFeatures + Ridge equals NTKRegressor(solver='features') with the same map and ridge."""
    from sklearn.linear_model import Ridge

    x, y, xt, _ = data
    feats = NTKFeatures(depth=2, n_features=512, seed=3).fit(x)
    phi = feats.transform(x)
    alpha = 1e-2 * np.einsum("ij,ij->", phi, phi) / len(x)
    pipe = make_pipeline(NTKFeatures(depth=2, n_features=512, seed=3), Ridge(alpha=alpha, fit_intercept=False))
    est = NTKRegressor(depth=2, diag_reg=1e-2, solver="features", n_features=512, random_state=3).fit(x, y)
    np.testing.assert_allclose(pipe.fit(x, y).predict(xt), est.predict(xt), rtol=1e-8, atol=1e-10)
    assert feats.kernel_fn_ is not None and feats.transform(xt).shape == (len(xt), feats.feature_map_.n_out)
    assert NTKFeatures(depth=2, n_features=512).fit(x).get_feature_names_out()[0] == "ntkfeatures0"


def test_features_classifier_on_digits():
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(StandardScaler().fit_transform(x), y, test_size=0.3, random_state=0)
    assert NTKClassifier(solver="features", n_features=4096, diag_reg=1e-3).fit(xtr, ytr).score(xte, yte) > 0.95
