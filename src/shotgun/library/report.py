"""Source-model quality of a library: ``report.md``, a self-contained ``report.html`` and PNGs.

What the library holds (models per material class, property and descriptor), how good its models
are (test R² per property as a distribution), its weakest cells, the models whose test R² is
below zero (``weak`` in the index: transfer skips them unless asked to keep them) and the models
that failed to train (listed in the manifest, not in the library).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..markup import fmt, write_pages
from .store import Library

WEAKEST = 10  # cells listed as the weakest
CELL = ["material_class", "dataset", "property", "descriptor"]


def cell_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per (class, dataset, property, descriptor): models, weak models, test R²
    median and range, the unit and the median test MAE."""
    g = index.groupby(CELL, sort=True)
    return pd.DataFrame(
        {
            "models": g.size(),
            "weak": g["weak"].sum().astype(int),
            "median_r2": g["test_r2"].median(),
            "min_r2": g["test_r2"].min(),
            "max_r2": g["test_r2"].max(),
            "median_mae": g["test_mae"].median(),
            "unit": g["unit"].first(),
            "n_train": g["n_train"].max(),
        }
    ).reset_index()


def plot_r2(index: pd.DataFrame, path: Path) -> None:
    """Test R² of every model, one row of points and a box per (dataset, property), grouped by
    material class; values below -1 are drawn at -1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = index.groupby(["material_class", "dataset", "property"])["test_r2"].median()
    order = order.sort_values(ascending=False).sort_index(level=0, sort_remaining=False)
    labels = [f"{d}/{p}" for _, d, p in order.index]
    values = [
        np.clip(
            index[
                (index["material_class"] == c) & (index["dataset"] == d) & (index["property"] == p)
            ]["test_r2"].to_numpy(),
            -1,
            1,
        )
        for c, d, p in order.index
    ]
    colours = {c: f"C{i}" for i, c in enumerate(sorted(index["material_class"].unique()))}
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.22 * len(labels)))
    ax.boxplot(values, vert=False, widths=0.6, showfliers=False)
    for i, ((c, _, _), v) in enumerate(zip(order.index, values), 1):
        jitter = np.random.default_rng(i).uniform(-0.2, 0.2, len(v))
        ax.scatter(v, i + jitter, s=6, color=colours[c], alpha=0.7)
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlim(-1.05, 1.02)
    ax.set_xlabel("test R² (held-out 20 % of each cell; below -1 drawn at -1)")
    for c, colour in colours.items():
        ax.scatter([], [], color=colour, label=c)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _blocks(lib: Library, cells: pd.DataFrame) -> list[tuple]:
    index, manifest = lib.index, lib.manifest
    failed = manifest.get("failed", [])
    weak = index[index["weak"]]
    b: list[tuple] = [("h", 1, f"Library report: {lib.root.name} (version {lib.version})")]
    b += [
        (
            "ul",
            [
                f"library: {lib.root}",
                f"models: {len(index)} in {len(cells)} cells (material class, dataset, property, "
                f"descriptor); {index['dataset'].nunique()} datasets, "
                f"{len(index.groupby(['dataset', 'property']))} properties",
                f"built {manifest.get('created', '-')} by shotgun "
                f"{manifest.get('shotgun_version', '-')}",
                f"weak models (test R² < 0, or undefined): {len(weak)}; "
                f"failed to train: {len(failed)}",
            ],
        )
    ]
    per_class = (
        index.assign(cell=index["dataset"] + "/" + index["property"])
        .groupby(["material_class", "descriptor"])
        .agg(
            models=("model_id", "size"),
            properties=("cell", "nunique"),  # (dataset, property) pairs
            median_r2=("test_r2", "median"),
        )
        .reset_index()
    )
    b += [
        ("h", 2, "Models per material class and descriptor"),
        (
            "table",
            ["class", "descriptor", "models", "properties", "median test R²"],
            [
                [
                    r.material_class,
                    r.descriptor,
                    fmt(int(r.models)),
                    fmt(int(r.properties)),
                    fmt(r.median_r2),
                ]
                for r in per_class.itertuples()
            ],
        ),
    ]
    b += [
        ("h", 2, "Test R² per property"),
        ("p", "Every model's R² on its cell's held-out test rows; boxes span the middle half."),
        ("img", "r2.png", "test R² per property"),
    ]
    worst = cells.sort_values(["median_r2", "dataset"]).head(WEAKEST)
    header = [
        "class",
        "dataset",
        "property",
        "descriptor",
        "models",
        "weak",
        "median R²",
        "min R²",
        "median MAE",
        "unit",
        "training rows",
    ]
    b += [
        ("h", 2, f"The {len(worst)} weakest cells (lowest median test R²)"),
        (
            "table",
            header,
            [
                [
                    r.material_class,
                    r.dataset,
                    r.property,
                    r.descriptor,
                    fmt(int(r.models)),
                    fmt(int(r.weak)),
                    fmt(r.median_r2),
                    fmt(r.min_r2),
                    fmt(r.median_mae),
                    r.unit,
                    fmt(int(r.n_train)),
                ]
                for r in worst.itertuples()
            ],
        ),
    ]
    b += [
        ("h", 2, "Weak models"),
        (
            "p",
            "A model whose test R² is below zero (or undefined) predicts its own property "
            "worse than the training mean. It stays in the library, flagged `weak` in the "
            "index, and `shotgun transfer` leaves it out of the candidates unless given "
            "--keep-weak.",
        ),
    ]
    if len(weak):
        b.append(
            (
                "table",
                ["model", "dataset", "property", "descriptor", "test R²"],
                [
                    [r.model_id, r.dataset, r.property, r.descriptor, fmt(r.test_r2)]
                    for r in weak.sort_values("test_r2").itertuples()
                ],
            )
        )
    b += [
        ("h", 2, "Models that failed to train"),
        (
            "p",
            "No finite validation loss: no weights, left out of the library."
            if failed
            else "None.",
        ),
    ]
    if failed:
        b.append(
            (
                "table",
                ["model", "dataset", "property", "descriptor", "reason"],
                [
                    [f["model_id"], f["dataset"], f["property"], f["descriptor"], f["failure"]]
                    for f in failed
                ],
            )
        )
    b += [
        ("h", 2, "Every cell"),
        (
            "table",
            header,
            [
                [
                    r.material_class,
                    r.dataset,
                    r.property,
                    r.descriptor,
                    fmt(int(r.models)),
                    fmt(int(r.weak)),
                    fmt(r.median_r2),
                    fmt(r.min_r2),
                    fmt(r.median_mae),
                    r.unit,
                    fmt(int(r.n_train)),
                ]
                for r in cells.itertuples()
            ],
        ),
    ]
    return b


def write_library_report(library: Path, out: Path) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``r2.png`` and ``cells.csv`` into ``out``."""
    lib = Library.open(library)
    if lib.index.empty:
        raise ValueError(f"{library}: the library holds no model")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = cell_table(lib.index)
    cells.to_csv(out / "cells.csv", index=False)
    plot_r2(lib.index, out / "r2.png")
    return [out / "cells.csv", out / "r2.png", *write_pages(out, _blocks(lib, cells))]
