"""Downstream learners of transfer: fitted on neural (or raw) descriptors of a small target.

``make_learner`` gives scikit-learn estimators (standardised inputs). ``ridge_batch`` is the ridge
learner for screening many candidates at once: the same estimator as ``make_learner("ridge")``
(standardise on the training rows, penalty chosen by efficient leave-one-out CV over ``ALPHAS``,
as scikit-learn's ``RidgeCV``), vectorised over candidates through their Gram matrices.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

LEARNERS = ("ridge", "bayesian_ridge", "gp", "random_forest", "mlp")
TRANSFER_LEARNERS = ("ridge", "bayesian_ridge", "gp")  # default on neural features
BASELINE_LEARNERS = ("ridge", "random_forest", "mlp")  # from scratch on raw descriptors
PROPERTY_LEARNERS = ("ridge", "random_forest")  # on the source models' predictions
ALPHAS = np.logspace(-3, 4, 15)
# Standardised features are clipped to +-CLIP, as the library networks clip their inputs: a
# feature constant up to rounding on the training rows (the variance of the magnetic moments of
# compounds without a magnetic element) must not send a test row to 1e6 sigma and a linear
# model's prediction with it.
CLIP = 10.0


def _constant(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Features whose spread on the training rows is rounding noise: scaled by 1, not blown up
    (e.g. a composition statistic equal on every training row up to floating-point error)."""
    return np.sqrt(var) <= 1e-9 * np.maximum(np.abs(mean), 1.0)


def _standardizer():
    from sklearn.preprocessing import StandardScaler

    class Standardizer(StandardScaler):
        """StandardScaler with rounding-noise features treated as constant, clipped to
        +-``CLIP``."""

        def fit(self, X, y=None, sample_weight=None):
            super().fit(X, y, sample_weight)
            self.scale_ = np.where(_constant(self.mean_, self.var_), 1.0, self.scale_)
            return self

        def transform(self, X, copy=None):
            return np.clip(super().transform(X, copy=copy), -CLIP, CLIP)

    return Standardizer()


def make_learner(name: str, seed: int):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.linear_model import BayesianRidge, RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "ridge":
        return make_pipeline(_standardizer(), RidgeCV(alphas=ALPHAS))
    if name == "bayesian_ridge":
        return make_pipeline(_standardizer(), BayesianRidge())
    if name == "gp":  # isotropic RBF on standardised features, noise fitted, y normalised
        kernel = ConstantKernel(1.0) * RBF(length_scale=10.0) + WhiteKernel(0.1)
        return make_pipeline(
            _standardizer(), GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed)
        )
    if name == "random_forest":
        return RandomForestRegressor(n_estimators=100, max_features=0.33, random_state=seed)
    if name == "mlp":  # from scratch: two hidden layers of 64, weight decay, standardised target
        return TransformedTargetRegressor(
            make_pipeline(
                _standardizer(),
                MLPRegressor(
                    hidden_layer_sizes=(64, 64), alpha=1e-2, max_iter=200, random_state=seed
                ),
            ),
            transformer=StandardScaler(),
        )
    raise ValueError(f"unknown learner {name!r} (known: {', '.join(LEARNERS)})")


def fit_learner(name: str, seed: int, X_train, y_train):
    """One learner fitted on the training rows (an MLP that stops at its iteration cap is used
    as it is)."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_learner(name, seed).fit(X_train, y_train)


def fit_predict(name: str, seed: int, X_train, y_train, X_test) -> np.ndarray:
    """One learner fitted on the training rows, predictions for the test rows."""
    return fit_learner(name, seed, X_train, y_train).predict(X_test)


def _standardise(F: np.ndarray, train: np.ndarray):
    """Scaled and clipped as the learners' standardizer does on the training rows, then centred
    exactly."""
    mean, var = F[train].mean(axis=0), F[train].var(axis=0)
    Z = np.clip((F - mean) / np.where(_constant(mean, var), 1.0, np.sqrt(var)), -CLIP, CLIP)
    return Z - Z[train].mean(axis=0)


def _ridge_loo(M, Mt, L, w, g, yc, n) -> np.ndarray:
    """Test predictions (centred) at each candidate's alpha of least mean squared LOO error.

    In the eigenbasis (eigenvalues ``w``), training fits are ``M diag(1/(w+a)) g``, test fits
    ``Mt diag(1/(w+a)) g`` and the hat matrix diagonal ``L 1/(w+a)``; the unpenalised intercept
    adds 1/n to the leverage. Shapes: (C, n, r), (C, m, r), (C, n, r), (C, r), (C, r).
    """
    D = 1.0 / (w[:, :, None] + ALPHAS[None, None, :])  # (C, r, A)
    fit = M @ (D * g[:, :, None])  # (C, n, A)
    lev = L @ D + 1.0 / n
    loo = (((yc[None, :, None] - fit) / (1.0 - lev)) ** 2).mean(axis=1)  # (C, A)
    best = loo.argmin(axis=1)  # first minimum, as RidgeCV
    Db = D[np.arange(len(w)), :, best]  # (C, r)
    return (Mt @ (Db * g)[:, :, None])[:, :, 0]


def ridge_batch(
    Fs: Sequence[np.ndarray], y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> np.ndarray:
    """Ridge predictions for ``test`` from each feature matrix in ``Fs`` (rows = all samples),
    fitted on ``train``; returns (len(Fs), len(test)).

    The penalty of each is chosen by exact leave-one-out error over ``ALPHAS`` with the intercept
    unpenalised, as ``RidgeCV`` does: from the eigendecomposition of the centred Gram matrix
    (batched over candidates) when there are no more training rows than features, else of the
    covariance matrix.
    """
    n = len(train)
    y_mean = y[train].mean()
    yc = y[train] - y_mean
    Z = [_standardise(np.asarray(F, dtype=np.float64), train) for F in Fs]
    out = np.empty((len(Fs), len(test)))
    gram = [i for i, z in enumerate(Z) if n <= z.shape[1]]
    if gram:
        K = np.stack([Z[i][train] @ Z[i][train].T for i in gram])  # (C, n, n)
        Kt = np.stack([Z[i][test] @ Z[i][train].T for i in gram])  # (C, m, n)
        w, Q = np.linalg.eigh(K)
        w = np.clip(w, 0.0, None)
        g = Q.transpose(0, 2, 1) @ yc
        out[gram] = _ridge_loo(Q * w[:, None, :], Kt @ Q, Q**2 * w[:, None, :], w, g, yc, n)
    for i in (i for i in range(len(Z)) if n > Z[i].shape[1]):
        z = Z[i]
        w, V = np.linalg.eigh(z[train].T @ z[train])
        w = np.clip(w, 0.0, None)
        P = z[train] @ V
        out[i] = _ridge_loo(
            P[None], (z[test] @ V)[None], (P**2)[None], w[None], (P.T @ yc)[None], yc, n
        )[0]
    return out + y_mean
