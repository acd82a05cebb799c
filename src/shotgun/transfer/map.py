"""Transferability map: how much each source property of a library helps each other property.

Every (dataset, property) the library was trained on is also a target: a seeded subsample of
``n`` rows of its prepared table (``<results>/data/<dataset>/<property>.parquet``, columns
``input`` and ``target``) is screened with :func:`shotgun.transfer.screen.screen_quick` against
the library models applicable to its material class, its own models left out. Transfer and
from-scratch baselines share the folds; the gain of a source property for a target is
``1 - min CV MAE over the source property's models / min CV MAE over the baselines``. A pair is a
bridge when source and target material classes differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

KEY = ["dataset", "property", "material_class"]
COLUMNS = [
    "source_dataset",
    "source_property",
    "source_class",
    "target_dataset",
    "target_property",
    "target_class",
    "n",
    "n_models",
    "best_model",
    "transfer_cv_mae",
    "baseline",
    "baseline_cv_mae",
    "gain",
    "bridge",
]


def library_properties(library) -> pd.DataFrame:
    """(dataset, property, material_class) of every property the library was trained on."""
    return (
        library.index[KEY]
        .drop_duplicates()
        .sort_values(["material_class", "dataset", "property"])
        .reset_index(drop=True)
    )


def read_target(results: Path, dataset: str, prop: str, n: int, seed: int):
    """Inputs and targets of a seeded subsample of ``n`` rows of a prepared property table."""
    table = pd.read_parquet(
        Path(results) / "data" / dataset / f"{prop}.parquet", columns=["input", "target"]
    )
    if len(table) > n:
        table = table.sample(n=n, random_state=seed)
    return table["input"].astype(str).to_numpy(), table["target"].to_numpy(dtype=np.float64)


def candidates(library, dataset: str, prop: str, kind: str) -> pd.DataFrame:
    """Library models applicable to ``kind`` inputs, the target property's own models and weak
    models excluded."""
    c = library.applicable(kind)
    return c[~((c["dataset"] == dataset) & (c["property"] == prop)) & ~c["weak"]]


def transfer_map(
    library, results: Path, n: int = 50, seed: int = 0, folds: int = 5, log=print
) -> pd.DataFrame:
    """One row per applicable (source property, target property) pair; see the module doc."""
    from ..progress import progress
    from .screen import screen_quick

    props = library_properties(library)
    rows = []
    targets = progress(props.itertuples(index=False), "transfer map", "targets", len(props))
    for t in targets:
        cands = candidates(library, t.dataset, t.property, t.material_class)
        if cands.empty:
            log(f"{t.dataset}/{t.property}: no applicable source model, skipped")
            continue
        inputs, y = read_target(results, t.dataset, t.property, n, seed)
        ranking, baselines = screen_quick(
            library,
            inputs,
            y,
            t.material_class,
            model_ids=list(cands["model_id"]),
            folds=folds,
            seed=seed,
        )
        base = baselines.loc[baselines["cv_mae"].idxmin()]
        for (sd, sp, sc), g in ranking.groupby(KEY, sort=True):
            best = g.loc[g["cv_mae"].idxmin()]
            rows.append(
                {
                    "source_dataset": sd,
                    "source_property": sp,
                    "source_class": sc,
                    "target_dataset": t.dataset,
                    "target_property": t.property,
                    "target_class": t.material_class,
                    "n": len(y),
                    "n_models": int(g["model_id"].nunique()),
                    "best_model": best["model_id"],
                    "transfer_cv_mae": float(best["cv_mae"]),
                    "baseline": base["name"],
                    "baseline_cv_mae": float(base["cv_mae"]),
                    "gain": 1.0 - float(best["cv_mae"]) / float(base["cv_mae"]),
                    "bridge": sc != t.material_class,
                }
            )
        log(
            f"{t.dataset}/{t.property}: {len(y)} rows, {cands['model_id'].nunique()} candidates, "
            f"baseline MAE {base['cv_mae']:.4g}"
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_transfer_map(df: pd.DataFrame, props: pd.DataFrame, path: Path) -> None:
    """Heatmap of gains, source property (rows) x target property (columns); bridges hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    labels = [f"{p.dataset}/{p.property}" for p in props.itertuples(index=False)]
    pos = {lab: i for i, lab in enumerate(labels)}
    gain = np.full((len(labels), len(labels)), np.nan)
    bridges = []
    for r in df.itertuples(index=False):
        i = pos[f"{r.source_dataset}/{r.source_property}"]
        j = pos[f"{r.target_dataset}/{r.target_property}"]
        gain[i, j] = r.gain
        if r.bridge:
            bridges.append((i, j))
    finite = gain[np.isfinite(gain)]
    # Gains are at most 1 and unbounded below: clip the colour scale to [-1, 1] at most.
    lim = min(1.0, max(0.05, float(np.abs(finite).max()))) if finite.size else 1.0
    k = len(labels)
    fig, ax = plt.subplots(figsize=(max(6.0, 3 + 0.45 * k), 2.5 + 0.4 * k))
    cmap = plt.get_cmap("RdBu").copy()
    cmap.set_bad("#e6e6e6")
    im = ax.imshow(np.ma.masked_invalid(gain), cmap=cmap, vmin=-lim, vmax=lim)
    for i, j in bridges:
        ax.add_patch(
            Rectangle(
                (j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor=(0, 0, 0, 0.4), lw=1.0
            )
        )
    if k <= 30:
        for i, j in zip(*np.nonzero(np.isfinite(gain))):
            ax.text(
                j,
                i,
                f"{gain[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if abs(gain[i, j]) > 0.6 * lim else "black",
            )
    ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    ax.set_xlabel("target property")
    ax.set_ylabel("source property")
    ax.set_title(
        "gain = 1 - MAE(transfer) / MAE(baseline), same folds\n"
        "hatched: source of another material class; grey: not applicable",
        fontsize=8,
    )
    extend = "min" if finite.size and finite.min() < -lim else "neither"
    fig.colorbar(im, ax=ax, shrink=0.7, label="gain", extend=extend)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_transfer_map(
    library_path: Path,
    results: Path,
    out: Path,
    n: int = 50,
    seed: int = 0,
    folds: int = 5,
    log=print,
) -> pd.DataFrame:
    """Compute the map and write ``transfer_map.csv`` and ``transfer_map.png`` into ``out``."""
    from ..library import Library

    lib = Library.open(library_path)
    df = transfer_map(lib, Path(results), n=n, seed=seed, folds=folds, log=log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "transfer_map.csv", index=False)
    plot_transfer_map(df, library_properties(lib), out / "transfer_map.png")
    return df
