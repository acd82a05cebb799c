"""The plots of a transfer run: parity of the best transfer pipeline and the best baseline, and
the learning curve of the nested selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parity_plot(path: Path, y, best, base, best_label: str, base_label: str, unit: str):
    """Cross-validated predictions against measured values; ``best`` and ``base`` are
    (rows, predictions) of the transfer pipeline and the baseline."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = float(np.min(y)), float(np.max(y))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.scatter(y[base[0]], base[1], s=14, alpha=0.6, label=f"baseline: {base_label}")
    ax.scatter(y[best[0]], best[1], s=14, alpha=0.8, label=f"transfer: {best_label}")
    ax.set_xlabel(f"measured {unit}")
    ax.set_ylabel(f"cross-validated prediction {unit}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve_plot(path: Path, curve: pd.DataFrame, unit: str):
    """MAE on the outer test folds against the training rows, per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    if curve.empty:
        ax.text(0.5, 0.5, "no learning curve (nested CV off)", ha="center", transform=ax.transAxes)
    for method, g in curve.groupby("method"):
        ax.plot(g["n"], g["mae"], marker="o", label=method)
    ax.set_xscale("log" if len(curve) else "linear")
    ax.set_xlabel(
        "training rows (transfer: ridge; baseline: ridge or random forest; "
        "chosen inside each outer training fold)",
        fontsize=7,
    )
    ax.set_ylabel(f"MAE on outer test folds {unit}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
