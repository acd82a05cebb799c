"""The plots of a transfer run: parity of the best transfer pipeline and the best baseline, and
the learning curve of the nested selection. Each figure is built by a ``*_figure`` function (so
its layout can be checked) and written by the matching ``*_plot``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .plans import NESTED_MAX_ROWS

CURVE_NOTE = (
    "No learning curve: it is computed with the nested estimate,\n"
    f"which was off for this run (--no-nested, or over {NESTED_MAX_ROWS:,} rows)."
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def mae_r2(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """MAE and R² (against the mean of ``y``) of predictions."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    return float(np.mean(np.abs(y - pred))), r2


def parity_figure(y, best, base, best_label: str, base_label: str, unit: str):
    """Cross-validated predictions against measured values with the y = x line; ``best`` and
    ``base`` are (rows, predictions) of the transfer pipeline and the baseline, each labelled
    with its MAE and R²."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    values = [np.asarray(y, dtype=np.float64)]
    for (rows, pred), label, alpha in (
        (base, f"baseline: {base_label}", 0.6),
        (best, f"transfer: {best_label}", 0.8),
    ):
        mae, r2 = mae_r2(y[rows], pred)
        ax.scatter(y[rows], pred, s=14, alpha=alpha, label=f"{label}\nMAE {mae:.3g}, R² {r2:.3f}")
        values.append(np.asarray(pred, dtype=np.float64))
    lo, hi = min(float(np.min(v)) for v in values), max(float(np.max(v)) for v in values)
    pad = 0.04 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="y = x", zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"measured {unit}")
    ax.set_ylabel(f"cross-validated prediction {unit}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def parity_plot(path: Path, y, best, base, best_label: str, base_label: str, unit: str):
    """Write :func:`parity_figure` to ``path``."""
    _save(parity_figure(y, best, base, best_label, base_label, unit), path)


def curve_figure(curve: pd.DataFrame, unit: str):
    """MAE on the outer test folds against the training rows, per method, on a log axis ticked
    at the sizes measured; a short note instead when there is no curve (nested CV off)."""
    plt = _pyplot()
    if curve.empty:
        fig = plt.figure(figsize=(5, 1.2))
        fig.text(0.5, 0.5, CURVE_NOTE, ha="center", va="center", fontsize=9)
        return fig
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for method, g in curve.groupby("method"):
        ax.plot(g["n"], g["mae"], marker="o", label=method)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(curve["n"].unique())))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training rows of each outer fold")
    ax.set_ylabel(f"MAE on outer test folds {unit}")
    ax.set_title(
        "transfer: ridge; baseline: ridge or random forest;\n"
        "each chosen inside its outer training fold",
        fontsize=8,
    )
    ax.legend()
    fig.tight_layout()
    return fig


def curve_plot(path: Path, curve: pd.DataFrame, unit: str):
    """Write :func:`curve_figure` to ``path``."""
    _save(curve_figure(curve, unit), path)
