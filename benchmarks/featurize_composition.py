"""Composition descriptors of every Matbench formation-energy formula vs matminer.

Times ``composition`` (default classic stats, 290 features, and all 7 stats, 406) on all
132,752 formulas in one process, and matminer's ElementProperty (Magpie preset table, the same
five statistics over the 22 core Magpie columns it shares with ours) on a random subsample,
extrapolated per formula. Checks that the shared features agree to 1e-6 on the subsample.

Usage: python benchmarks/featurize_composition.py [--matminer-sample 1000]
Prints JSON as its last line.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from shotgun.descriptors import get_descriptor
from shotgun.descriptors.composition import STATS

DATA = Path(__file__).resolve().parents[1] / "data" / "inorganic" / "matbench_mp_e_form.csv.gz"
MAGPIE_22 = [
    "Number",
    "MendeleevNumber",
    "AtomicWeight",
    "MeltingT",
    "Column",
    "Row",
    "CovalentRadius",
    "Electronegativity",
    "NsValence",
    "NpValence",
    "NdValence",
    "NfValence",
    "NValence",
    "NsUnfilled",
    "NpUnfilled",
    "NdUnfilled",
    "NfUnfilled",
    "NUnfilled",
    "GSvolume_pa",
    "GSbandgap",
    "GSmagmom",
    "SpaceGroupNumber",
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--matminer-sample", type=int, default=1000)
    a = p.parse_args()
    formulas = pd.read_csv(DATA)["formula"].tolist()

    timings = {}
    for label, stats in (("classic", None), ("all7", list(STATS))):
        d = (
            get_descriptor("composition")
            if stats is None
            else get_descriptor("composition", stats=stats)
        )
        start, cpu = time.perf_counter(), time.process_time()
        X, ok = d.featurize(formulas)
        timings[label] = time.perf_counter() - start
        timings[label + "_cpu"] = time.process_time() - cpu
        if stats is None:
            X_classic, names = X, d.feature_names()

    from matminer.featurizers.composition import ElementProperty
    from matminer.utils.data import MagpieData
    from pymatgen.core import Composition

    rng = np.random.default_rng(0)
    idx = rng.choice(len(formulas), a.matminer_sample, replace=False)
    ep = ElementProperty(
        MagpieData(impute_nan=False),
        MAGPIE_22,
        ["mean", "minimum", "maximum", "std_dev", "range"],
        impute_nan=False,
    )
    start, cpu = time.perf_counter(), time.process_time()  # parsing included, as in ours
    ref = np.array([ep.featurize(Composition(formulas[i])) for i in idx], dtype=float)
    mm_seconds = time.perf_counter() - start
    mm_cpu = time.process_time() - cpu
    mm_per_formula = mm_seconds / len(idx)

    col = {n: j for j, n in enumerate(names)}
    ours_for = {"mean": "mean", "minimum": "min", "maximum": "max"}
    max_err, n_compared = 0.0, 0
    for j, label in enumerate(ep.feature_labels()):
        _, stat, feature = label.split(" ")
        if stat not in ours_for:
            continue
        ours = X_classic[idx, col[f"{ours_for[stat]}:{feature}"]].astype(float)
        known = ~np.isnan(ref[:, j])
        err = np.abs(ours[known] - ref[known, j]) / np.maximum(1.0, np.abs(ref[known, j]))
        max_err = max(max_err, float(err.max(initial=0.0)))
        n_compared += int(known.sum())

    mm_all = mm_per_formula * len(formulas)
    print(
        json.dumps(
            {
                "benchmark": "composition_matbench_mp_e_form",
                "n_inputs": len(formulas),
                "n_ok": int(ok.sum()),
                "seconds_classic_290": round(timings["classic"], 2),
                "seconds_all7_406": round(timings["all7"], 2),
                "matminer_sample": len(idx),
                "matminer_seconds_sample": round(mm_seconds, 2),
                "matminer_seconds_extrapolated": round(mm_all, 1),
                "speedup_vs_matminer": round(mm_all / timings["classic"], 1),
                "cpu_seconds_classic_290": round(timings["classic_cpu"], 2),
                "speedup_vs_matminer_cpu": round(
                    mm_cpu / len(idx) * len(formulas) / timings["classic_cpu"], 1
                ),
                "load_avg_1min": round(os.getloadavg()[0], 2),
                "shared_values_compared": n_compared,
                "max_rel_error": max_err,
            }
        )
    )


if __name__ == "__main__":
    main()
