"""Relatedness of a library's sources to each declared target: how much of the target one
source property explains, pretrained networks against their random-weight controls, and what
the leakage guard leaves out.

Usage: python benchmarks/transfer_relatedness.py --library results/standard_4/library
       [--targets esol,matbench_expt_gap] [--rows 1300] [--top 5]

For every declared target (config/targets/*.yaml; its usable rows, a seeded subsample of
``--rows`` above that), every applicable candidate's prediction on the target's inputs (its
column of properties as features) and its control network's (the run's seed, as in
``shotgun transfer``). r² is the squared Pearson correlation of a prediction with the target
over all those rows (``shotgun.metrics.squared_correlations``, as the ``relatedness`` of a run's
``summary.json``): an oracle that sees every target value, a diagnostic of what the library
holds, never a way of choosing. Per target: the best r² among the sources the guard keeps
(``--max-overlap`` as declared), among those it leaves out, and among the controls; the top
source properties of each (each by its best model); and for several ``--max-overlap`` limits,
the candidates kept and the share of the target's rows their sources saw, which a run keeping
them fits on but never scores. JSON last line.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from shotgun.data.inputs import canonical_hashes
from shotgun.library import Library
from shotgun.metrics import squared_correlations
from shotgun.transfer import TransferOptions
from shotgun.transfer.candidates import (
    candidate_specs,
    candidates,
    control_of,
    loaded,
    source_prediction,
)
from shotgun.transfer.leakage import rows_seen, share
from shotgun.transfer.target import prepare_target
from transfer_quality import TARGETS  # every declared target

ROOT = Path(__file__).resolve().parents[1]
LIMITS = (0.01, 0.05, 0.1, 0.5)  # --max-overlap limits whose unscored rows are reported


def relatedness(lib: Library, name: str, rows: int, top: int) -> dict:
    declared = ROOT / "config" / "targets" / f"{name}.yaml"
    o = TransferOptions.from_yaml(declared, {"n": rows})  # a subsample only above `rows`
    o = o.replace(data=str(ROOT / o.data))
    cands = candidates(lib, o.kind)
    ids = list(cands["model_id"])
    t = prepare_target(o, candidate_specs(lib, ids))
    info = cands.set_index("model_id")
    hashes = canonical_hashes(t.inputs, o.kind)
    found, pre, ctl = [], [], []
    for mid, model in loaded(lib, ids):
        p, c = source_prediction(model, t.raw), source_prediction(control_of(model, o.seed), t.raw)
        if not (np.isfinite(p).all() and np.isfinite(c).all()):
            continue
        mask = rows_seen(model.train_inputs, hashes)
        overlap = share(mask)
        row = info.loc[mid]
        found.append(
            {
                "model_id": mid,
                "source": f"{row['dataset']}/{row['property']} ({row['descriptor']})",
                "overlap": overlap,
                "excluded": overlap is not None and overlap > o.max_overlap,
                "mask": mask,
            }
        )
        pre.append(p)
        ctl.append(c)
    r2, control_r2 = (squared_correlations(np.column_stack(P), t.y) for P in (pre, ctl))
    for r, a, b in zip(found, r2, control_r2):
        r.update(r2=float(a), control_r2=float(b))

    def best(rows_, key):
        """The ``top`` source properties by ``key``, each with its best model."""
        seen, out = set(), []
        for r in sorted(rows_, key=lambda r: -r[key]):
            prop = r["source"].split(" (")[0]
            if prop not in seen and len(out) < top:
                seen.add(prop)
                out.append({k: r[k] for k in ("source", key, "overlap")})
        return out

    kept = [r for r in found if not r["excluded"]]
    out = [r for r in found if r["excluded"]]
    unscored = {}  # per --max-overlap limit: the candidates kept, the share of rows never scored
    for limit in LIMITS:
        masks = [r["mask"] for r in found if r["overlap"] is not None and r["overlap"] <= limit]
        union = np.any(masks, axis=0) if masks else np.zeros(len(t.y), dtype=bool)
        unscored[str(limit)] = {"kept": len(masks), "unscored": float(union.mean())}
    return {
        "target": name,
        "rows": len(t.y),
        "candidates": len(found),
        "excluded": len(out),
        "best_r2_kept": max((r["r2"] for r in kept), default=None),
        "best_r2_excluded": max((r["r2"] for r in out), default=None),
        "best_r2_control": max((r["control_r2"] for r in kept), default=None),
        "median_r2_kept": float(np.median([r["r2"] for r in kept])) if kept else None,
        "median_r2_control": float(np.median([r["control_r2"] for r in kept])) if kept else None,
        "kept_beats_control": int(sum(r["r2"] > r["control_r2"] for r in kept)),
        "top_kept": best(kept, "r2"),
        "top_excluded": best(out, "r2"),
        "top_control": best(kept, "control_r2"),
        "unscored": unscored,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--library", default=str(ROOT / "results" / "library"))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--rows", type=int, default=1300, help="at most this many rows per target")
    p.add_argument("--top", type=int, default=5, help="source properties listed per group")
    a = p.parse_args()
    lib = Library.open(a.library)
    rows = []
    for name in a.targets.split(","):
        row = relatedness(lib, name, a.rows, a.top)
        print(
            f"{name}: {row['rows']} rows, {row['candidates']} candidates "
            f"({row['excluded']} left out by the guard); best r² kept {row['best_r2_kept']:.3f}, "
            f"left out {row['best_r2_excluded'] or 0:.3f}, control {row['best_r2_control']:.3f}",
            flush=True,
        )
        rows.append(row)
    print(json.dumps({"benchmark": "transfer_relatedness", "library": a.library, "rows": rows}))


if __name__ == "__main__":
    main()
