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
