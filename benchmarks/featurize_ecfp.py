"""ECFP counts (radius 3, 2,048 bits) of every QM9 molecule, in parallel with Dask.

Usage: python benchmarks/featurize_ecfp.py [--n-workers 2] [--limit N] [--repeat 3]

Two measurements, best of the repeats each:
- ``featurize``: the parallel featurization step alone (``shotgun.descriptors.featurize``);
- ``end_to_end``: ``shotgun featurize`` as the workflow's featurize rule runs it (a new process:
  imports, reading the CSV, the feature cache, featurizing, writing the Parquet feature table),
  timed from outside.
CPU seconds count this process and its child processes (Dask workers, the command), so a run
slowed by other load on the machine can be told apart. Prints JSON as its last line.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
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
    smiles = pd.read_csv(DATA, usecols=["smiles"], dtype=str, keep_default_na=False)["smiles"]
    smiles = smiles.tolist()[: a.limit]
    d = get_descriptor("ecfp")
    runs = []
    for _ in range(a.repeat):
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        X, ok = featurize(d, smiles, n_workers=a.n_workers)
        runs.append((time.perf_counter() - start, cpu_seconds() - cpu0))
        del X
    seconds, cpu = min(runs)
    e2e = min(end_to_end(smiles, a.n_workers) for _ in range(a.repeat))
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
                "end_to_end_seconds": round(e2e[0], 2),
                "end_to_end_cpu_seconds": round(e2e[1], 2),
            }
        )
    )


def end_to_end(smiles: list[str], n_workers: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the featurize command on ``smiles`` with an empty cache."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "inputs.csv"
        pd.DataFrame({"input": smiles}).to_csv(data, index=False)
        cmd = [str(Path(sys.executable).parent / "shotgun"), "featurize", "--data", str(data)]
        cmd += ["--input", "input", "--kind", "molecule", "--descriptor", "ecfp"]
        cmd += ["--out", f"{tmp}/ecfp.parquet", "--cache", f"{tmp}/cache"]
        cmd += ["--n-workers", str(n_workers)]
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start, cpu_seconds() - cpu0


def cpu_seconds() -> float:
    """User + system time of this process and its finished child processes."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
