"""Shotgun transfer learning: screen library models as frozen feature extractors for a small target.

For every candidate model whose descriptor accepts the target's inputs, the pre-activation outputs
of its last ``depth`` hidden layers become features for a downstream learner. All candidates are
screened with ridge regression (batched); the ``refine`` best of each selection are then tried
with the other learners. From-scratch baselines (random forest, ridge, MLP on the raw descriptors)
are scored on the same folds, as are fine-tuned networks, a stacked ensemble of the top
transferred models and "properties as features": ridge and random forest on the vector of every
candidate's prediction for each input.

Choosing the best of many candidates on the folds that score it is optimistic. Nested CV repeats
the whole screening and selection inside each outer training fold and scores the chosen pipeline
on the outer test fold: that estimate is the one to compare with the baseline (whose choice among
its learners is nested the same way) and with published benchmarks. The winner among transfer,
the stack, properties as features and the baseline is picked by one rule
(``selection.select_method``), refitted on all rows and saved; the same rule inside each outer
training fold estimates that whole procedure.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.inputs import canonical_hashes
from ..markup import some
from ..metrics import squared_correlations
from .candidates import ModelCache, candidate_specs, candidates, first_pass
from .leakage import seen_rows, share
from .learners import PROPERTY_LEARNERS, make_learner
from .options import TransferError, TransferOptions
from .pipeline import Member, save_model
from .plans import CURVE_SIZES, NESTED_MAX_ROWS, Plan, build_plan
from .plots import curve_plot, parity_plot
from .screen import (
    baseline_table,
    baselines,
    properties_screen,
    ranking,
    refine,
    screen_all,
)
from .selection import (
    Pick,
    Screen,
    cv_metrics,
    learning_curve,
    method_picks,
    nested_blend,
    nested_estimate,
    nested_selection,
    select_method,
    stack,
)
from .summary import TransferSummary
from .target import Target, prepare_target

NOTE = (
    "best, stack, fine_tune, baseline and methods are each selected on the folds that score "
    "them (optimistic); nested is the estimate to compare, nested.selected that of the procedure "
    "that picks the saved winner (fine_tune is not scored inside the outer folds, so it is "
    "reported, not picked)"
)


def run_transfer(
    library: Path,
    options: TransferOptions,
    out: Path,
    scheduler: str | None = None,
    n_workers: int = 1,
    curve=CURVE_SIZES,
) -> TransferSummary:
    """Screen the library for the target of ``options``; write summary.json, dropped.csv,
    ranking.csv, learning_curve.csv, parity.png, learning_curve.png, the refitted winner under
    model/, and a report. Many small fits: one BLAS thread each (parallel screening:
    ``n_workers``, ``scheduler``)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _Run(Path(library), options, Path(out), scheduler, n_workers, curve).run()


@dataclass
class _Screens:
    """The screen of the transfer pipelines and of the baselines on one plan."""

    plan: Plan
    nested: bool  # the plan has nested CV and learning-curve tasks
    transfer: Screen
    baseline: Screen
    control: Screen | None  # the candidates' control networks (random weights)
    properties: Screen | None  # learners on the candidates' predictions
    control_properties: Screen | None  # the same on their control networks' predictions


