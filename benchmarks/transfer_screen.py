"""Ridge screen of 1,000 source models on a 100-molecule target (5 folds, depth <= 2).

Usage: python benchmarks/transfer_screen.py [--library results/library] [--models 1000]
       [--scratch /tmp/shotgun_lib1000] [--n-workers 1,2] [--repeat 1]

Speed target: screening 1,000 source models on a 100-sample target, 5 folds, depth <= 2, in at
most 30 s on 2 cores.

Candidates: the library's models applicable to molecules (all 62 of the default library: ECFP
models and composition models through organic_composition) and, up to ``--models``, networks
with the same cards and architectures (cycled) but freshly seeded random weights (torch seed =
copy number; the source model's input scaler). All are written once, outside the timing, as a
real library (``shotgun.library.write_library``) under ``--scratch``, so that loading includes
checksum verification as in ``shotgun transfer``.

Timed as ``run_transfer`` does it (one BLAS thread, the plain 5-fold plan of
``build_plan(nested=False)``):
  prepare    Library.open, the applicable candidates (cards only), the target's descriptors
             for every candidate descriptor spec (ECFP, organic_composition), the plan
  screen_N   ``shotgun.transfer.screen.screen_all`` with N workers: every candidate loaded
             (sha256 checked),
             its pre-activations at depths 1 and 2 (one forward pass), ridge on the 5 folds
             batched over candidates; N = 1 in this process, N > 1 a local Dask cluster (its
             start-up included) whose workers load their own share
  total      prepare + the fastest screen_N
and, to show where the time goes (in this process, all models held): load, features, ridge.
Wall and CPU seconds (this process and finished child processes) and the 1-minute load
average are given for each; the JSON last line holds them all.
"""

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "data" / "targets" / "esol_demo.csv"


def cpu_seconds() -> float:
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Timer:
    def __init__(self):
        self.stages = {}

    def __call__(self, name):
        timer = self

        class Stage:
            def __enter__(self):
                self.t, self.c = time.perf_counter(), cpu_seconds()

            def __exit__(self, *exc):
                timer.stages[name] = {
                    "seconds": round(time.perf_counter() - self.t, 3),
                    "cpu_seconds": round(cpu_seconds() - self.c, 3),
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }

        return Stage()


def build_scratch_library(source: Path, dest: Path, n_models: int, kind: str) -> dict:
    """``dest``: the applicable models of ``source`` plus random-weight copies, ``n_models`` in
    all (reused when it already holds exactly those)."""
    import torch
    from safetensors.torch import save_file

    from shotgun.checksums import sha256
    from shotgun.library import Library, write_library
    from shotgun.nn import build_network, stable_seed

    lib = Library.open(source)
    ids = list(lib.applicable(kind).sort_values("model_id")["model_id"])
    key = {"source": lib.version, "files": lib.manifest["files"], "n": n_models, "ids": ids}
    tag = stable_seed(key)
    if (dest / "manifest.json").is_file():
        if json.loads((dest / "manifest.json").read_text()).get("scratch_tag") == tag:
            return {"built": False, "seconds": 0.0}
        shutil.rmtree(dest)
    elif dest.exists():
        shutil.rmtree(dest)
    start = time.perf_counter()
    staging = dest.parent / f".{dest.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    models, random_init = [], {}
    for mid in ids:
        card = lib.card(mid)
        models.append((card, lib.weights(mid, card)))
    for i in range(n_models - len(ids)):
        card = lib.card(ids[i % len(ids)])
        scaler = lib.weights(card.model_id, card)
        torch.manual_seed(i)
        net = build_network(card.architecture)
        tensors = {f"net.{k}": v.contiguous() for k, v in net.state_dict().items()}
        tensors.update(x_mean=scaler["x_mean"], x_std=scaler["x_std"])
        new_id = f"r{i:05d}{card.model_id[:10]}"
        path = staging / f"{new_id}.safetensors"
        save_file(tensors, str(path))
        models.append(
            (card.replace(model_id=new_id, weights_sha256=sha256(path), mlflow_run_id=None), path)
        )
        random_init[new_id] = {"of": card.model_id, "torch_seed": i}
    # The random-weight copies are named in the manifest (ids starting with "r").
    write_library(dest, models, "bench-1000", scratch_tag=tag, random_init=random_init)
    shutil.rmtree(staging)
    return {"built": True, "seconds": round(time.perf_counter() - start, 1)}


