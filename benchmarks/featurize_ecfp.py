"""ECFP counts (radius 3, 2,048 bits) of every QM9 molecule, in parallel with Dask.

Usage: python benchmarks/featurize_ecfp.py [--n-workers 2] [--limit N] [--repeat 3]
Reports the best wall time of the repeats and the CPU time (this process and its worker
processes) of that run, so that a run slowed by other load on the machine can be told apart.
Prints JSON as its last line.
"""

import argparse
import json
import os
import resource
import time
from pathlib import Path

import pandas as pd

from shotgun.descriptors import featurize, get_descriptor

DATA = Path(__file__).resolve().parents[1] / "data" / "molecules" / "qm9.csv.gz"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n-workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    smiles = pd.read_csv(DATA, usecols=["smiles"])["smiles"].tolist()[: a.limit]
    d = get_descriptor("ecfp")
    runs = []
    for _ in range(a.repeat):
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        X, ok = featurize(d, smiles, n_workers=a.n_workers)
        runs.append((time.perf_counter() - start, cpu_seconds() - cpu0))
        del X
    seconds, cpu = min(runs)
    print(
        json.dumps(
            {
                "benchmark": "ecfp_qm9",
                "n_inputs": len(smiles),
                "n_ok": int(ok.sum()),
                "n_features": d.n_features,
                "n_workers": a.n_workers,
                "cpus": os.cpu_count(),
                "load_avg_1min": round(os.getloadavg()[0], 2),
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu, 2),
                "all_seconds": [round(s, 2) for s, _ in runs],
                "inputs_per_s": round(len(smiles) / seconds),
            }
        )
    )


def cpu_seconds() -> float:
    """User + system time of this process and its finished child processes."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