class _Run:
    """One transfer run, stage by stage (each stage logs its time on stderr)."""

    def __init__(
        self, library: Path, options: TransferOptions, out: Path, scheduler, n_workers, curve
    ):
        from ..library import Library

        o = self.options = options
        if "ridge" not in o.learners:
            raise TransferError("--learners must include ridge (it screens every candidate)")
        for name in set(o.learners) | set(o.baselines):
            make_learner(name, o.seed)
        self.start = time.perf_counter()
        self.library_path, self.out = library, out
        self.scheduler, self.n_workers, self.curve = scheduler, n_workers, curve
        self.lib = Library.open(library)
        applicable = candidates(self.lib, o.kind, keep_weak=o.keep_weak)
        self.cands, self.first_pass = first_pass(applicable, o.max_models)
        self.n_weak = 0 if o.keep_weak else int(self.lib.applicable(o.kind)["weak"].sum())
        self.ids = list(self.cands["model_id"])
        self.models = ModelCache(self.lib)  # the few networks used after the screen
        self.controls = ModelCache(self.lib, o.seed) if o.control else None
        self.target: Target = prepare_target(o, candidate_specs(self.lib, self.ids))

    def log(self, stage: str) -> None:
        print(
            f"transfer: {stage} ({time.perf_counter() - self.start:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    def screens(self) -> _Screens:
        """The ridge screen of every candidate, refined with the other learners, and the
        baselines, on the plan of the options (nested and the learning curve when on)."""
        o, t = self.options, self.target
        scored = self.guard(canonical_hashes(t.inputs, o.kind))
        nested = o.nested if o.nested is not None else len(t.y) <= NESTED_MAX_ROWS
        plan = build_plan(
            t.y, o.folds, o.seed, o.repeats, o.split, nested, self.curve if nested else (), scored
        )
        self.log(
            f"{len(t.y)} rows, {len(self.ids)} candidates, {len(plan.tasks)} selections on "
            f"{len(plan.pairs)} train/test pairs"
        )
        screen = Screen(plan, t.y)
        control = Screen(plan, t.y) if o.control else None
        entries = screen_all(
            self.lib,
            self.ids,
            t.raw,
            t.y,
            plan.pairs,
            o.max_depth,
            self.scheduler,
            self.n_workers,
            o.seed if o.control else None,
            o.properties,
        )
        self.not_finite = sorted(e["model_id"] for e in entries if e.get("not_finite"))
        entries = [e for e in entries if not e.get("not_finite")]
        if self.not_finite:
            print(
                f"transfer: warning: {len(self.not_finite)} candidates left out, their features "
                f"on the target's inputs are not finite: {some(self.not_finite)}",
                file=sys.stderr,
            )
        if not entries:
            raise TransferError(
                f"{self.library_path}: no candidate gives finite features on the target's inputs"
            )
        predictions: dict[bool, dict] = {False: {}, True: {}}  # control? -> model id -> column
        for e in entries:
            is_control = e.pop("control")
            if "prediction" in e:
                predictions[is_control][e["model_id"]] = e.pop("prediction")
            (control if is_control else screen).add(e, dict(enumerate(e.pop("preds"))))
        self.log("ridge screen done" + (" (candidates and their controls)" if o.control else ""))
        refine(screen, self.features, o.learners, o.refine, o.seed)
        if control is not None:
            refine(control, self.control_features, o.learners, o.refine, o.seed)
        self.log("refined with " + ", ".join(o.learners))
        base = baselines(plan, t.y, t.raw, t.names, o.baselines, o.seed)
        self.log("baselines done")
        props = control_props = None
        # Properties as features: each candidate's prediction is one column (controls: theirs).
        self.properties = [
            m
            for m in predictions[False]
            if all(np.isfinite(predictions[c].get(m, 0.0)).all() for c in (False, True))
        ]
        if self.properties:
            self.property_matrix = np.column_stack([predictions[False][m] for m in self.properties])
            props = properties_screen(plan, t.y, self.property_matrix, PROPERTY_LEARNERS, o.seed)
            if control is not None:
                Pc = np.column_stack([predictions[True][m] for m in self.properties])
                control_props = properties_screen(plan, t.y, Pc, PROPERTY_LEARNERS, o.seed)
                self.relatedness = self.most_related(Pc)
            self.log("properties as features done")
        return _Screens(plan, nested, screen, base, control, props, control_props)

    def most_related(self, Pc: np.ndarray) -> dict:
        """The candidate and the control network (predictions ``Pc``) whose predictions
        correlate best with the target (:class:`shotgun.transfer.summary.Relatedness`)."""
        y = self.target.y
        r2, r2c = squared_correlations(self.property_matrix, y), squared_correlations(Pc, y)
        i, j = int(np.argmax(r2)), int(np.argmax(r2c))
        c = self.cands.set_index("model_id").loc[self.properties[i]]
        return {
            "r2": float(r2[i]),
            "model_id": self.properties[i],
            "source": f"{c['dataset']}/{c['property']}",
            "control_r2": float(r2c[j]),
            "control_model_id": self.properties[j],
        }

    def guard(self, hashes: np.ndarray) -> np.ndarray:
        """The leakage guard (:mod:`shotgun.transfer.leakage`) on the target's input ``hashes``:
        leaves out the candidates whose source model was trained on more than ``max_overlap``
        of them and returns which rows may be scored (those no kept candidate's source saw);
        the shares and counts are recorded for the summary and ranking.csv."""
        o = self.options
        seen = seen_rows(self.lib, self.ids, hashes)
        shares = {m: share(v) for m, v in seen.items()}
        known = [v for v in shares.values() if v is not None]
        out = sorted(m for m, v in shares.items() if v is not None and v > o.max_overlap)
        if out and len(out) == len(shares):
            raise TransferError(
                f"{o.data}: every candidate's source model was trained on more than "
                f"{o.max_overlap:.1%} of the target's inputs (the least: {min(known):.1%}); "
                "--max-overlap raises the limit"
            )
        gone = set(out)
        self.ids = [m for m in self.ids if m not in gone]
        self.cands = self.cands[self.cands["model_id"].isin(self.ids)].reset_index(drop=True)
        self.cands["train_overlap"] = self.cands["model_id"].map(shares)
        unscored = np.zeros(len(hashes), dtype=bool)
        for m in self.ids:
            if seen[m] is not None:
                unscored |= seen[m]
        n_unscored = int(unscored.sum())
        self.leakage = {
            "max_overlap": o.max_overlap,
            "max_share": max(known) if known else None,
            "n_excluded": len(out),
            "n_unknown": len(shares) - len(known),
            "excluded": out,
            "n_unscored": n_unscored,
        }
        if out:
            self.log(
                f"{len(out)} candidates left out: trained on more than {o.max_overlap:.1%} of "
                f"the target's inputs (up to {max(known):.1%})"
            )
        n_scored = len(hashes) - n_unscored
        if n_unscored:
            self.log(
                f"{n_unscored} rows seen by the kept candidates' sources: in every "
                f"training split, never scored ({n_scored} scored)"
            )
        if n_scored < max(o.folds, 3):  # nested CV splits each outer training fold again
            raise TransferError(
                f"{o.data}: the kept candidates' source models were trained on all but "
                f"{n_scored} of the target's {len(hashes)} inputs, too few to score with "
                f"--folds {o.folds}; lower --max-overlap"
            )
        return ~unscored

    def features(self, pipe: dict) -> np.ndarray:
        return self.target.features(self.models[pipe["model_id"]], pipe["depth"])

    def control_features(self, pipe: dict) -> np.ndarray:
        return self.target.features(self.controls[pipe["model_id"]], pipe["depth"])

    def run(self) -> TransferSummary:
        o, s = self.options, self.screens()
        rank, base_table = ranking(s.transfer, self.cands), baseline_table(s.baseline)
        best, best_base = rank.iloc[0], base_table.iloc[0]
        score = ("cv_mae", "cv_rmse", "cv_r2")
        methods = [
            {
                "method": "transfer",
                "name": _pipe_name(best),
                **_pick(best, score),
            },
            {"method": "baseline", "name": best_base["name"], **_pick(best_base, score)},
        ]
        stacked = stack(s.transfer, o.stack)
        if stacked is not None:
            methods.append(
                {
                    "method": "stack",
                    "name": f"mean of top {stacked['k']} transferred",
                    **_pick(stacked, score),
                }
            )
        if s.properties is not None:
            top = baseline_table(s.properties).iloc[0]
            methods.append({"method": "properties", "name": top["name"], **_pick(top, score)})
        fine = self.fine_tune(s.transfer)
        if fine:
            b = min(fine, key=lambda f: f["cv_mae"])
            methods.append(
                {
                    "method": "fine_tune",
                    "name": f"{b['model_id']} (last layer + head)",
                    **_pick(b, score),
                }
            )
        methods.sort(key=lambda m: m["cv_mae"])
        picks = method_picks(s.transfer, s.baseline, o.stack, 0, s.properties, o.fit_weights_from)
        blend = picks.blend(o.select)
        if blend is not None:
            inner = s.plan.tasks[0].inner
            rows = np.concatenate([s.plan.pairs[p][1] for p in inner])
            pred = np.concatenate([blend.predict(p) for p in inner])
            methods.append(
                {
                    "method": "blend",
                    "name": blend.blend_name,
                    **cv_metrics(self.target.y, rows, pred),
                }
            )
            methods.sort(key=lambda m: m["cv_mae"])
        choices = {p.method: p.choice_mae for p in picks.methods + [blend] if p is not None}
        for m in methods:
            if m["method"] in choices:
                m["choice_mae"] = choices[m["method"]]
        winner = select_method(picks, o.select)
        won = next(m for m in methods if m["method"] == winner.method)
        won = {k: v for k, v in won.items() if k != "choice_mae"}
        nested, curve = None, []
        if s.nested:
            nested = nested_estimate(
                s.transfer, s.baseline, o.stack, s.properties, o.select, o.fit_weights_from
            )
            curve = learning_curve(s.transfer, s.baseline)
        self.write_tables(rank, fine, curve, s, best, best_base)
        summary = TransferSummary.from_dict(
            {
                "target": self.target_record(),
                "n_samples": int(len(self.target.y)),
                "n_dropped": self.target.n_dropped,
                "subsample": o.n,
                "folds": o.folds,
                "repeats": o.repeats,
                "split": o.split,
                "seed": o.seed,
                "n_candidates": len(self.ids),
                "n_weak_excluded": self.n_weak,
                "first_pass": self.first_pass,
                "not_finite": self.not_finite,
                "learners": list(o.learners),
                "baseline_learners": list(o.baselines),
                "refine": o.refine,
                "select": o.select,
                "fit_weights_from": o.fit_weights_from,
                "best": {
                    "model_id": best["model_id"],
                    "dataset": best["dataset"],
                    "property": best["property"],
                    "descriptor": best["descriptor"],
                    "learner": best["learner"],
                    "depth": int(best["depth"]),
                    **_pick(best, score),
                },
                "baseline": {"name": best_base["name"], **_pick(best_base, score)},
                "baselines": [
                    {"name": r["name"], **_pick(r, score)} for _, r in base_table.iterrows()
                ],
                "stack": stacked,
                "fine_tune": fine or None,
                "methods": methods,
                "winner": winner.method,
                "saved": {**won, "members": winner.members},
                "nested": nested,
                "control": self.control_record(s, best, nested),
                "leakage": self.leakage,
                "model": "model",
                "library": str(self.library_path),
                "library_version": self.lib.version,
                "note": NOTE,
            }
        )
        return self.finish(summary, winner)

    def control_record(self, s: _Screens, best, nested: dict | None) -> dict | None:
        """The control networks through the same selection: their nested estimate (the
        same-fold best when nested CV is off), against the pretrained candidates' own."""
        if s.control is None:
            return None
        o, score = self.options, ("cv_mae", "cv_rmse", "cv_r2")
        top = ranking(s.control, self.cands).iloc[0]
        record = {
            "n_networks": len(self.ids),
            "best": {"name": f"control of {_pipe_name(top)}", **_pick(top, score)},
        }
        if nested is None:
            record.update(estimate="same folds", **_pick(top, score))
            pretrained = best["cv_mae"]
        else:
            chosen = nested_selection(s.control)
            record.update(estimate="nested", **_pick(chosen, score), chosen=chosen["chosen"])
            if o.stack > 1:
                record["stack"] = _pick(nested_selection(s.control, o.stack), score)
            if s.control_properties is not None:
                record["properties"] = _pick(nested_selection(s.control_properties), score)
                record["properties_pretrained_better"] = bool(
                    nested["properties"]["cv_mae"] < record["properties"]["cv_mae"]
                )
            blend = nested_blend(
                s.control, s.baseline, o.stack, s.control_properties, o.select, o.fit_weights_from
            )
            if blend is not None and "blend" in nested:
                record["blend"] = _pick(blend, score)
                record["blend_pretrained_better"] = bool(
                    nested["blend"]["cv_mae"] < blend["cv_mae"]
                )
            pretrained = nested["cv_mae"]
        record["pretrained_better"] = bool(pretrained < record["cv_mae"])
        if s.control_properties is not None:
            record["relatedness"] = self.relatedness
        return record

    def target_record(self) -> dict:
        o = self.options
        return {
            "data": str(Path(o.data)),
            "input": o.input,
            "target": o.target,
            "kind": o.kind,
            "unit": o.unit,
        }

    def fine_tune(self, screen: Screen) -> list[dict]:
        if self.options.fine_tune <= 0:
            return []
        from .finetune import fine_tune_top  # imports Lightning

        fine = fine_tune_top(
            screen, self.models, self.target, self.options.fine_tune, self.options.seed
        )
        self.log("fine-tuned")
        return fine

    def write_tables(self, rank, fine, curve_rows, s: _Screens, best, best_base) -> None:
        """dropped.csv, ranking.csv, fine_tune.csv, learning_curve.csv and the two plots."""
        o, out, y = self.options, self.out, self.target.y
        out.mkdir(parents=True, exist_ok=True)
        self.target.dropped.to_csv(out / "dropped.csv", index=False)
        rank.drop(columns="pipe").to_csv(out / "ranking.csv", index=False)
        if fine:
            pd.DataFrame(fine).to_csv(out / "fine_tune.csv", index=False)
        parity_plot(
            out / "parity.png",
            y,
            s.transfer.outer(int(best["pipe"])),
            s.baseline.outer(int(best_base["pipe"])),
            _pipe_name(best),
            best_base["name"],
            f"{o.target} [{o.unit}]" if o.unit else o.target,
        )
        curve = pd.DataFrame(curve_rows, columns=["n", "method", "mae", "rmse", "r2"])
        curve.to_csv(out / "learning_curve.csv", index=False)
        curve_plot(out / "learning_curve.png", curve, f"[{o.unit}]" if o.unit else "")

    def members(self, pick: Pick) -> list[Member]:
        """The learners of a picked method with their training matrices on all rows."""
        weights = pick.weights or [1.0 / len(pick.pipes)] * len(pick.pipes)
        out = []
        for p, w in zip(pick.pipes, weights):
            kind = _method_of(p)
            if kind == "properties":
                out.append(Member(p["learner"], self.property_matrix, sources=self.properties))
            elif kind == "baseline":
                spec = json.loads(p["spec"])
                out.append(Member(p["learner"], self.target.raw[p["spec"]], descriptor=spec))
            else:
                model = self.models[p["model_id"]]
                out.append(Member(p["learner"], self.features(p), model, int(p["depth"])))
            out[-1].weight = w
        return out

    def finish(self, summary: TransferSummary, winner: Pick) -> TransferSummary:
        """The winner refitted and saved under model/, summary.json and the report."""
        from .report import write_report

        saved = summary.saved
        save_model(
            self.out / "model",
            winner.method,
            saved.name,
            self.members(winner),
            self.options.seed,
            self.target.y,
            self.target_record(),
            {k: getattr(saved, k) for k in ("cv_mae", "cv_rmse", "cv_r2")},
            self.lib,
        )
        summary = summary.replace(seconds=round(time.perf_counter() - self.start, 2))
        summary.write(self.out / "summary.json")
        write_report(self.out)
        return summary


def _method_of(pipe: dict) -> str:
    """What a screened pipeline is: ``properties``, ``baseline`` or ``transfer``."""
    if pipe.get("spec") == "properties":
        return "properties"
    return "baseline" if "spec" in pipe else "transfer"


def _pipe_name(row) -> str:
    """A ranking row as ``dataset/property d=depth learner``."""
    return f"{row['dataset']}/{row['property']} d={int(row['depth'])} {row['learner']}"


def _pick(row, keys) -> dict:
    """``{key: float(row[key])}`` for a ranking row or a score dict."""
    return {k: float(row[k]) for k in keys}
