import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)  # the environment's snakemake and shotgun


def run(args, **kw):
    """Run a command of this environment from the repository root."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """A real Snakemake run of config/smoke.yaml; returns its results folder
    (SHOTGUN_SMOKE_RESULTS names an existing one to bring up to date instead)."""
    given = os.environ.get("SHOTGUN_SMOKE_RESULTS")
    results = Path(given) if given else tmp_path_factory.mktemp("smoke") / "results"
    proc = run(
        [
            "snakemake",
            "--profile",
            "profiles/local",
            "--configfile",
            "config/smoke.yaml",
            "--config",
            f"results={results}",
            "--cores",
            "2",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return results
