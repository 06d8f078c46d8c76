"""fastntk.active: the Schur-complement look-ahead scores equal refitting with each candidate (infinite and
empirical NTK); shapes; bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fastntk import empirical_ntk_fn, stax
from fastntk.active import lookahead_scores
from fastntk.predict import kernel_ridge

N_LABELED, N_POOL, N_CLASSES = 7, 9, 3


@pytest.fixture(scope="module", params=["infinite", "empirical"])
def problem(request):
    """A ReLU network's NTK on 16 random points split into labelled / pool, with one-hot labels, and f_0:
    0 with the infinite NTK, the network's outputs with the empirical NTK of its initial weights."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N_LABELED + N_POOL, 4))
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(N_CLASSES, 1.5, 0.1))
    if request.param == "infinite":
        k, f0 = kernel_fn(x, None, "ntk"), np.zeros((len(x), N_CLASSES))
    else:
        _, params = init_fn(1, x.shape)
        k, f0 = empirical_ntk_fn(apply_fn)(x, None, params), np.asarray(apply_fn(params, x))
    lab, pool = np.arange(N_LABELED), np.arange(N_LABELED, N_LABELED + N_POOL)
    y = np.eye(N_CLASSES)[rng.integers(0, N_CLASSES, N_LABELED)]
    return {"k": k, "lab": lab, "pool": pool, "y": y, "f0": f0}


def _blocks(p):
    k, lab, pool = p["k"], p["lab"], p["pool"]
    return k[np.ix_(lab, lab)], k[np.ix_(pool, lab)], k[np.ix_(pool, pool)]


def _brute_force(p, targets, lam, ord, f0):
    """(m, C) scores by refitting kernel ridge regression with each candidate and each label added."""
    k, lab, pool, y = p["k"], p["lab"], p["pool"], p["y"]
    fit = kernel_ridge(k[np.ix_(lab, lab)], y, lam, True, k_test_train=k[np.ix_(pool, lab)],
                       fx_train_0=f0[lab], fx_test_0=f0[pool])
    scores = np.empty((len(pool), len(targets)))
    for i, c in enumerate(pool):
        plus = np.append(lab, c)
        for j, t in enumerate(targets):
            refit = kernel_ridge(k[np.ix_(plus, plus)], np.vstack([y, t]), lam, True,
                                 k_test_train=k[np.ix_(pool, plus)], fx_train_0=f0[plus], fx_test_0=f0[pool])
            scores[i, j] = np.linalg.norm(refit.fx_test - fit.fx_test, ord=ord, axis=1).sum()
    return scores, fit.fx_test


@pytest.mark.parametrize("ord", [1, 2, np.inf])
def test_scores_equal_refitting_with_each_candidate(problem, ord):
    f0 = problem["f0"]
    targets, lam = np.eye(N_CLASSES) - 0.1, 1e-2
    want, fx_pool = _brute_force(problem, targets, lam, ord, f0)
    kw = dict(fx_labeled_0=f0[problem["lab"]], fx_pool_0=f0[problem["pool"]], ord=ord)
    got = lookahead_scores(*_blocks(problem), problem["y"], targets, lam, True, label="all", **kw)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    nearest = np.linalg.norm(targets[None] - fx_pool[:, None], axis=2).argmin(axis=1)
    predicted = lookahead_scores(*_blocks(problem), problem["y"], targets, lam, True, **kw)
    np.testing.assert_allclose(predicted, want[np.arange(N_POOL), nearest], rtol=1e-10, atol=1e-12)


def test_relative_diag_reg_is_held_fixed_at_trace_over_n(problem):
    k_ss = _blocks(problem)[0]
    lam = 1e-2 * np.trace(k_ss) / N_LABELED
    rel = lookahead_scores(*_blocks(problem), problem["y"], np.eye(N_CLASSES), 1e-2, label="all")
    absolute = lookahead_scores(*_blocks(problem), problem["y"], np.eye(N_CLASSES), lam, True, label="all")
    np.testing.assert_allclose(rel, absolute, rtol=1e-13)


def test_one_output_matches_its_two_dimensional_form(problem):
    y = problem["y"][:, 0]
    one = lookahead_scores(*_blocks(problem), y, np.array([0.0, 1.0]), 1e-2, label="all")
    two = lookahead_scores(*_blocks(problem), y[:, None], np.array([[0.0], [1.0]]), 1e-2, label="all")
    np.testing.assert_allclose(one, two, rtol=1e-14)


