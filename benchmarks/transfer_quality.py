"""Transfer quality: nested-CV error of shotgun transfer vs the from-scratch baseline and the
random-weight control networks.

Usage: python benchmarks/transfer_quality.py --library results/standard_4/library
       [--out /tmp/...] [--targets esol,matbench_jdft2d] [--sizes 20,50,all] [--seeds 0,1]
       [--max-all-rows 1300] [--max-overlap SHARE] [--unseen]

For every declared target (config/targets/*.yaml), every size (a seeded subsample of N usable
rows, as ``shotgun transfer --n N``, once per seed of ``--seeds``, the seed also drawing the
folds; ``all``: every usable row with the declared seed, only for targets of at most
``--max-all-rows`` rows) this runs ``run_transfer`` on the target's declaration with nested CV
on, ``fine_tune=0`` (fine-tuning is not part of the nested estimate) and no learning curve, its
other options as declared (leakage guard and controls on). Reported per run, all nested: the
MAE of the selected method (the rule that picks the saved model, among transfer, the stack,
properties as features, the blend and the baseline, repeated inside every outer training fold),
of each method alone, of the baseline and of the controls; the ratio of the selected method's
MAE to the baseline's, and whether the pretrained networks beat their random-weight controls.

Goals: median ratio <= 0.85 at n <= 50 and <= 1.0 at every size; pretrained beats the control in
at least 75 % of the runs at n <= 50. Each finished run is appended to OUT/rows.jsonl; the JSON
last line holds all rows and the goals.
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from shotgun.transfer import TransferOptions, run_transfer

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (
    "esol_demo",
    "esol",
    "lipophilicity",
    "matbench_expt_gap",
    "matbench_jdft2d",
    "matbench_phonons",
    "open_polymer_tc",
    "radonpy_cp",
)
AIM_SMALL, AIM_ALL, AIM_CONTROL = 0.85, 1.0, 0.75


def cpu_seconds() -> float:
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def usable_rows(cfg: dict) -> int:
    """Rows with a numeric target (the featurizer may drop a few more)."""
    df = pd.read_csv(ROOT / cfg["data"], usecols=[cfg["target"]])
    return int(pd.to_numeric(df[cfg["target"]], errors="coerce").notna().sum())


def unseen_rows(library: Path, options: TransferOptions, out: Path) -> tuple[Path, int]:
    """The target's table less the rows whose input a candidate's source was trained on, apart
    from sources trained on more than half of its inputs (its own dataset, which the guard
    leaves out): every other source then stays in, having seen none of the rows. Returns the
    table written under ``out`` and the number of rows removed."""
    from shotgun.data.inputs import canonical_hashes
    from shotgun.library import Library
    from shotgun.transfer.candidates import CELL, candidates

    lib = Library.open(library)
    df = pd.read_csv(options.data, keep_default_na=False)
    hashes = canonical_hashes(df[options.input].astype(str).tolist(), options.kind)
    seen = np.zeros(len(df), dtype=bool)
    for mid in candidates(lib, options.kind).drop_duplicates(CELL)["model_id"]:
        inside = np.isin(hashes, lib.train_inputs(mid))
        if inside.mean() <= 0.5:
            seen |= inside
    out.mkdir(parents=True, exist_ok=True)
    path = out / "unseen.csv"
    df[~seen].to_csv(path, index=False)
    return path, int(seen.sum())


def run_one(
    library: Path,
    name: str,
    n: int | None,
    seed: int | None,
    out: Path,
    max_overlap=None,
    unseen: bool = False,
) -> dict:
    """One transfer run on a declared target (the leakage guard's ``max_overlap`` as declared
    unless given; with ``unseen``, on the rows no other source saw: :func:`unseen_rows`); its
    row of the benchmark."""
    declared = ROOT / "config" / "targets" / f"{name}.yaml"
    cfg = yaml.safe_load(declared.read_text())
    changes = {"nested": True, "fine_tune": 0, "n": n}
    if seed is not None:
        changes["seed"] = seed
    if max_overlap is not None:
        changes["max_overlap"] = max_overlap
    options = TransferOptions.from_yaml(declared, changes)
    options = options.replace(data=str(ROOT / options.data))
    removed = None
    if unseen:
        data, removed = unseen_rows(library, options, out)
        options = options.replace(data=str(data))
    load0, cpu0, t0 = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
    s = run_transfer(library, options, out, curve=())
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    nest, c = s.nested, s.control

    def mae(part):
        return part.cv_mae if part is not None else None

    row = {
        "target": name,
        "n": "all" if n is None else n,
        "seed": options.seed,
        "n_samples": s.n_samples,
        "n_candidates": s.n_candidates,
        "n_applicable": s.first_pass.n_applicable if s.first_pass else None,
        "unit": cfg.get("unit"),
        "selected_mae": nest.selected.cv_mae,
        "baseline_mae": nest.baseline.cv_mae,
        "ratio": nest.selected.cv_mae / nest.baseline.cv_mae,
        "transfer_mae": nest.cv_mae,
        "stack_mae": mae(nest.stack),
        "properties_mae": mae(nest.properties),
        "blend_mae": mae(nest.blend),
        "control_mae": mae(c),
        "control_stack_mae": mae(c.stack) if c else None,
        "control_properties_mae": mae(c.properties) if c else None,
        "control_blend_mae": mae(c.blend) if c else None,
        "pretrained_beats_control": c.pretrained_better if c else None,
        "properties_beat_control": c.properties_pretrained_better if c else None,
        "blend_beats_control": c.blend_pretrained_better if c else None,
        "related_source": c.relatedness.source if c and c.relatedness else None,
        "related_r2": c.relatedness.r2 if c and c.relatedness else None,
        "control_related_r2": c.relatedness.control_r2 if c and c.relatedness else None,
        "rule_mae": {r.rule: r.cv_mae for r in nest.rules or []},  # each --select rule's
        "rule_chosen": {r.rule: r.chosen_pipelines for r in nest.rules or []},
        "selected_r2": nest.selected.cv_r2,
        "baseline_r2": nest.baseline.cv_r2,
        "chosen": nest.selected.chosen,
        "chosen_pipelines": nest.selected.chosen_pipelines,
        "baseline_chosen": nest.baseline.chosen,
        "saved": s.saved.method,
        "saved_name": s.saved.name,
        "max_overlap": options.max_overlap,
        "rows_seen_by_sources_removed": removed,
        "leakage_excluded": s.leakage.n_excluded if s.leakage else None,
        "leakage_max_share": s.leakage.max_share if s.leakage else None,
        "leakage_unscored": s.leakage.n_unscored if s.leakage else None,
        "seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "load_avg_1min_start": round(load0, 2),
        "load_avg_1min_end": round(os.getloadavg()[0], 2),
    }
    return row


def goals(rows: list[dict]) -> dict:
    small = [r for r in rows if r["n"] != "all" and r["n"] <= 50]
    beats = [
        r["pretrained_beats_control"] for r in small if r["pretrained_beats_control"] is not None
    ]
    props = [
        r["properties_beat_control"] for r in small if r["properties_beat_control"] is not None
    ]
    blends = [r["blend_beats_control"] for r in small if r["blend_beats_control"] is not None]
    median_small = float(np.median([r["ratio"] for r in small])) if small else None
    sizes = sorted({str(r["n"]) for r in rows})
    by_size = {n: float(np.median([r["ratio"] for r in rows if str(r["n"]) == n])) for n in sizes}
    return {
        "n_le_50_runs": len(small),
        "median_ratio_n_le_50": median_small,
        "goal_median_ratio_n_le_50": AIM_SMALL,
        "median_ratio_by_size": by_size,
        "goal_median_ratio_every_size": AIM_ALL,
        "pretrained_beats_control_share_n_le_50": float(np.mean(beats)) if beats else None,
        "properties_beat_control_share_n_le_50": float(np.mean(props)) if props else None,
        "blend_beats_control_share_n_le_50": float(np.mean(blends)) if blends else None,
        "goal_beats_control_share": AIM_CONTROL,
        "selected_better_than_baseline_runs": sum(r["ratio"] < 1 for r in rows),
        "runs": len(rows),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--library", default=str(ROOT / "results" / "library"))
    p.add_argument("--out", default="/tmp/shotgun_transfer_quality")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--sizes", default="20,50,all")
    p.add_argument("--seeds", default="0,1", help="seeds of the subsampled sizes")
    p.add_argument("--max-all-rows", type=int, default=1300)
    p.add_argument(
        "--max-overlap", type=float, default=None, help="the leakage guard's limit (as declared)"
    )
    p.add_argument(
        "--unseen",
        action="store_true",
        help="only the target's rows that no source saw, but its own dataset's (unseen_rows)",
    )
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in a.sizes.split(","):
        for name in a.targets.split(","):
            cfg = yaml.safe_load((ROOT / "config" / "targets" / f"{name}.yaml").read_text())
            n = None if size == "all" else int(size)
            if n is None and usable_rows(cfg) > a.max_all_rows:
                print(f"skip {name} all rows: > {a.max_all_rows}", file=sys.stderr)
                continue
            for seed in [None] if n is None else [int(x) for x in a.seeds.split(",")]:
                tag = f"{name}_{size}" + ("" if seed is None else f"_s{seed}")
                row = run_one(Path(a.library), name, n, seed, out / tag, a.max_overlap, a.unseen)
                rows.append(row)
                with open(out / "rows.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"{tag}: selected {row['selected_mae']:.4g} ({','.join(row['chosen'])}) "
                    f"baseline {row['baseline_mae']:.4g} ratio {row['ratio']:.3f}; transfer "
                    f"{row['transfer_mae']:.4g} stack {row['stack_mae']} properties "
                    f"{row['properties_mae']} control {row['control_mae']} "
                    f"({row['seconds']:.0f} s, {row['cpu_seconds']:.0f} s CPU)",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        json.dumps(
            {
                "benchmark": "transfer_quality",
                "library": a.library,
                "fine_tune": 0,
                "cpus": os.cpu_count(),
                **goals(rows),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
