"""The cluster setup the README recommends, for real: an `mlflow server` with MLflow's basic-auth
app on a PostgreSQL store started here; the smoke workflow logs to it with credentials from the
environment, the library is rebuilt from it, and concurrent writers lose no run.

PostgreSQL comes from Debian's `postgresql` package (`.ci/run` installs it); without it these
tests skip, unless SHOTGUN_REQUIRE_POSTGRES=1.
"""

import base64
import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, ROOT, run
from shotgun.errors import ShotgunError
from shotgun.library import Library, ModelCard, from_mlflow
from shotgun.tracking import count_runs, finished_runs, init_store, resolve_uri

USER = "shotgun-admin"


def _pg_bin() -> Path | None:
    """PostgreSQL's programs: Debian's newest version, else initdb's folder on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    found += [shutil.which("initdb") or ""]
    return next((Path(f).resolve().parent for f in found if f and Path(f).exists()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args, **kw):
    """PostgreSQL refuses to run as root: as root, run its commands as the postgres user."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + [str(a) for a in args], check=True, capture_output=True, **kw)


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on a free port; yields the SQLAlchemy URI of its database
    `mlflow` (local trust authentication: it listens on 127.0.0.1 only)."""
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("SHOTGUN_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="shotgun-pg-"))  # a path the postgres user can reach
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    _as_postgres([bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres"])
    _as_postgres(
        [bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "start", "-o"]
        + [f"-p {port} -k {root} -h 127.0.0.1"]
    )
    try:
        _as_postgres(
            [bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "mlflow"]
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        _as_postgres([bindir / "pg_ctl", "-D", data, "-m", "fast", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """`mlflow server --app-name basic-auth` on the PostgreSQL store; yields (uri, password).
    The admin account comes from the environment (MLFLOW_AUTH_ADMIN_*), not from a file; the
    auth config file holds no secret, and users without a permission see nothing."""
    root = tmp_path_factory.mktemp("mlflow-server")
    (root / "auth.ini").write_text(
        f"[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
    )
    password = secrets.token_urlsafe(24)
    env = dict(
        os.environ,
        MLFLOW_AUTH_CONFIG_PATH=str(root / "auth.ini"),
        MLFLOW_AUTH_ADMIN_USERNAME=USER,
        MLFLOW_AUTH_ADMIN_PASSWORD=password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
    )
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            postgres,
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            proc.kill()
        if proc.poll() is not None:
            raise RuntimeError("mlflow server did not start:\n" + (root / "server.log").read_text())
        yield uri, password
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _status(url: str, auth: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_requests_without_valid_credentials_are_refused(server):
    uri, password = server
    url = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _status(url, None) == 401
    assert _status(url, (USER, password + "x")) == 401
    assert _status(url, (USER, password)) == 200


def test_a_tracking_uri_with_credentials_is_refused():
    with pytest.raises(ShotgunError, match="MLFLOW_TRACKING_PASSWORD") as e:
        resolve_uri("http://bob:hunter2@mlflow-host:5000", Path("results"))
    assert "hunter2" not in str(e.value)
    assert resolve_uri("http://mlflow-host:5000", Path("results")) == "http://mlflow-host:5000"


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """The smoke workflow up to its library, logging to the server with credentials from the
    environment; (results, completed process)."""
    uri, password = server
    results = tmp_path_factory.mktemp("served") / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_USERNAME", USER)
        mp.setenv("MLFLOW_TRACKING_PASSWORD", password)
        proc = run(
            [
                "snakemake",
                "--profile",
                "profiles/local",
                "--configfile",
                "config/smoke.yaml",
                "--config",
                f"results={results}",
                f"tracking_uri={uri}",
                "--cores",
                "2",
                "--until",
                "library",
            ]
        )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results, proc


def test_smoke_workflow_logs_to_an_authenticated_server(server, served, tmp_path, monkeypatch):
    uri, password = server
    results, proc = served
    assert not (results / "mlflow.db").exists()  # nothing went to the embedded store
    lib = Library.open(results / "library")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    assert count_runs(uri, lib.version) == len(lib.index) > 0
    # The server holds the artifacts too: the library can be rebuilt from it alone.
    from_mlflow(uri, lib.version, tmp_path / "rebuilt")
    a = lib.index.sort_values("model_id").reset_index(drop=True)
    b = Library.open(tmp_path / "rebuilt").index.sort_values("model_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    # The password is in no log, config or file the workflow wrote.
    assert password not in proc.stdout + proc.stderr
    for path in results.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert password.encode() not in path.read_bytes(), path


WRITER = """
import sys
from pathlib import Path
from shotgun.library import ModelCard
from shotgun.tracking import Tracker

uri, version, writer, *cards = sys.argv[1:]
tracker = Tracker(uri, version)
for path in map(Path, cards):
    card = ModelCard.read(path)
    copy = card.replace(model_id=f"{card.model_id}-{writer}")
    tracker.log_run(copy, path.with_suffix(".safetensors"))
"""


def test_concurrent_writers_lose_no_run(server, served, monkeypatch):
    """16 processes log the smoke models' runs (card, metrics, weights) at once."""
    uri, password = server
    results, _ = served
    cards = sorted(
        p
        for done in results.rglob("*.done")
        for p in Path(str(done).removesuffix(".done")).glob("*.json")
    )
    cards = [p for p in cards if ModelCard.read(p).weights]
    assert len(cards) >= 4
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    version = "0.0.0-concurrent"
    init_store(uri, version)
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, version, f"w{i:02d}", *map(str, cards)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(16)
    ]
    for w in writers:
        out, err = w.communicate(timeout=900)
        assert w.returncode == 0, err[-3000:]
    expected = {f"{ModelCard.read(p).model_id}-w{i:02d}" for p in cards for i in range(16)}
    logged = [run.data.tags["shotgun.model_id"] for _, run in finished_runs(uri, version)]
    assert len(logged) == len(expected) == 16 * len(cards)
    assert set(logged) == expected
