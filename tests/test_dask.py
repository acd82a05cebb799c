"""Featurization on a real dask.distributed cluster: `shotgun featurize --scheduler` and the
LocalCluster of `shotgun.parallel.dask_client`."""

import os
import re
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, run
from shotgun.descriptors import featurize_inputs, read_features
from shotgun.parallel import dask_client

# (descriptor, kind, bundled file, column, inputs that cannot be featurized)
SETS = {
    "ecfp": ("molecule", "data/molecules/esol.csv", "smiles", ["not a smiles", "C1CC"]),
    "composition": (
        "inorganic",
        "data/inorganic/matbench_expt_gap.csv",
        "formula",
        ["Xx2O", "Fe2O3Zz"],
    ),
}


@pytest.fixture(scope="module")
def cluster():
    """A scheduler with two single-threaded worker processes, reachable over TCP."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield cluster, client


def _table(tmp_path, name):
    """The bundled set with bad inputs at rows 4 and last, and a repeated input; its CSV path."""
    kind, path, column, bad = SETS[name]
    inputs = pd.read_csv(ROOT / path)[column].astype(str).str.strip().tolist()
    inputs = inputs[:3] + [bad[0]] + inputs[3:] + [inputs[10], bad[1]]
    csv = tmp_path / f"{name}.csv"
    pd.DataFrame({column: inputs}).to_csv(csv, index=False)
    return kind, column, inputs, csv


def _featurize_cli(tmp_path, name, *options):
    kind, column, inputs, csv = _table(tmp_path, name)
    out = tmp_path / f"{name}.parquet"
    proc = run(
        [
            "shotgun",
            "featurize",
            "--data",
            str(csv),
            "--input",
            column,
            "--kind",
            kind,
            "--descriptor",
            name,
            "--out",
            str(out),
            *options,
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return inputs, out, proc


def _check_equals_in_process(name, inputs, out, proc):
    X0, ok0, spec0, _ = featurize_inputs(inputs, name)
    got_inputs, X, ok, spec = read_features(out)
    assert got_inputs.tolist() == inputs  # row order kept
    assert spec == spec0
    np.testing.assert_array_equal(ok, ok0)
    np.testing.assert_array_equal(X, X0)
    failed = [4, len(inputs)]
    assert (np.flatnonzero(~ok) + 1).tolist() == failed
    assert np.isnan(X[~ok]).all() and not np.isnan(X[ok]).any()
    assert f"{len(inputs)} rows" in proc.stdout
    assert f"2 failed (rows {failed})" in proc.stdout


@pytest.mark.parametrize("name", sorted(SETS))
def test_featurize_cli_on_a_scheduler_equals_in_process(tmp_path, cluster, name):
    from dask.distributed import get_task_stream

    cluster, client = cluster
    with get_task_stream(client=client) as stream:
        inputs, out, proc = _featurize_cli(tmp_path, name, "--scheduler", cluster.scheduler_address)
    _check_equals_in_process(name, inputs, out, proc)
    chunks = [t for t in stream.data if str(t["key"]).startswith("_featurize_chunk-")]
    assert len(chunks) >= 2  # the rows went to the cluster's workers, in several chunks
    assert {t["worker"] for t in chunks} <= set(client.nthreads())
    done = re.findall(r"featurize: (\d+)/(\d+) chunks", proc.stderr)
    assert done[-1] == (str(len(chunks)), str(len(chunks)))


def test_featurize_cli_on_a_local_cluster_equals_in_process(tmp_path):
    # composition: above the in-process threshold, so --n-workers 2 starts a LocalCluster
    inputs, out, proc = _featurize_cli(tmp_path, "composition", "--n-workers", "2")
    _check_equals_in_process("composition", inputs, out, proc)
    assert re.findall(r"featurize: (\d+)/(\d+) chunks", proc.stderr)


def test_featurize_cli_reports_an_unreachable_scheduler(tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "2s")
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kind, column, _, csv = _table(tmp_path, "ecfp")
    proc = run(
        [
            "shotgun",
            "featurize",
            "--data",
            str(csv),
            "--input",
            column,
            "--kind",
            kind,
            "--descriptor",
            "ecfp",
            "--out",
            str(tmp_path / "x.parquet"),
            "--scheduler",
            f"tcp://127.0.0.1:{port}",
        ]
    )
    assert proc.returncode == 2
    assert f"shotgun: error: no Dask scheduler answers at tcp://127.0.0.1:{port}" in proc.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_dask_client_starts_a_local_cluster_sized_to_the_job():
    with dask_client(n_workers=2) as client:
        nthreads = client.nthreads()
        assert sorted(nthreads.values()) == [1, 1]  # two single-threaded workers
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in nthreads)
        http = client.scheduler_info()["services"]["dashboard"]  # health and metrics only
        assert http != 8787
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=10) as r:
            assert r.read() == b"ok"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{http}/status", timeout=10)
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids  # separate processes
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert client.status == "closed"
    deadline = time.monotonic() + 20
    while pids and time.monotonic() < deadline:  # the workers exit with the cluster
        pids = {pid for pid in pids if _alive(pid)}
        time.sleep(0.2)
    assert not pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_dask_client_runs_in_process_without_scheduler_or_workers():
    for kwargs in ({}, {"n_workers": 1}, {"n_workers": 0}):
        with dask_client(**kwargs) as client:
            assert client is None


def test_dask_client_leaves_a_given_scheduler_running(cluster):
    cluster, other = cluster
    with dask_client(cluster.scheduler_address, n_workers=8) as client:
        assert client.scheduler.address == cluster.scheduler_address
        assert set(client.nthreads()) == set(other.nthreads())  # its workers, none started
        assert client.submit(len, "abc").result() == 3
    assert client.status == "closed"
    assert other.submit(len, "ab").result() == 2
