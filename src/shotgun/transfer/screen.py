"""The screen: every candidate's neural features at every depth scored with ridge regression
(batched over candidates, in this process or on Dask workers), the best refined with the other
learners, and from-scratch baselines on the raw descriptors, all on the same plan.
"""

from __future__ import annotations

from itertools import islice

import numpy as np
import pandas as pd

from ..progress import Progress, progress
from .candidates import (
    candidate_specs,
    candidates,
    control_of,
    loaded,
    neural_features,
    source_prediction,
)
from .learners import fit_predict, ridge_batch
from .plans import Plan, build_plan
from .selection import CURVE_LEARNERS, Screen, cv_metrics
from .target import target_descriptors


def ridge_screen(
    models,
    raw: dict,
    y: np.ndarray,
    pairs,
    max_depth: int,
    control: int | None = None,
    predict: bool = False,
) -> list[dict]:
    """Ridge predictions on every pair for every (model, depth): batched over candidates.
    ``models``: (model id, model) pairs, consumed one at a time (only features are kept). With
    ``control`` (the run's seed), each model's control network is screened in the same batch;
    its entries have ``"control": True``. With ``predict``, each network's depth-1 entry also
    holds its predictions on the target's inputs (``"prediction"``: properties as features). A
    model whose features (or its control's) are not all finite on the target's inputs has one
    entry only, ``"not_finite": True``."""
    from ..library.packs import one_thread

    models, out = iter(models), []
    with one_thread():  # as on a Dask worker: the features do not depend on torch's threads
        while part := _ridge_chunk(
            islice(models, CHUNK), raw, y, pairs, max_depth, control, predict
        ):
            out += part
    return out


# Models per batched ridge call. The same batches in this process and on Dask workers: a
# model's numbers do not depend on the scheduler (batched BLAS can round differently by a
# matrix's place in a batch), and only a batch's features are held at once.
CHUNK = 250


def _ridge_chunk(models, raw, y, pairs, max_depth, control, predict) -> list[dict]:
    """:func:`ridge_screen` of one batch of models (empty: no model)."""
    from threadpoolctl import threadpool_limits

    entries, feats, skipped = [], [], []
    for mid, model in models:
        nets = [(model, False)]
        if control is not None:
            nets.append((control_of(model, control), True))
        computed = [(net, c, neural_features(net, raw, max_depth)) for net, c in nets]
        if not all(np.isfinite(F).all() for *_, fs in computed for _, F in fs):
            skipped.append({"model_id": mid, "not_finite": True})
            continue
        for net, is_control, fs in computed:
            first = len(entries)  # this network's depth-1 entry
            for depth, F in fs:
                entries.append(
                    {
                        "model_id": mid,
                        "depth": depth,
                        "learner": "ridge",
                        "n_features": F.shape[1],
                        "control": is_control,
                    }
                )
                feats.append(F)
            if predict:
                entries[first]["prediction"] = source_prediction(net, raw)
    if not entries:  # the end of the models, or a block of models with NaN features only
        return skipped
    with threadpool_limits(1):  # many small problems: one BLAS thread each
        per_pair = [ridge_batch(feats, y, tr, te) for tr, te in pairs]
    for i, e in enumerate(entries):
        e["preds"] = [p[i] for p in per_pair]
    return entries + skipped


def ridge_screen_chunk(
    library: str, model_ids: list, raw: dict, y, pairs, max_depth: int, control, predict
):
    """A worker's share of the ridge screen: loads (and verifies) its models itself."""
    from ..library import Library

    models = loaded(Library.open(library), model_ids)
    return ridge_screen(models, raw, y, pairs, max_depth, control, predict)


def screen_all(
    lib,
    ids,
    raw,
    y,
    pairs,
    max_depth,
    scheduler,
    n_workers,
    control=None,
    predict=False,
):
    """The ridge screen (with the controls of ``control``, the run's seed, and with ``predict``
    the networks' predictions) in this process, or split over Dask workers that load their own
    models."""
    from ..parallel import dask_client

    with dask_client(scheduler, n_workers) as client:
        if client is None:
            models = progress(loaded(lib, ids), "screening library models", "models", len(ids))
            return ridge_screen(models, raw, y, pairs, max_depth, control, predict)
        chunks = [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]
        shared = client.scatter([raw, y, pairs], broadcast=True)
        futures = [
            client.submit(
                ridge_screen_chunk,
                str(lib.root),
                c,
                *shared,
                max_depth,
                control,
                predict,
                pure=False,
            )
            for c in chunks
        ]
        done = progress(futures, "screening library models", "chunks")
        return [e for f in done for e in f.result()]


def pairs_of(plan: Plan, curve: bool) -> list[int]:
    """Pairs of the tasks that are (``curve``) or are not learning-curve points."""
    return sorted(
        {
            p
            for t in plan.tasks
            if t.name.startswith("curve/") == curve
            for p in t.inner + ([t.test_pair] if t.test_pair is not None else [])
        }
    )


def _learner_preds(name, seed, F, y, pairs, which, bar: Progress) -> dict:
    preds = {}
    for p in which:
        preds[p] = fit_predict(name, seed, F[pairs[p][0]], y[pairs[p][0]], F[pairs[p][1]])
        bar.update()
    return preds