@pytest.mark.parametrize("label, shape", [("predicted", (N_POOL,)), ("all", (N_POOL, N_CLASSES + 1))])
def test_shapes_dtype_and_sign(problem, label, shape):
    blocks = [b.astype(np.float32) for b in _blocks(problem)]
    s = lookahead_scores(*blocks, problem["y"], np.eye(N_CLASSES + 1, N_CLASSES), 1e-3, label=label)
    assert s.shape == shape and s.dtype == np.float64 and (s >= 0).all()


def test_inputs_are_not_mutated(problem):
    blocks = [b.copy() for b in _blocks(problem)]
    y = problem["y"].copy()
    lookahead_scores(*blocks, y, np.eye(N_CLASSES), 1e-3)
    for got, want in zip(blocks, _blocks(problem)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(y, problem["y"])


def _with_nan(a):
    a = a.copy()
    a[0, 0] = np.nan
    return a


def _with_inf(a):
    a = a.copy()
    a[-1] = np.inf
    return a


BAD = {
    "k_labeled_labeled-shape": (lambda a: a.update(k_ss=a["k_ss"][:, :-1]), "k_labeled_labeled"),
    "k_labeled_labeled-asymmetric": (lambda a: a.update(k_ss=a["k_ss"] + np.triu(a["k_ss"], 1)), "k_labeled_labeled"),
    "k_labeled_labeled-nan": (lambda a: a.update(k_ss=_with_nan(a["k_ss"])), "k_labeled_labeled"),
    "k_pool_labeled-columns": (lambda a: a.update(k_us=a["k_us"][:, :-1]), "k_pool_labeled"),
    "k_pool_labeled-inf": (lambda a: a.update(k_us=_with_inf(a["k_us"])), "k_pool_labeled"),
    "k_pool_pool-shape": (lambda a: a.update(k_uu=a["k_uu"][:-1, :-1]), "k_pool_pool"),
    "k_pool_pool-1d": (lambda a: a.update(k_uu=a["k_uu"][0]), "k_pool_pool"),
    "y_labeled-rows": (lambda a: a.update(y=a["y"][:-1]), "y_labeled"),
    "y_labeled-nan": (lambda a: a.update(y=_with_nan(a["y"])), "y_labeled"),
    "targets-outputs": (lambda a: a.update(targets=np.eye(N_CLASSES + 1)), "targets"),
    "targets-inf": (lambda a: a.update(targets=_with_inf(a["targets"])), "targets"),
    "diag_reg-negative": (lambda a: a.update(diag_reg=-1e-3), "diag_reg"),
    "diag_reg-nan": (lambda a: a.update(diag_reg=np.nan), "diag_reg"),
    "fx_pool_0-shape": (lambda a: a.update(fx_pool_0=np.zeros((N_POOL + 1, N_CLASSES))), "fx_pool_0"),
    "fx_labeled_0-nan": (lambda a: a.update(fx_labeled_0=np.full((N_LABELED, N_CLASSES), np.nan)), "fx_labeled_0"),
    "label": (lambda a: a.update(label="expected"), "label"),
    "ord": (lambda a: a.update(ord=3), "ord"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_raises_value_error_naming_the_argument(problem, case):
    k_ss, k_us, k_uu = _blocks(problem)
    a = dict(k_ss=k_ss, k_us=k_us, k_uu=k_uu, y=problem["y"], targets=np.eye(N_CLASSES), diag_reg=1e-3,
             fx_pool_0=0.0, fx_labeled_0=0.0, label="predicted", ord=2)
    mutate, name = BAD[case]
    mutate(a)
    with pytest.raises(ValueError, match=name):
        lookahead_scores(a["k_ss"], a["k_us"], a["k_uu"], a["y"], a["targets"], a["diag_reg"],
                         fx_labeled_0=a["fx_labeled_0"], fx_pool_0=a["fx_pool_0"], label=a["label"], ord=a["ord"])


def test_singular_labeled_kernel_without_ridge_raises(problem):
    k_ss, k_us, k_uu = _blocks(problem)
    lab = [0, 0, 1]  # a repeated labelled point: K_SS singular
    with pytest.raises(ValueError, match="diag_reg"):
        lookahead_scores(k_ss[np.ix_(lab, lab)], k_us[:, lab], k_uu, problem["y"][lab], np.eye(N_CLASSES), 0.0)
