"""Shotgun transfer learning: screen library models as frozen feature extractors for a small target.

For every candidate model whose descriptor accepts the target's inputs, the pre-activation outputs
of its last ``depth`` hidden layers become features for a downstream learner. All candidates are
screened with ridge regression (batched); the ``refine`` best of each selection are then tried
with the other learners. From-scratch baselines (random forest, ridge, MLP on the raw descriptors)
are scored on the same folds, as are fine-tuned networks and a stacked ensemble of the top
transferred models.

Choosing the best of many candidates on the folds that score it is optimistic. Nested CV repeats
the whole screening and selection inside each outer training fold and scores the chosen pipeline
on the outer test fold: that estimate is the one to compare with the baseline (whose choice among
its learners is nested the same way) and with published benchmarks.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import MATERIAL_CLASSES
from .learners import BASELINE_LEARNERS, TRANSFER_LEARNERS, fit_predict, make_learner, ridge_batch
from .screening import CURVE_SIZES, NESTED_MAX_ROWS, Plan, build_plan, oof
from .training import regression_metrics

MODEL_FORMAT = "shotgun-transfer/1"


class TransferError(ValueError):
    pass


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


def _spec_key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def _candidates(library, kind: str, max_models: int | None, model_ids=None) -> pd.DataFrame:
    cands = library.applicable(kind).sort_values(["test_r2", "model_id"], ascending=[False, True])
    if model_ids is not None:
        cands = cands[cands["model_id"].isin(set(model_ids))]
    if max_models:
        cands = cands.head(max_models)
    if cands.empty:
        raise TransferError(f"{library.root}: no model in the library accepts {kind} inputs")
    return cands.reset_index(drop=True)


def target_descriptors(specs: dict, inputs, kind: str):
    """Descriptor matrix per candidate descriptor spec (computed by the descriptor that maps
    ``kind`` inputs into that spec's feature space), names, and the rows featurized by all."""
    from .descriptors import for_kind
    from .featurize import featurize_inputs

    raw, names = {}, {}
    ok_all = np.ones(len(inputs), dtype=bool)
    for key, spec in specs.items():
        d = for_kind(spec, kind)
        X, ok, _, _ = featurize_inputs(list(inputs), d)
        raw[key], names[key] = X, d.name
        ok_all &= ok
    return raw, names, ok_all


def _neural_features(model, raw: dict, max_depth: int) -> list[tuple[int, np.ndarray]]:
    """(depth, float64 features) of ``model`` on the target's descriptors ``raw`` (by spec key)
    for depths 1 .. min(max_depth, its hidden layers), from one forward pass."""
    depths = range(1, min(max_depth, model.n_hidden) + 1)
    X = raw[_spec_key(model.card["descriptor"])]
    return [(d, F.astype(np.float64)) for d, F in zip(depths, model.features_at(X, depths))]


def _ridge_screen(models, raw: dict, y: np.ndarray, pairs, max_depth: int) -> list[dict]:
    """Ridge predictions on every pair for every (model, depth): batched over candidates.
    ``models``: (model id, model) pairs, consumed one at a time (only features are kept)."""
    from threadpoolctl import threadpool_limits

    entries, feats = [], []
    for mid, model in models:
        for depth, F in _neural_features(model, raw, max_depth):
            entries.append({"model_id": mid, "depth": depth, "learner": "ridge",
                            "n_features": F.shape[1]})
            feats.append(F)
    with threadpool_limits(1):  # many small problems: one BLAS thread each
        per_pair = [ridge_batch(feats, y, tr, te) for tr, te in pairs]
    for i, e in enumerate(entries):
        e["preds"] = [p[i] for p in per_pair]
    return entries


def _loaded(library, model_ids):
    """(model id, model) pairs, each model loaded (and its files verified) when reached."""
    return ((m, library.load(m)) for m in model_ids)


def _candidate_specs(library, model_ids) -> dict:
    """The distinct descriptor specs of the candidates, from their cards."""
    return {_spec_key(c["descriptor"]): c["descriptor"] for c in map(library.card, model_ids)}


def _ridge_screen_chunk(library: str, model_ids: list, raw: dict, y, pairs, max_depth: int):
    """A worker's share of the ridge screen: loads (and verifies) its models itself."""
    from .library import Library

    return _ridge_screen(_loaded(Library.open(library), model_ids), raw, y, pairs, max_depth)


class _Models(dict):
    """Library models, each loaded (and its files verified) on first use."""

    def __init__(self, library):
        super().__init__()
        self.library = library

    def __missing__(self, model_id: str):
        self[model_id] = model = self.library.load(model_id)
        return model


def _screen_all(lib, ids, raw, y, pairs, max_depth, scheduler, n_workers) -> list[dict]:
    """The ridge screen in this process, or split over Dask workers that load their own models."""
    from .parallel import dask_client

    with dask_client(scheduler, n_workers) as client:
        if client is None:
            return _ridge_screen(_loaded(lib, ids), raw, y, pairs, max_depth)
        n_chunks = max(1, min(len(ids), 4 * n_workers))
        chunks = [list(c) for c in np.array_split(np.array(ids, dtype=object), n_chunks) if len(c)]
        shared = client.scatter([raw, y, pairs], broadcast=True)
        futures = [client.submit(_ridge_screen_chunk, str(lib.root), c, *shared, max_depth,
                                 pure=False) for c in chunks]
        return [e for f in futures for e in f.result()]


def _metrics(y, rows, pred) -> dict:
    m = regression_metrics(y[rows], pred)
    return {"cv_mae": m["mae"], "cv_rmse": m["rmse"], "cv_r2": m["r2"]}


class Screen:
    """Pipelines evaluated on a plan: each has predictions on pairs and a score per task."""

    def __init__(self, plan: Plan, y: np.ndarray):
        self.plan, self.y = plan, y
        self.pipes: list[dict] = []
        self.scores: list[np.ndarray] = []  # per pipeline: inner MAE per task (NaN = not run)

    def add(self, pipe: dict, preds: dict):
        """``preds``: pair -> predictions; tasks whose pairs are all present get a score."""
        scores = np.full(len(self.plan.tasks), np.nan)
        for t, task in enumerate(self.plan.tasks):
            if all(p in preds for p in task.inner):
                err = [np.abs(preds[p] - self.y[self.plan.pairs[p][1]]) for p in task.inner]
                scores[t] = np.concatenate(err).mean()
        pipe["preds"] = preds
        self.pipes.append(pipe)
        self.scores.append(scores)

    def table(self) -> np.ndarray:
        return np.array(self.scores).reshape(len(self.pipes), len(self.plan.tasks))

    def chosen(self, t: int, k: int = 1, learners=None) -> list[int]:
        """The ``k`` best pipelines of task ``t`` (distinct models when k > 1), among those of
        ``learners`` if given."""
        s = self.table()[:, t]
        order = [i for i in np.argsort(s, kind="stable") if np.isfinite(s[i])
                 and (learners is None or self.pipes[i]["learner"] in learners)]
        picked, seen = [], set()
        for i in order:
            key = self.pipes[i].get("model_id", self.pipes[i].get("name"))
            if k > 1 and key in seen:
                continue
            picked.append(i)
            seen.add(key)
            if len(picked) == k:
                break
        return picked

    def outer(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold predictions of pipeline ``i`` on the screen's folds."""
        return oof(self.plan, self.plan.tasks[0].inner, self.pipes[i]["preds"])

    def selected_predictions(self, tasks: Sequence[int], k: int = 1, learners=None):
        """Test predictions of each task's chosen pipeline (mean of the top k), concatenated."""
        rows, preds, chosen = [], [], []
        for t in tasks:
            task = self.plan.tasks[t]
            picks = self.chosen(t, k, learners)
            rows.append(self.plan.pairs[task.test_pair][1])
            preds.append(np.mean([self.pipes[i]["preds"][task.test_pair] for i in picks], axis=0))
            chosen.append([self.pipes[i] for i in picks])
        return np.concatenate(rows), np.concatenate(preds), chosen


# Learning-curve tasks compare the cheap learners only (they are many, most on a few rows).
CURVE_LEARNERS = {"transfer": ("ridge",), "baseline": ("ridge", "random_forest")}


def _pairs_of(plan: Plan, curve: bool) -> list[int]:
    """Pairs of the tasks that are (``curve``) or are not learning-curve points."""
    return sorted({p for t in plan.tasks if t.name.startswith("curve/") == curve
                   for p in t.inner + ([t.test_pair] if t.test_pair is not None else [])})


def _learner_preds(name, seed, F, y, pairs, which) -> dict:
    return {p: fit_predict(name, seed, F[pairs[p][0]], y[pairs[p][0]], F[pairs[p][1]])
            for p in which}


def _refine(screen: Screen, feature_of, learners, refine: int, seed: int):
    """Other learners on the ``refine`` best ridge pipelines of every task, on that task's pairs."""
    plan, base = screen.plan, len(screen.pipes)
    scores = screen.table()
    needed: dict[int, set] = {}
    for t, task in enumerate(plan.tasks):
        if task.name.startswith("curve/"):
            continue
        for i in np.argsort(scores[:, t], kind="stable")[:refine]:
            needed.setdefault(int(i), set()).update(
                task.inner + ([task.test_pair] if task.test_pair is not None else []))
    for i, pairs in sorted(needed.items()):
        pipe = screen.pipes[i]
        F = feature_of(pipe)
        for learner in learners:
            if learner == "ridge":
                continue
            preds = _learner_preds(learner, seed, F, screen.y, plan.pairs, sorted(pairs))
            screen.add({**{k: v for k, v in pipe.items() if k != "preds"}, "learner": learner},
                       preds)
    return len(screen.pipes) - base


def _baselines(plan: Plan, y, raw: dict, names: dict, learners, seed: int) -> Screen:
    """From-scratch learners on the raw descriptors, on every pair of the plan."""
    from threadpoolctl import threadpool_limits

    screen = Screen(plan, y)
    main, curve = _pairs_of(plan, False), _pairs_of(plan, True)
    for key, X in raw.items():
        for learner in learners:
            which = main + curve if learner in CURVE_LEARNERS["baseline"] else main
            if learner == "ridge":
                with threadpool_limits(1):
                    preds = {p: ridge_batch([X], y, *plan.pairs[p])[0] for p in which}
            else:
                preds = _learner_preds(learner, seed, X, y, plan.pairs, which)
            screen.add({"name": f"{learner} on {names[key]}", "learner": learner,
                        "descriptor": names[key], "spec": key}, preds)
    return screen


def screen_quick(library, inputs, y, kind: str, model_ids=None, folds: int = 5, seed: int = 0,
                 max_depth: int = 2):
    """Ridge screen of the applicable models (or ``model_ids``) and ridge/random-forest baselines
    on the same folds: (ranking, baselines) tables with cv_mae, cv_rmse, cv_r2."""
    y = np.asarray(y, dtype=np.float64)
    cands = _candidates(library, kind, None, model_ids)
    ids = list(cands["model_id"])
    raw, names, ok = target_descriptors(_candidate_specs(library, ids), inputs, kind)
    ok &= np.isfinite(y)
    y, raw = y[ok], {k: X[ok] for k, X in raw.items()}
    plan = build_plan(y, folds, seed, nested=False)
    screen = Screen(plan, y)
    for e in _ridge_screen(_loaded(library, ids), raw, y, plan.pairs, max_depth):
        screen.add(e, dict(enumerate(e.pop("preds"))))
    base = _baselines(plan, y, raw, names, ("ridge", "random_forest"), seed)
    return _ranking(screen, cands), _baseline_table(base)


def _ranking(screen: Screen, cands: pd.DataFrame) -> pd.DataFrame:
    info = cands.set_index("model_id")
    rows = []
    on_screen = np.isfinite(screen.table()[:, 0])  # refined for a nested selection only: not here
    for i, p in enumerate(screen.pipes):
        if not on_screen[i]:
            continue
        c = info.loc[p["model_id"]]
        rows.append({"model_id": p["model_id"], "dataset": c["dataset"], "property": c["property"],
                     "material_class": c["material_class"], "descriptor": c["descriptor"],
                     "architecture": c.get("architecture", ""), "learner": p["learner"],
                     "depth": p["depth"], "n_features": p["n_features"],
                     **_metrics(screen.y, *screen.outer(i)), "pipe": i})
    return pd.DataFrame(rows).sort_values(["cv_mae", "model_id", "depth", "learner"],
                                          kind="stable").reset_index(drop=True)


def _baseline_table(base: Screen) -> pd.DataFrame:
    rows = [{"name": p["name"], "descriptor": p["descriptor"], "learner": p["learner"],
             **_metrics(base.y, *base.outer(i)), "pipe": i} for i, p in enumerate(base.pipes)
            if np.isfinite(base.scores[i][0])]
    return pd.DataFrame(rows).sort_values(["cv_mae", "name"], kind="stable").reset_index(drop=True)


def _parity(path: Path, y, best, base, best_label: str, base_label: str, unit: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def _curve_plot(path: Path, curve: pd.DataFrame, unit: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    if curve.empty:
        ax.text(0.5, 0.5, "no learning curve (nested CV off)", ha="center", transform=ax.transAxes)
    for method, g in curve.groupby("method"):
        ax.plot(g["n"], g["mae"], marker="o", label=method)
    ax.set_xscale("log" if len(curve) else "linear")
    ax.set_xlabel("training rows (transfer: ridge; baseline: ridge or random forest; "
                  "chosen inside each outer training fold)", fontsize=7)
    ax.set_ylabel(f"MAE on outer test folds {unit}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_model(dest: Path, model, depth: int, learner: str, seed: int, F: np.ndarray,
               y: np.ndarray, target: dict, metrics: dict, library) -> Path:
    """The chosen pipeline refitted on all target rows: the source network (card + weights),
    the target's neural features and values, and the learner's name and seed. Loading refits the
    (deterministic) learner on them; files are checksummed in manifest.json; no pickle."""
    from safetensors.numpy import save_file

    from .checksums import sha256

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    mid = model.card["model_id"]
    (dest / "source.json").write_text(json.dumps(model.card, indent=2))
    shutil.copyfile(library._checked(model.card["weights"]), dest / "source.safetensors")
    save_file({"features": F.astype(np.float64), "y": y.astype(np.float64)},
              str(dest / "train.safetensors"))
    meta = {"format": MODEL_FORMAT, "source_model_id": mid, "depth": depth, "learner": learner,
            "seed": seed, "kind": target["kind"], "input": target["input"],
            "target": target["target"], "unit": target.get("unit"), "n_train": int(len(y)),
            "cv": metrics,
            "library": str(library.root), "library_version": library.version}
    (dest / "model.json").write_text(json.dumps(meta, indent=2))
    files = ["source.json", "source.safetensors", "train.safetensors", "model.json"]
    (dest / "manifest.json").write_text(json.dumps(
        {"files": {f: sha256(dest / f) for f in files}}, indent=2))
    return dest


class TransferModel:
    """A saved transfer pipeline: ``predict(inputs)`` in the target's unit (NaN where an input
    cannot be featurized)."""

    def __init__(self, path: Path):
        from safetensors.numpy import load_file

        from .checksums import sha256
        from .library import LibraryError, Predictor

        path = Path(path)
        manifest = json.loads((path / "manifest.json").read_text())
        for name, digest in manifest["files"].items():
            if sha256(path / name) != digest:
                raise LibraryError(f"{path / name}: checksum mismatch (tampered or corrupt)")
        self.meta = json.loads((path / "model.json").read_text())
        if self.meta.get("format") != MODEL_FORMAT:
            raise LibraryError(f"{path}: not a saved transfer model ({MODEL_FORMAT})")
        card = json.loads((path / "source.json").read_text())
        self.source = Predictor(card, path / "source.safetensors")
        train = load_file(str(path / "train.safetensors"))
        self.learner = make_learner(self.meta["learner"], self.meta["seed"]).fit(
            train["features"], train["y"])

    def predict(self, inputs: Sequence[str]) -> np.ndarray:
        F = self.source.features(inputs, self.meta["depth"], kind=self.meta["kind"])
        ok = np.isfinite(F).all(axis=1)
        out = np.full(len(F), np.nan)
        if ok.any():
            out[ok] = self.learner.predict(F[ok].astype(np.float64))
        return out


def run_transfer(library: Path, data: Path, input_col: str, target_col: str, kind: str,
                 out: Path, folds: int = 5, seed: int = 0, max_models: int | None = None,
                 max_depth: int = 2, learners: Sequence[str] = TRANSFER_LEARNERS,
                 baselines: Sequence[str] = BASELINE_LEARNERS, refine: int = 3,
                 repeats: int = 1, split: str = "random", nested: bool | None = None,
                 curve: Sequence[int] = CURVE_SIZES, fine_tune: int = 3, stack: int = 5,
                 scheduler: str | None = None, n_workers: int = 1, n: int | None = None,
                 unit: str | None = None) -> dict:
    """Screen the library for ``data``; write summary.json, ranking.csv, learning_curve.csv,
    parity.png, learning_curve.png, the refitted best pipeline under model/, and a report.
    Many small fits: one BLAS thread each (parallel screening: ``n_workers``, ``scheduler``)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _run_transfer(library, data, input_col, target_col, kind, out, folds, seed,
                             max_models, max_depth, learners, baselines, refine, repeats, split,
                             nested, curve, fine_tune, stack, scheduler, n_workers, n, unit)


def _run_transfer(library, data, input_col, target_col, kind, out, folds, seed, max_models,
                  max_depth, learners, baselines, refine, repeats, split, nested, curve,
                  fine_tune, stack, scheduler, n_workers, n, unit) -> dict:
    from .library import Library

    start = time.perf_counter()
    for name in set(learners) | set(baselines):
        make_learner(name, seed)
    if "ridge" not in learners:
        raise TransferError("--learners must include ridge (it screens every candidate)")
    inputs, y = load_target(data, input_col, target_col, kind)
    lib = Library.open(library)
    cands = _candidates(lib, kind, max_models)
    ids = list(cands["model_id"])
    models = _Models(lib)  # the few networks used after the screen, loaded once each
    raw, names, keep = target_descriptors(_candidate_specs(lib, ids), inputs, kind)
    keep &= np.isfinite(y)
    n_dropped = int((~keep).sum())
    y, raw = y[keep], {k: X[keep] for k, X in raw.items()}
    if n is not None and n < len(y):  # a seeded subsample of the usable rows
        rows = np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False))
        y, raw = y[rows], {k: X[rows] for k, X in raw.items()}
    if len(y) < folds:
        raise TransferError(f"{data}: {len(y)} usable rows, fewer than --folds {folds}")
    if np.ptp(y) == 0:
        raise TransferError(f"{data}: column {target_col!r} is constant; nothing to learn")
    if nested is None:
        nested = len(y) <= NESTED_MAX_ROWS
    plan = build_plan(y, folds, seed, repeats, split, nested, curve if nested else ())

    def log(stage):
        print(f"transfer: {stage} ({time.perf_counter() - start:.1f} s)", file=sys.stderr,
              flush=True)

    log(f"{len(y)} rows, {len(ids)} candidates, {len(plan.tasks)} selections on "
        f"{len(plan.pairs)} train/test pairs")
    screen = Screen(plan, y)
    for e in _screen_all(lib, ids, raw, y, plan.pairs, max_depth, scheduler, n_workers):
        screen.add(e, dict(enumerate(e.pop("preds"))))

    def features(pipe):
        m = models[pipe["model_id"]]
        return m.features_descriptors(raw[_spec_key(m.card["descriptor"])], pipe["depth"]).astype(
            np.float64)

    log("ridge screen done")
    _refine(screen, features, learners, refine, seed)
    log("refined with " + ", ".join(learners))
    base = _baselines(plan, y, raw, names, baselines, seed)
    log("baselines done")
    ranking = _ranking(screen, cands)
    base_table = _baseline_table(base)
    best, best_base = ranking.iloc[0], base_table.iloc[0]
    best_oof = screen.outer(int(best["pipe"]))
    base_oof = base.outer(int(best_base["pipe"]))

    def summary_of(row, cols=("cv_mae", "cv_rmse", "cv_r2")):
        return {c: float(row[c]) for c in cols}

    methods = [{"method": "transfer", "name": f"{best['dataset']}/{best['property']} "
                f"d={int(best['depth'])} {best['learner']}", **summary_of(best)},
               {"method": "baseline", "name": best_base["name"], **summary_of(best_base)}]
    top = screen.chosen(0, stack)
    stack_info = None
    if stack > 1 and len(top) > 1:
        rows, _ = screen.outer(top[0])
        mean = np.mean([screen.outer(i)[1] for i in top], axis=0)
        stack_info = {"k": len(top), "model_ids": [screen.pipes[i]["model_id"] for i in top],
                      **_metrics(y, rows, mean)}
        methods.append({"method": "stack", "name": f"mean of top {len(top)} transferred",
                        **{k: stack_info[k] for k in ("cv_mae", "cv_rmse", "cv_r2")}})
    fine = _fine_tune(screen, models, raw, y, fine_tune, seed)
    if fine:
        log("fine-tuned")
    if fine:
        b = min(fine, key=lambda f: f["cv_mae"])
        methods.append({"method": "fine_tune", "name": f"{b['model_id']} (last layer + head)",
                        **{k: b[k] for k in ("cv_mae", "cv_rmse", "cv_r2")}})
    methods.sort(key=lambda m: m["cv_mae"])

    nested_info, curve_rows = None, []
    if nested:
        tasks = {t.name: i for i, t in enumerate(plan.tasks)}
        outer_ids = [i for n, i in tasks.items() if n.startswith("nested/")]
        r, p, chosen = screen.selected_predictions(outer_ids)
        rb, pb, chosen_b = base.selected_predictions(outer_ids)
        nested_info = {**_metrics(y, r, p), "chosen": [c[0]["model_id"] for c in chosen],
                       "chosen_pipelines": [f"{c[0]['model_id']} d={c[0]['depth']} "
                                            f"{c[0]['learner']}" for c in chosen],
                       "baseline": {**_metrics(y, rb, pb), "chosen": [c[0]["name"]
                                                                      for c in chosen_b]},
                       "outer_folds": len(outer_ids),
                       "inner_folds": len(plan.tasks[outer_ids[0]].inner)}
        if stack > 1:
            rs, ps, _ = screen.selected_predictions(outer_ids, stack)
            nested_info["stack"] = _metrics(y, rs, ps)
        sizes = sorted({plan.tasks[i].n for n, i in tasks.items() if n.startswith("curve/")})
        n_all = int(round(np.mean([len(plan.tasks[i].train) for i in outer_ids])))
        for n in sizes + [n_all]:
            point = outer_ids if n == n_all else [
                i for name, i in tasks.items() if name.startswith(f"curve/{n}/")]
            for method, s in (("transfer", screen), ("baseline", base)):
                rr, pp, _ = s.selected_predictions(point, learners=CURVE_LEARNERS[method])
                m = _metrics(y, rr, pp)
                curve_rows.append({"n": n, "method": method, "mae": m["cv_mae"],
                                   "rmse": m["cv_rmse"], "r2": m["cv_r2"]})

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranking.drop(columns="pipe").to_csv(out / "ranking.csv", index=False)
    if fine:
        pd.DataFrame(fine).to_csv(out / "fine_tune.csv", index=False)
    _parity(out / "parity.png", y, best_oof, base_oof,
            f"{best['dataset']}/{best['property']} d={int(best['depth'])} {best['learner']}",
            best_base["name"], f"{target_col} [{unit}]" if unit else target_col)
    curve_df = pd.DataFrame(curve_rows, columns=["n", "method", "mae", "rmse", "r2"])
    curve_df.to_csv(out / "learning_curve.csv", index=False)
    _curve_plot(out / "learning_curve.png", curve_df, f"[{unit}]" if unit else "")

    target = {"data": str(data), "input": input_col, "target": target_col, "kind": kind,
              "unit": unit}
    best_pipe = screen.pipes[int(best["pipe"])]
    save_model(out / "model", models[best["model_id"]], int(best["depth"]), best["learner"], seed,
               features(best_pipe), y, target, summary_of(best), lib)
    summary = {
        "target": target, "n_samples": int(len(y)), "n_dropped": n_dropped, "subsample": n,
        "folds": folds,
        "repeats": repeats, "split": split, "seed": seed, "n_candidates": len(ids),
        "learners": list(learners), "baseline_learners": list(baselines), "refine": refine,
        "seconds": None,
        "best": {"model_id": best["model_id"], "dataset": best["dataset"],
                 "property": best["property"], "descriptor": best["descriptor"],
                 "learner": best["learner"], "depth": int(best["depth"]), **summary_of(best)},
        "baseline": {"name": best_base["name"], **summary_of(best_base)},
        "baselines": [{"name": r["name"], **summary_of(r)} for _, r in base_table.iterrows()],
        "stack": stack_info, "fine_tune": fine or None,
        "methods": methods, "winner": methods[0]["method"],
        "nested": nested_info, "model": "model",
        "library": str(library), "library_version": lib.version,
        "note": ("best, stack, fine_tune and baseline are each selected on the folds that score "
                 "them (optimistic); nested is the estimate to compare"),
    }
    summary["seconds"] = round(time.perf_counter() - start, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    try:
        from .report import write_report
    except ImportError:
        return summary
    write_report(out)
    return summary


def _fine_tune(screen: Screen, models: dict, raw: dict, y, n: int, seed: int) -> list[dict]:
    """Fine-tune the ``n`` best distinct source networks on the screen's folds."""
    if n <= 0:
        return []
    from .finetune import fine_tune_cv

    plan = screen.plan
    splits = [plan.pairs[p] for p in plan.tasks[0].inner]
    rows = np.concatenate([te for _, te in splits])
    out = []
    for i in screen.chosen(0, n):
        mid = screen.pipes[i]["model_id"]
        m = models[mid]
        preds = fine_tune_cv(m, raw[_spec_key(m.card["descriptor"])], y, splits, seed=seed)
        out.append({"model_id": mid, **_metrics(y, rows, np.concatenate(preds))})
    return out