def refine(screen: Screen, feature_of, learners, n_best: int, seed: int) -> int:
    """Other learners on the ``n_best`` best ridge pipelines of every task, on that task's pairs;
    returns the number of pipelines added."""
    plan, base = screen.plan, len(screen.pipes)
    scores = screen.table()
    needed: dict[int, set] = {}
    for t, task in enumerate(plan.tasks):
        if task.name.startswith("curve/"):
            continue
        for i in np.argsort(scores[:, t], kind="stable")[:n_best]:
            needed.setdefault(int(i), set()).update(
                task.inner + ([task.test_pair] if task.test_pair is not None else [])
            )
    others = [learner for learner in learners if learner != "ridge"]
    total = len(others) * sum(len(pairs) for pairs in needed.values())
    with Progress(total, "other learners on the best ridge pipelines", "fits") as bar:
        for i, pairs in sorted(needed.items()):
            pipe = screen.pipes[i]
            F = feature_of(pipe)
            for learner in others:
                preds = _learner_preds(learner, seed, F, screen.y, plan.pairs, sorted(pairs), bar)
                kept = {k: v for k, v in pipe.items() if k != "preds"}
                screen.add({**kept, "learner": learner, "refined": True}, preds)
    return len(screen.pipes) - base


def baselines(plan: Plan, y, raw: dict, names: dict, learners, seed: int, curve=True) -> Screen:
    """From-scratch learners on the raw descriptors, on every pair of the plan (but the
    learning curve's unless ``curve``)."""
    from threadpoolctl import threadpool_limits

    screen = Screen(plan, y)
    main, curve = pairs_of(plan, False), pairs_of(plan, True) if curve else []
    runs = [
        (key, X, learner, main + curve if learner in CURVE_LEARNERS["baseline"] else main)
        for key, X in raw.items()
        for learner in learners
    ]
    with Progress(sum(len(r[3]) for r in runs), "from-scratch baselines", "fits") as bar:
        for key, X, learner, which in runs:
            if learner == "ridge":
                with threadpool_limits(1):
                    preds = {p: ridge_batch([X], y, *plan.pairs[p])[0] for p in which}
                bar.update(len(which))
            else:
                preds = _learner_preds(learner, seed, X, y, plan.pairs, which, bar)
            info = {"learner": learner, "descriptor": names[key], "spec": key}
            screen.add({"name": f"{learner} on {names[key]}", **info}, preds)
    return screen


def properties_screen(plan: Plan, y, P: np.ndarray, learners, seed: int) -> Screen:
    """Learners on the source models' predictions (``P``: one column per source model), the
    properties-as-features descriptor, on the plan's pairs as the baselines are (not on the
    learning curve's)."""
    name = f"predictions of {P.shape[1]} source models"
    return baselines(plan, y, {"properties": P}, {"properties": name}, learners, seed, False)


def ranking(screen: Screen, cands: pd.DataFrame) -> pd.DataFrame:
    """One row per screened (candidate, depth, learner) with its same-fold CV metrics, best
    first; column ``pipe`` indexes ``screen.pipes``."""
    info = cands.set_index("model_id")
    rows = []
    on_screen = np.isfinite(screen.table()[:, 0])  # refined for a nested selection only: not here
    for i, p in enumerate(screen.pipes):
        if not on_screen[i]:
            continue
        c = info.loc[p["model_id"]]
        rows.append(
            {
                "model_id": p["model_id"],
                "dataset": c["dataset"],
                "property": c["property"],
                "material_class": c["material_class"],
                "descriptor": c["descriptor"],
                "architecture": c.get("architecture", ""),
                "learner": p["learner"],
                "depth": p["depth"],
                "n_features": p["n_features"],
                "train_overlap": c.get("train_overlap"),
                **cv_metrics(screen.y, *screen.outer(i)),
                "pipe": i,
            }
        )
    return (
        pd.DataFrame(rows)
        .sort_values(["cv_mae", "model_id", "depth", "learner"], kind="stable")
        .reset_index(drop=True)
    )


def baseline_table(base: Screen) -> pd.DataFrame:
    """One row per baseline (learner on a raw descriptor) with its same-fold CV metrics."""
    rows = [
        {
            "name": p["name"],
            "descriptor": p["descriptor"],
            "learner": p["learner"],
            **cv_metrics(base.y, *base.outer(i)),
            "pipe": i,
        }
        for i, p in enumerate(base.pipes)
        if np.isfinite(base.scores[i][0])
    ]
    return pd.DataFrame(rows).sort_values(["cv_mae", "name"], kind="stable").reset_index(drop=True)


def screen_quick(
    library, inputs, y, kind: str, model_ids=None, folds: int = 5, seed: int = 0, max_depth: int = 2
):
    """Ridge screen of the applicable models (or ``model_ids``) and ridge/random-forest baselines
    on the same folds: (ranking, baselines) tables with cv_mae, cv_rmse, cv_r2."""
    y = np.asarray(y, dtype=np.float64)
    cands = candidates(library, kind, model_ids)
    ids = list(cands["model_id"])
    raw, names, ok = target_descriptors(candidate_specs(library, ids), inputs, kind)
    ok &= np.isfinite(y)
    y, raw = y[ok], {k: X[ok] for k, X in raw.items()}
    plan = build_plan(y, folds, seed, nested=False)
    screen = Screen(plan, y)
    for e in ridge_screen(loaded(library, ids), raw, y, plan.pairs, max_depth):
        screen.add(e, dict(enumerate(e.pop("preds"))))
    base = baselines(plan, y, raw, names, ("ridge", "random_forest"), seed)
    return ranking(screen, cands), baseline_table(base)
