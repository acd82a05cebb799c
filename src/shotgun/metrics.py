"""Regression metrics, the same for source models (test split) and transfer (cross-validation)."""

from __future__ import annotations

import numpy as np


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """``{"mae", "rmse", "r2"}`` of predictions ``pred`` for targets ``y`` (R² NaN if y is
    constant)."""
    err = pred - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": float(1.0 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
    }


def squared_correlations(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Pearson correlation of each column of ``P`` with ``y`` (0 for a constant column):
    the R² of a straight-line fit of ``y`` on that column alone."""
    Pc, yc = P - P.mean(axis=0), y - y.mean()
    norm = np.sqrt((Pc**2).sum(axis=0) * (yc**2).sum())
    r = np.divide(Pc.T @ yc, norm, out=np.zeros(P.shape[1]), where=norm > 0)
    return r**2
