import json
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


def tensor_spans(path) -> dict[str, tuple[int, int]]:
    """Byte range of every tensor of a safetensors file, read from its header by hand (an
    8-byte little-endian length, then JSON with each tensor's data offsets)."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    return {
        k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1]) for k, v in header.items()
    }
