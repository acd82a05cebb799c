"""The smoke workflow logging over HTTP to a real `mlflow server` on 127.0.0.1."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import run
from shotgun.library import Library, from_mlflow
from shotgun.tracking import count_runs


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow = str(Path(sys.executable).parent / "mlflow")
    proc = subprocess.Popen(
        [
            mlflow,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=open(root / "server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not start:\n" + (root / "server.log").read_text())
        yield uri
    finally:
        proc.terminate()
        proc.wait(30)


def test_smoke_workflow_against_a_tracking_server(server, tmp_path):
    results = tmp_path / "results"
    proc = run(
        [
            "snakemake",
            "--profile",
            "profiles/local",
            "--configfile",
            "config/smoke.yaml",
            "--config",
            f"results={results}",
            f"tracking_uri={server}",
            "--cores",
            "2",
            "--until",
            "library",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (results / "mlflow.db").exists()  # nothing went to the embedded store
    lib = Library.open(results / "library")
    assert count_runs(server, lib.version) == len(lib.index) > 0
    # The server holds the artifacts too: the library can be rebuilt from it alone.
    from_mlflow(server, lib.version, tmp_path / "rebuilt")
    a = lib.index.sort_values("model_id").reset_index(drop=True)
    b = Library.open(tmp_path / "rebuilt").index.sort_values("model_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
