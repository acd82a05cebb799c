"""Shotgun transfer learning: screen library models as frozen feature extractors for a small target.

For every candidate model whose descriptor accepts the target's inputs, the pre-activation outputs
of its last ``depth`` hidden layers become features for a downstream learner, scored by K-fold
cross-validation. A from-scratch baseline (the same learners on the raw descriptors) is scored on
the same folds. Choosing the best of many candidates on the same folds is optimistic: compare its
error with the baseline's knowing that.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import MATERIAL_CLASSES
from .training import regression_metrics

LEARNERS = ("ridge", "random_forest")


class TransferError(ValueError):
    pass


def make_learner(name: str, seed: int):
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "ridge":  # penalty chosen by efficient leave-one-out CV inside each training fold
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
    if name == "random_forest":
        return RandomForestRegressor(n_estimators=100, max_features=0.33, random_state=seed)
    raise TransferError(f"unknown learner {name!r} (known: {', '.join(LEARNERS)})")


def cross_val_predict(X: np.ndarray, y: np.ndarray, folds, learner: str, seed: int) -> np.ndarray:
    pred = np.empty_like(y)
    for train, test in folds:
        model = make_learner(learner, seed).fit(X[train], y[train])
        pred[test] = model.predict(X[test])
    return pred


def load_target(data: Path, input_col: str, target_col: str, kind: str):
    """Inputs and float targets of the target CSV, with clear errors."""
    from .featurize import read_table

    if kind not in MATERIAL_CLASSES:
        raise TransferError(f"unknown --kind {kind!r} (choose from {', '.join(MATERIAL_CLASSES)})")
    try:
        df = read_table(data, input_col)
    except (FileNotFoundError, ValueError) as err:
        raise TransferError(str(err)) from err
    if target_col not in df.columns:
        raise TransferError(f"{data}: no column {target_col!r} (columns: {', '.join(df.columns)})")
    y = pd.to_numeric(df[target_col], errors="coerce").to_numpy(dtype=np.float64)
    return df[input_col].astype(str).to_numpy(), y


def _candidates(library, kind: str, max_models: int | None) -> pd.DataFrame:
    cands = library.applicable(kind).sort_values(["test_r2", "model_id"], ascending=[False, True])
    if max_models:
        cands = cands.head(max_models)
    if cands.empty:
        raise TransferError(f"{library.root}: no model in the library accepts {kind} inputs")
    return cands.reset_index(drop=True)


def _parity(path: Path, y, best_pred, base_pred, best_label: str, base_label: str, unit: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = float(np.min(y)), float(np.max(y))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.scatter(y, base_pred, s=14, alpha=0.6, label=f"baseline: {base_label}")
    ax.scatter(y, best_pred, s=14, alpha=0.8, label=f"transfer: {best_label}")
    ax.set_xlabel(f"measured {unit}")
    ax.set_ylabel(f"cross-validated prediction {unit}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_transfer(library: Path, data: Path, input_col: str, target_col: str, kind: str,
                 out: Path, folds: int = 5, seed: int = 0, max_models: int | None = None,
                 max_depth: int = 2, learners: Sequence[str] = LEARNERS) -> dict:
    """Screen the library for ``data`` and write summary.json, ranking.csv and parity.png."""
    from sklearn.model_selection import KFold

    from .descriptors import for_kind
    from .featurize import featurize_inputs
    from .library import Library

    start = time.perf_counter()
    for name in learners:
        make_learner(name, seed)
    inputs, y = load_target(data, input_col, target_col, kind)
    lib = Library.open(library)
    cands = _candidates(lib, kind, max_models)
    models = {mid: lib.load(mid) for mid in cands["model_id"]}  # each file verified once
    cards = {mid: m.card for mid, m in models.items()}

    # One descriptor matrix per distinct descriptor spec among the candidates, computed by the
    # descriptor that maps the target's inputs into that spec's feature space.
    specs = {json.dumps(c["descriptor"], sort_keys=True): c["descriptor"] for c in cards.values()}
    keep = np.isfinite(y)
    raw, names = {}, {}
    for key, spec in specs.items():
        d = for_kind(spec, kind)
        X, ok, _, _ = featurize_inputs(inputs, d)
        raw[key], names[key] = X, d.name
        keep &= ok
    n_dropped = int((~keep).sum())
    y = y[keep]
    raw = {k: X[keep] for k, X in raw.items()}
    if len(y) < folds:
        raise TransferError(f"{data}: {len(y)} usable rows, fewer than --folds {folds}")
    if np.ptp(y) == 0:
        raise TransferError(f"{data}: column {target_col!r} is constant; nothing to learn")
    splits = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(y))

    rows, preds = [], {}
    for mid, model in models.items():
        card = model.card
        X = raw[json.dumps(card["descriptor"], sort_keys=True)]
        for depth in range(1, min(max_depth, model.n_hidden) + 1):
            F = model.features_descriptors(X, depth)
            for learner in learners:
                pred = cross_val_predict(F, y, splits, learner, seed)
                m = regression_metrics(y, pred)
                rows.append({"model_id": mid, "dataset": card["dataset"],
                             "property": card["property"],
                             "material_class": card["material_class"],
                             "descriptor": card["descriptor"]["name"],
                             "architecture": card["architecture_name"],
                             "learner": learner, "depth": depth, "n_features": F.shape[1],
                             "cv_mae": m["mae"], "cv_rmse": m["rmse"], "cv_r2": m["r2"]})
                preds[(mid, depth, learner)] = pred
    ranking = pd.DataFrame(rows).sort_values(["cv_mae", "model_id", "depth", "learner"])
    best = ranking.iloc[0]

    baselines = []
    for key, X in raw.items():
        for learner in learners:
            pred = cross_val_predict(X, y, splits, learner, seed)
            baselines.append((regression_metrics(y, pred), f"{learner} on {names[key]}", pred))
    base_m, base_name, base_pred = min(baselines, key=lambda b: b[0]["mae"])

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranking.to_csv(out / "ranking.csv", index=False)
    best_pred = preds[(best["model_id"], int(best["depth"]), best["learner"])]
    _parity(out / "parity.png", y, best_pred, base_pred,
            f"{best['dataset']}/{best['property']} d={int(best['depth'])} {best['learner']}",
            base_name, target_col)
    summary = {
        "n_samples": int(len(y)), "n_dropped": n_dropped, "folds": folds, "seed": seed,
        "n_candidates": int(len(cards)),
        "seconds": round(time.perf_counter() - start, 2),
        "best": {"model_id": best["model_id"], "dataset": best["dataset"],
                 "property": best["property"], "descriptor": best["descriptor"],
                 "learner": best["learner"], "depth": int(best["depth"]),
                 "cv_mae": float(best["cv_mae"]), "cv_rmse": float(best["cv_rmse"]),
                 "cv_r2": float(best["cv_r2"])},
        "baseline": {"name": base_name, "cv_mae": base_m["mae"], "cv_rmse": base_m["rmse"],
                     "cv_r2": base_m["r2"]},
        "library": str(library), "library_version": lib.version,
        "note": "best is selected on the same folds it is scored on (optimistic)",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