def main():
    """Build the scratch library, time each stage, check the screens agree, print the JSON.

    One function (over 80 lines): the stages are timed inline, in the order the module docstring
    lists them, so that what a figure covers is visible where it is measured."""
    p = argparse.ArgumentParser()
    p.add_argument("--library", default=str(ROOT / "results" / "library"))
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--scratch", default="/tmp/shotgun_lib1000")
    p.add_argument("--n-workers", default="1,2")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--max-depth", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args()
    kind = "molecule"
    scratch = Path(a.scratch)
    build = build_scratch_library(Path(a.library), scratch, a.models, kind)

    from threadpoolctl import threadpool_limits

    from shotgun.library import Library
    from shotgun.transfer.candidates import candidate_specs, candidates, neural_features
    from shotgun.transfer.learners import ridge_batch
    from shotgun.transfer.plans import build_plan
    from shotgun.transfer.screen import screen_all
    from shotgun.transfer.target import load_target, target_descriptors

    runs = []
    for _ in range(a.repeat):
        t = Timer()
        load_start = os.getloadavg()[0]
        with threadpool_limits(1):
            with t("prepare"):
                inputs, y = load_target(TARGET, "smiles", "logSolubility", kind)
                lib = Library.open(scratch)
                cands = candidates(lib, kind, None)
                ids = list(cands["model_id"])
                raw, _, keep = target_descriptors(candidate_specs(lib, ids), inputs, kind)
                keep &= np.isfinite(y)
                y, raw = y[keep], {k: X[keep] for k, X in raw.items()}
                plan = build_plan(y, a.folds, 0, nested=False)
            screens = {}
            for w in (int(x) for x in a.n_workers.split(",")):
                with t(f"screen_{w}"):
                    screens[w] = screen_all(lib, ids, raw, y, plan.pairs, a.max_depth, None, w)
            # where the time goes, stage by stage
            with t("load"):
                models = {mid: lib.load(mid) for mid in ids}
            with t("features"):
                feats = [
                    F for m in models.values() for _, F in neural_features(m, raw, a.max_depth)
                ]
            with t("ridge"):
                per_pair = [ridge_batch(feats, y, tr, te) for tr, te in plan.pairs]
        fastest = min(screens, key=lambda w: t.stages[f"screen_{w}"]["seconds"])
        t.stages["total"] = {
            k: round(t.stages["prepare"][k] + t.stages[f"screen_{fastest}"][k], 3)
            for k in ("seconds", "cpu_seconds")
        }
        t.stages["total"]["load_avg_1min"] = t.stages[f"screen_{fastest}"]["load_avg_1min"]
        entries = screens[fastest]
        assert len(entries) == len(feats)
        check = max(
            float(np.max(np.abs(np.asarray(e["preds"][k]) - per_pair[k][i])))
            for w in screens
            for i, e in enumerate(screens[w])
            for k in range(len(plan.pairs))
        )
        mae = pd.Series(
            {
                (e["model_id"], e["depth"]): float(
                    np.mean(
                        np.abs(
                            np.concatenate(e["preds"])
                            - np.concatenate([y[te] for _, te in plan.pairs])
                        )
                    )
                )
                for e in entries
            }
        )
        runs.append(
            {
                "pairs": len(feats),
                "fastest_workers": fastest,
                "stages": t.stages,
                "load_avg_1min_start": round(load_start, 2),
                "max_abs_diff_screens_vs_stages": check,
                "best_cv_mae": round(float(mae.min()), 4),
                "best_is_random_init": bool(str(mae.idxmin()[0]).startswith("r")),
            }
        )
        del models, feats, per_pair, screens
    best = min(runs, key=lambda r: r["stages"]["total"]["seconds"])
    total = best["stages"]["total"]
    print(
        json.dumps(
            {
                "benchmark": "transfer_screen",
                "target": str(TARGET.relative_to(ROOT)),
                "n_samples": int(len(y)),
                "folds": a.folds,
                "max_depth": a.max_depth,
                "models": int(len(cands)),
                "n_library_models": int(len(lib.index)),
                "cpus": os.cpu_count(),
                "scratch_library": {"path": str(scratch), **build},
                "seconds": total["seconds"],
                "cpu_seconds": total["cpu_seconds"],
                "per_model_ms": round(1000 * total["seconds"] / len(cands), 2),
                "load_avg_1min": total["load_avg_1min"],
                "load_avg_now": [round(x, 2) for x in os.getloadavg()],
                "target_s": 30,
                "meets_target": total["seconds"] <= 30,
                **best,
                "all_totals": [r["stages"]["total"]["seconds"] for r in runs],
            }
        )
    )


if __name__ == "__main__":
    main()
