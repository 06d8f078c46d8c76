"""scikit-learn estimators: regression and classification with the NTK or NNGP of an infinite network.

The prediction is what gradient flow on the 1/(2n) MSE loss does to an infinitely wide
network (``kernel='ntk'``) or the GP posterior mean (``kernel='nngp'``), trained for
time ``t`` (t = None: to convergence, i.e. kernel ridge regression), from an initial
output of 0 (the mean over initialisations). ``diag_reg='gcv'`` picks the ridge by
generalised cross-validation from one eigendecomposition.

``solver='exact'`` (the default) forms the N×N kernel and factors it; ``solver='cg'`` solves the same
ridge problem by conjugate gradients on a matrix-free :class:`fastntk.solvers.KernelOperator`, and
``solver='falkon'`` solves Nyström kernel ridge regression on ``n_centers`` training points
(:func:`fastntk.solvers.falkon`): neither forms an N×N matrix, so they reach N = 10⁵–10⁶.
``solver='features'`` is ridge regression on ``n_features`` random features of the kernel
(:func:`fastntk.features.random_features`): O(N·m²), the kernel approximated by Φ Φᵀ. All
outputs (the one-vs-rest columns of a classifier) go through one solve.

:class:`NTKFeatures` is the feature map as a transformer, for a ``Pipeline`` with any linear model.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    RegressorMixin,
    TransformerMixin,
)
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.validation import check_is_fitted, validate_data

from . import features, predict, solvers, stax
from ._validation import check_integer, check_seed

__all__ = ["NTKClassifier", "NTKFeatures", "NTKRegressor"]

SOLVERS = ("exact", "cg", "falkon", "features")

#: Grid of relative ridges searched by diag_reg='gcv' (× trace(K)/N).
GCV_GRID = np.logspace(-8, 1, 37)


class _NetworkMixin:
    """The estimators' network (``depth``, ``activation``, ``W_std``, ``b_std``, ``parameterization``,
    ``width``), rebuilt when needed so that the estimators pickle, and its random feature map: drawn
    at fit from an int ``feature_seed_`` and rebuilt from it where it is missing (after unpickling:
    the map holds the activation's functions, which do not pickle)."""

    #: The feature map's method and degree (NTKFeatures takes both as parameters).
    method, degree = "random_features", None

    def _network(self):
        return stax.fc_network(self.depth, self.activation, self.W_std, self.b_std, self.parameterization,
                               self.width)

    def _draw_feature_map(self, seed, d, dtype):
        """Fix the map's seed (an int, or one drawn from a Generator: a new map per fit) and draw it."""
        self.feature_seed_ = int(seed if isinstance(seed, numbers.Integral) else
                                 check_seed(seed).integers(2**63))
        self.feature_dtype_ = np.dtype(dtype).name
        self.__dict__.pop("_feature_map", None)
        return self.feature_map_

    @property
    def feature_map_(self):
        """The fitted :class:`fastntk.features.FeatureMap` (see :func:`fastntk.features.random_features`)."""
        check_is_fitted(self, "feature_seed_")
        fmap = self.__dict__.get("_feature_map")
        if fmap is None:
            fmap = features.random_features(self._network()[2], self.n_features_in_, self.kernel, self.n_features,
                                            method=self.method, degree=self.degree, seed=self.feature_seed_,
                                            dtype=self.feature_dtype_)
            self.__dict__["_feature_map"] = fmap
        return fmap

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_feature_map", None)
        return state


class _NTKBase(_NetworkMixin, BaseEstimator):
    def __init__(self, depth=3, activation="relu", W_std=np.sqrt(2), b_std=0.1, parameterization="ntk",
                 width=512, kernel="ntk", t=None, learning_rate=1.0, diag_reg=1e-6, solver="exact", n_centers=1000,
                 n_features=4096, random_state=0):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.width = width
        self.kernel = kernel
        self.t = t
        self.learning_rate = learning_rate
        self.diag_reg = diag_reg
        self.solver = solver
        self.n_centers = n_centers
        self.n_features = n_features
        self.random_state = random_state

    @property
    def kernel_fn_(self):
        """kernel_fn of the fitted architecture (``fastntk.stax``); rebuilt, so the estimator pickles."""
        check_is_fitted(self, "coef_" if self.solver == "features" else "dual_coef_")
        return self._network()[2]

    def _fit_targets(self, X, Y):
        """Fit the dual coefficients for targets Y of shape (N, M)."""
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"kernel must be 'ntk' or 'nngp'; got {self.kernel!r}")
        if self.t is not None and not (isinstance(self.t, numbers.Real) and self.t >= 0):
            raise ValueError(f"t must be None (trained to convergence) or a time >= 0; got {self.t!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}; got {self.solver!r}")
        if self.solver != "exact":
            return self._fit_large(X, Y)
        kernel_fn = self._network()[2]
        k = kernel_fn(X, None, self.kernel)
        if isinstance(self.diag_reg, str):
            if self.diag_reg != "gcv":
                raise ValueError(f"diag_reg must be a number >= 0 or 'gcv'; got {self.diag_reg!r}")
            self.diag_reg_selection_ = predict.select_diag_reg(k, Y, GCV_GRID)
            self.diag_reg_ = self.diag_reg_selection_.diag_reg
        else:
            self.diag_reg_ = self.diag_reg
        if self.t is None:
            self.dual_coef_ = predict.kernel_ridge(k, Y, self.diag_reg_).dual_coef
        else:
            # f_test(t) = K_test,train · α_t: α_t is the test prediction for K_test,train = I.
            predict_fn = predict.gradient_descent_mse(k, Y, self.learning_rate, self.diag_reg_)
            self.dual_coef_ = predict_fn(self.t, 0.0, 0.0, np.eye(k.shape[0], dtype=k.dtype))[1]
        self.X_fit_ = X
        return self

    def _fit_large(self, X, Y):
        """solver='cg', 'falkon' or 'features': kernel ridge without an N×N matrix."""
        if isinstance(self.diag_reg, str) or self.t is not None:
            what = f"diag_reg={self.diag_reg!r}" if isinstance(self.diag_reg, str) else f"t={self.t!r}"
            raise ValueError(f"{what} needs solver='exact' (an eigendecomposition of the N×N kernel); "
                             f"solver={self.solver!r} fits t=None with a numeric diag_reg")
        self.diag_reg_ = self.diag_reg
        if self.solver == "features":
            check_integer(self.n_features, "n_features", minimum=2)
            fmap = self._draw_feature_map(self.random_state, X.shape[1], X.dtype)
            self.coef_ = solvers.feature_ridge(fmap.transform(X), Y, self.diag_reg_).astype(X.dtype)
            return self
        op = solvers.KernelOperator(self._network()[2], X, get=self.kernel)
        if self.solver == "cg":
            pre = "nystrom" if self.diag_reg_ else None
            res = predict.kernel_ridge(op, Y, self.diag_reg_, solver="cg", preconditioner=pre,
                                       rank=min(100, X.shape[0]), seed=self.random_state)
            self.X_fit_ = X
        else:
            m = check_integer(self.n_centers, "n_centers")  # at most N: fewer points are all centres
            res = predict.kernel_ridge(op, Y, self.diag_reg_, solver="falkon", n_centers=min(m, X.shape[0]),
                                       seed=self.random_state)
            self.centers_, self.X_fit_ = res.centers, X[res.centers]
        self.dual_coef_ = res.dual_coef.astype(X.dtype, copy=False)
        return self

    def _decision(self, X):
        check_is_fitted(self, "coef_" if self.solver == "features" else "dual_coef_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        if self.solver == "features":
            return (self.feature_map_.transform(X.astype(self.feature_map_.dtype, copy=False)) @ self.coef_).astype(
                X.dtype, copy=False)
        if self.solver == "exact":
            return self.kernel_fn_(X, self.X_fit_, self.kernel) @ self.dual_coef_
        op = solvers.KernelOperator(self.kernel_fn_, X, self.X_fit_, get=self.kernel)
        out = op @ self.dual_coef_.reshape(len(self.X_fit_), -1)  # row blocks of K(X, X_fit_), float64
        return out.reshape(-1, *self.dual_coef_.shape[1:]).astype(self.dual_coef_.dtype, copy=False)


class NTKRegressor(RegressorMixin, _NTKBase):
    """Regression by an infinitely wide fully-connected network trained with gradient flow.

    Parameters
    ----------
    depth : int, default 3
        Hidden layers.
    activation : str, default 'relu'
        A name in ``fastntk.activations.ACTIVATIONS``.
    W_std, b_std : float, default √2 and 0.1
        Weight and bias standard deviations (b_std None: no biases).
    parameterization : {'ntk', 'standard'}
    width : int, default 512
        Hidden width; enters the kernel in the 'standard' parameterization only.
    kernel : {'ntk', 'nngp'}
        NTK: the trained network's mean prediction; NNGP: Bayesian posterior mean.
    t : float or None
        Training time in units of ``learning_rate`` (τ = learning_rate·t); None = ∞.
    learning_rate : float
    diag_reg : float >= 0 or 'gcv'
        Ridge relative to trace(K)/N, as neural-tangents; 'gcv' picks it on ``GCV_GRID``
        (solver='exact' only).
    solver : {'exact', 'cg', 'falkon', 'features'}
        'exact': the N×N kernel, factored (any ``t`` and ``diag_reg``). 'cg': conjugate gradients on
        a matrix-free kernel operator (Nyström-preconditioned when diag_reg > 0), the same ridge
        solution. 'falkon': Nyström kernel ridge regression on ``n_centers`` training points drawn
        with ``random_state``. 'features': ridge regression on ``n_features`` random features of the
        kernel drawn with ``random_state`` (the ridge relative to trace(Φ Φᵀ)/N). 'cg', 'falkon' and
        'features' fit t=None with a numeric diag_reg.
    n_centers : int >= 1
        M for solver='falkon', at most the N training points (with fewer, every point is a centre:
        exact kernel ridge regression).
    n_features : int >= 2
        The most random features for solver='features'.
    random_state : int or numpy.random.Generator
        Seed of the centres ('falkon'), of the Nyström preconditioner ('cg') and of the features ('features').

    Attributes
    ----------
    dual_coef_ : ndarray of shape (N,) or (N, O); (M,) or (M, O) with solver='falkon'; not with 'features'
    coef_ : ndarray of shape (m,) or (m, O), solver='features': the weights of the features
    feature_map_ : fastntk.features.FeatureMap, solver='features' (drawn from ``feature_seed_``)
    X_fit_ : ndarray of shape (N, d); (M, d), the centres, with solver='falkon'
    centers_ : ndarray of shape (M,), solver='falkon': the centres' indices among the training points
    diag_reg_ : float
    diag_reg_selection_ : fastntk.predict.DiagRegSelection, when diag_reg='gcv'
    kernel_fn_ : the architecture's kernel_fn
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), y_numeric=True, multi_output=True)
        self._fit_targets(X, np.asarray(y, dtype=X.dtype))
        return self

    def predict(self, X):
        """Predictions, shape (N_test,) or (N_test, O)."""
        return self._decision(X)


class NTKClassifier(ClassifierMixin, _NTKBase):
    """Classification by regressing one-hot targets with an infinitely wide network (Arora et al. 2019).

    Parameters are those of :class:`NTKRegressor`. ``predict`` takes the arg-max output.

    Attributes
    ----------
    classes_ : ndarray of shape (C,)
    dual_coef_ : ndarray of shape (N, C)
    """

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        self._binarizer = LabelBinarizer().fit(y)
        self.classes_ = self._binarizer.classes_
        Y = self._binarizer.transform(y).astype(X.dtype)
        if Y.shape[1] == 1:  # two classes: one column per class
            Y = np.hstack([1 - Y, Y])
        self._fit_targets(X, Y)
        return self

    def decision_function(self, X):
        """Network outputs, shape (N_test, C); for two classes output₁ − output₀, shape (N_test,)."""
        out = self._decision(X)
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out

    def predict(self, X):
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)]


class NTKFeatures(_NetworkMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Random features Φ of the NTK or NNGP of an infinitely wide fully-connected network.

    ``transform(X)`` gives Φ(X), shape (N, n_out) with n_out <= ``n_features``, and
    Φ(X1)·Φ(X2)ᵀ approximates ``kernel_fn_(X1, X2, kernel)`` (:func:`fastntk.features.random_features`:
    unbiased for one hidden layer, error falling like n_features^(−1/2)). A linear model on Φ is
    kernel regression with the approximate kernel, in O(N·n_features²): use it in a ``Pipeline``
    with ``Ridge``, ``RidgeCV`` or ``SGDRegressor``.

    Parameters
    ----------
    depth, activation, W_std, b_std, parameterization, width, kernel : the network and kernel, as
        :class:`NTKRegressor`'s
    method : {'random_features', 'sketch'}
        'sketch': NTKSketch, a polynomial of the cosine sketched by PolySketch (bias-free ReLU-family
        networks only: ``b_std=None``; :func:`fastntk.features.random_features`).
    n_features : int >= 2
    degree : int or None
        The polynomial's degree for method='sketch' (None: the default there); None for 'random_features'.
    seed : int, numpy.random.Generator or None
        Of the map, drawn by ``fit``. None: seed 0, so that fitting twice gives the same map
        (scikit-learn's estimator checks require it); a Generator draws a new map at every fit.

    Attributes
    ----------
    feature_map_ : fastntk.features.FeatureMap
    feature_seed_ : int, the seed the map is drawn from (from a Generator: drawn from it at fit)
    n_features_in_ : int
    kernel_fn_ : the architecture's kernel_fn
    """

    def __init__(self, depth=3, activation="relu", W_std=np.sqrt(2), b_std=0.1, parameterization="ntk", width=512,
                 kernel="ntk", method="random_features", n_features=4096, degree=None, seed=None):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.width = width
        self.kernel = kernel
        self.method = method
        self.n_features = n_features
        self.degree = degree
        self.seed = seed

    @property
    def kernel_fn_(self):
        check_is_fitted(self, "feature_seed_")
        return self._network()[2]

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=(np.float64, np.float32))
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"kernel must be 'ntk' or 'nngp'; got {self.kernel!r}")
        self._n_features_out = self._draw_feature_map(0 if self.seed is None else self.seed, X.shape[1], X.dtype).n_out
        return self

    def transform(self, X):
        """Φ(X): (N, n_out) of X's dtype (float32 or float64)."""
        check_is_fitted(self, "feature_seed_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return self.feature_map_.transform(X.astype(self.feature_map_.dtype, copy=False))
