"""The smoke workflow on a real one-node SLURM cluster (started by .ci/slurm-up), through
profiles/slurm, gives the same library as the local run."""

import os
import shutil

import pandas as pd
import pytest

from conftest import run
from shotgun.library import Library

REQUIRED = os.environ.get("SHOTGUN_REQUIRE_SLURM") == "1"  # set by .ci/run


def slurm_up() -> bool:
    return shutil.which("sinfo") is not None and run(["sinfo", "-h"]).returncode == 0


@pytest.mark.skipif(
    not REQUIRED and not slurm_up(), reason="no SLURM cluster here (start one with .ci/slurm-up)"
)
def test_smoke_library_on_slurm_equals_the_local_one(smoke, tmp_path):
    assert slurm_up(), "SLURM is required but `sinfo` fails"
    results = tmp_path / "results"
    proc = run(
        [
            "snakemake",
            "--profile",
            "profiles/slurm",
            "--configfile",
            "config/smoke.yaml",
            "--config",
            f"results={results}",
            "--slurm-no-account",
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--until",
            "library",
        ]
    )  # the profile as shipped: groups of four shards, at most 2 CPUs asked for
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submitted with SLURM jobid" in proc.stdout + proc.stderr
    cols = ["model_id", "dataset", "property", "architecture", "n_train", "test_mae", "test_r2"]
    local = Library.open(smoke / "library").index[cols].sort_values("model_id")
    remote = Library.open(results / "library").index[cols].sort_values("model_id")
    pd.testing.assert_frame_equal(local.reset_index(drop=True), remote.reset_index(drop=True))
