"""Transfer quality: nested-CV error of shotgun transfer vs the from-scratch baseline.

Usage: python benchmarks/transfer_quality.py [--library results/library] [--out /tmp/...]
       [--targets esol,matbench_jdft2d] [--sizes 20,50,all] [--max-all-rows 1300]

For every declared target (config/targets/*.yaml) and every size (a seeded subsample of N usable
rows, as ``shotgun transfer --n N``; ``all``: every usable row, only for targets of at most
``--max-all-rows`` rows) this runs ``run_transfer`` on the target's declaration with nested CV
on and ``fine_tune=0`` (fine-tuning is not part of the nested estimate and dominates the run
time), its other options as declared. Reported per run: the nested MAE of transfer and of the
baseline (each choosing its pipeline inside every outer training fold), their ratio, the nested
MAE of the selected method (the rule that picks the saved model, among transfer, the stack and
the baseline, repeated inside every outer training fold) and its ratio to the baseline's, and the
same-fold (optimistic) best of each. The stated aim is ratio <= 0.75 at n <= 50.

Each finished run is appended to OUT/rows.jsonl; the JSON last line holds all rows.
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
)
AIM = 0.75


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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--library", default=str(ROOT / "results" / "library"))
    p.add_argument("--out", default="/tmp/shotgun_transfer_quality")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--sizes", default="20,50,all")
    p.add_argument("--max-all-rows", type=int, default=1300)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in a.sizes.split(","):
        for name in a.targets.split(","):
            declared = ROOT / "config" / "targets" / f"{name}.yaml"
            cfg = yaml.safe_load(declared.read_text())
            n_rows = usable_rows(cfg)
            n = None if size == "all" else int(size)
            if n is None and n_rows > a.max_all_rows:
                print(f"skip {name} all rows: {n_rows} > {a.max_all_rows}", file=sys.stderr)
                continue
            load0, cpu0, t0 = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
            options = TransferOptions.from_yaml(declared, {"nested": True, "fine_tune": 0, "n": n})
            options = options.replace(data=str(ROOT / options.data))
            s = run_transfer(Path(a.library), options, out / f"{name}_{size}")
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
            nest, best = s.nested, s.best
            row = {
                "target": name,
                "n": size if n is None else n,
                "n_samples": s.n_samples,
                "n_candidates": s.n_candidates,
                "unit": cfg.get("unit"),
                "nested_transfer_mae": nest.cv_mae,
                "nested_baseline_mae": nest.baseline.cv_mae,
                "ratio": nest.cv_mae / nest.baseline.cv_mae,
                "nested_stack_mae": nest.stack.cv_mae if nest.stack else None,
                "nested_selected_mae": nest.selected.cv_mae,
                "ratio_selected": nest.selected.cv_mae / nest.baseline.cv_mae,
                "nested_selected_chosen": nest.selected.chosen,
                "saved": s.saved.method,
                "nested_transfer_r2": nest.cv_r2,
                "nested_baseline_r2": nest.baseline.cv_r2,
                "same_fold_transfer_mae": best.cv_mae,
                "same_fold_transfer": f"{best.dataset}/{best.property} "
                f"d={best.depth} {best.learner}",
                "same_fold_baseline_mae": s.baseline.cv_mae,
                "same_fold_baseline": s.baseline.name,
                "nested_chosen": nest.chosen_pipelines,
                "nested_control_mae": s.control.cv_mae if s.control else None,
                "pretrained_beats_control": s.control.pretrained_better if s.control else None,
                "leakage_excluded": s.leakage.n_excluded if s.leakage else None,
                "leakage_max_share": s.leakage.max_share if s.leakage else None,
                "nested_baseline_chosen": nest.baseline.chosen,
                "seconds": round(wall, 1),
                "cpu_seconds": round(cpu, 1),
                "load_avg_1min_start": round(load0, 2),
                "load_avg_1min_end": round(os.getloadavg()[0], 2),
            }
            row["meets_aim"] = bool(row["ratio"] <= AIM)
            rows.append(row)
            with open(out / "rows.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{name} n={row['n']}: transfer {row['nested_transfer_mae']:.4g} baseline "
                f"{row['nested_baseline_mae']:.4g} ratio {row['ratio']:.3f} "
                f"({wall:.0f} s, {cpu:.0f} s CPU, load {row['load_avg_1min_end']})",
                file=sys.stderr,
                flush=True,
            )
    small = [r for r in rows if r["n"] != "all" and r["n"] <= 50]
    print(
        json.dumps(
            {
                "benchmark": "transfer_quality",
                "library": a.library,
                "fine_tune": 0,
                "aim_ratio": AIM,
                "cpus": os.cpu_count(),
                "n_le_50_runs": len(small),
                "n_le_50_meeting_aim": sum(r["meets_aim"] for r in small),
                "median_ratio_n_le_50": float(np.median([r["ratio"] for r in small]))
                if small
                else None,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
