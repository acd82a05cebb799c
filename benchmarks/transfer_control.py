"""Cost of the control networks: one `shotgun transfer` with them and one without.

Usage: python benchmarks/transfer_control.py [--library results/library]
       [--target config/targets/esol_demo.yaml] [--out /tmp/shotgun_transfer_control]
       [--repeat 1] [-- extra shotgun transfer flags]

Each run is the `shotgun transfer` command in its own process (imports included), with the
declared target's options and any extra flags, first with `--control`, then `--no-control`
(alternating when repeated). Reported per run: wall and CPU seconds (the child process), the
time of each stage the command logs (`transfer: <stage> (<t> s)` lines on stderr), the 1-minute
load average, and the nested estimates of the pretrained candidates and of the controls. The
JSON last line holds them all and the ratio of the median wall times.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"^transfer: (.*) \(([0-9.]+) s\)$")


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(library: str, target: str, out: Path, control: bool, extra: list[str]) -> dict:
    flag = "--control" if control else "--no-control"
    cmd = ["shotgun", "transfer", "--target", target, "--library", library, "--out", str(out)]
    cpu0, t0 = child_cpu(), time.perf_counter()
    proc = subprocess.run([*cmd, flag, *extra], cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, child_cpu() - cpu0
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    stages, last = {}, 0.0
    for line in proc.stderr.splitlines():
        m = STAGE.match(line.strip())
        if m:
            t = float(m.group(2))
            stages[m.group(1)] = round(t - last, 2)
            last = t
    s = json.loads((out / "summary.json").read_text())
    c, n = s.get("control"), s.get("nested")
    return {
        "control": control,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "stages_s": stages,
        "n_samples": s["n_samples"],
        "n_candidates": s["n_candidates"],
        "nested_transfer_mae": n["cv_mae"] if n else None,
        "nested_control_mae": c["cv_mae"] if c else None,
        "pretrained_better": c["pretrained_better"] if c else None,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--library", default=str(ROOT / "results" / "library"))
    p.add_argument("--target", default=str(ROOT / "config" / "targets" / "esol_demo.yaml"))
    p.add_argument("--out", default="/tmp/shotgun_transfer_control")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("extra", nargs="*", help="more shotgun transfer flags (after --)")
    a = p.parse_args()
    runs = []
    for r in range(a.repeat):
        order = (True, False) if r % 2 == 0 else (False, True)
        for control in order:
            out = Path(a.out) / f"{'control' if control else 'no_control'}_{r}"
            runs.append(run(a.library, a.target, out, control, a.extra))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    wall = {c: float(np.median([x["wall_s"] for x in runs if x["control"] == c])) for c in (0, 1)}
    print(
        json.dumps(
            {
                "benchmark": "transfer_control",
                "library": a.library,
                "target": a.target,
                "extra": a.extra,
                "cpus": os.cpu_count(),
                "median_wall_s": {"control": wall[1], "no_control": wall[0]},
                "wall_ratio": round(wall[1] / wall[0], 3),
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
