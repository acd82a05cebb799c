"""Reliability under kill -9: resumed training shards, interrupted library builds, the MLflow
store after kills and re-runs, and bit-for-bit reproducibility of training on CPU.

Everything runs for real: `shotgun train` and `shotgun library build` as processes killed with
SIGKILL, files read back, one embedded SQLite MLflow store that the runs share (one experiment
per run, as concurrent shard jobs share it).
"""

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, ROOT, run
from shotgun.library import Library, ModelCard, build_library
from shotgun.tracking import MODEL_TAG, Tracker, experiment_name, init_store, resolve_uri
from shotgun.training import finished_card

DATASET = ROOT / "config" / "datasets" / "matbench_log10_kvrh.yaml"
PROPERTY = "log10_kvrh"
N_MODELS = 6
# Six models trained two at a time (three chunks), a few epochs each: seconds of training.
OVERRIDES = ["trainer.max_epochs=4", "trainer.patience=2", "trainer.ensemble_size=2"]
VOLATILE = ("mlflow_run_id",)  # card fields that legitimately differ between runs
TIMEOUT = 300


def _env():
    return dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))


def _start(args, log):
    with open(log, "w") as f:
        return subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT)


def _finish(proc, log):
    rc = proc.wait(TIMEOUT)
    assert rc == 0, log.read_text()[-4000:]


def _comparable(card):
    """A card without its run id and its wall-clock time."""
    card = {k: v for k, v in card.items() if k not in VOLATILE}
    card["metrics"] = {k: v for k, v in card["metrics"].items() if k != "seconds"}
    return card


def _cards(shard):
    return {p.stem: json.loads(p.read_text()) for p in sorted(shard.glob("*.json"))}


def _runs(results, version):
    """(run id, status, lifecycle stage, model id) of every run of a library version."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=resolve_uri(None, results))
    exp = client.get_experiment_by_name(experiment_name(version))
    runs = client.search_runs([exp.experiment_id], "", run_view_type=ViewType.ALL, max_results=1000)
    return [
        (r.info.run_id, r.info.status, r.info.lifecycle_stage, r.data.tags.get(MODEL_TAG))
        for r in runs
    ]


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """A 300-row cell (bulk moduli, composition descriptor): prepared table and features."""
    from shotgun.data import load_dataset, prepare
    from shotgun.descriptors import featurize_inputs, write_features

    root = tmp_path_factory.mktemp("cell")
    prepare(load_dataset(DATASET), root / "data", ROOT, max_rows=300, seed=0)
    inputs = pd.read_parquet(root / "data" / f"{PROPERTY}.parquet")["input"].tolist()
    X, ok, spec, names = featurize_inputs(inputs, "composition")
    write_features(root / "features.parquet", inputs, X, ok, spec, names)
    return root


def _train_args(cell, folder):
    """`shotgun train` of one shard into ``folder``, logged to the library version named as
    the folder."""
    args = [
        "shotgun",
        "train",
        "--dataset",
        str(DATASET),
        "--property",
        PROPERTY,
        "--prepared",
        str(cell / "data" / f"{PROPERTY}.parquet"),
        "--features",
        str(cell / "features.parquet"),
        "--models",
        f"0-{N_MODELS - 1}",
        "--out",
        str(folder / "shard"),
        "--results",
        str(folder.parent / "results"),
        "--library-version",
        folder.name,
        "--done",
        str(folder / "shard.done"),
    ]
    return args + [a for o in OVERRIDES for a in ("--override", o)]


def _running(results, version):
    """Ids of the version's runs that are RUNNING, read from the SQLite store as it is."""
    import sqlite3

    try:
        with sqlite3.connect(results / "mlflow.db", timeout=0.05) as con:
            return {
                r
                for (r,) in con.execute(
                    "SELECT r.run_uuid FROM runs r JOIN experiments e USING (experiment_id) "
                    "WHERE e.name = ? AND r.status = 'RUNNING'",
                    (experiment_name(version),),
                )
            }
    except sqlite3.OperationalError:  # locked by a writer
        return set()


def _kill_after_first_model(proc, folder, log):
    """SIGKILL ``proc`` once a model of its shard is finished, aiming at a moment when it logs
    the next model (a run in the store is RUNNING); returns what the kill left."""
    shard, results = folder / "shard", folder.parent / "results"
    deadline = time.monotonic() + TIMEOUT
    while True:
        done = [p.stem for p in shard.glob("*.json") if finished_card(shard, p.stem)]
        if (done and _running(results, folder.name)) or len(done) >= N_MODELS // 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert proc.poll() is None, "shard ended before it could be killed:\n" + log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.002)
    assert proc.wait(TIMEOUT) == -signal.SIGKILL
    done = [p.stem for p in shard.glob("*.json") if finished_card(shard, p.stem)]
    return {
        "finished": done,
        "done_marker": (folder / "shard.done").exists(),
        "mtimes": {
            f"{m}{ext}": (shard / f"{m}{ext}").stat().st_mtime_ns
            for m in done
            for ext in (".json", ".safetensors")
        },
        "runs": _runs(results, folder.name),
    }


@pytest.fixture(scope="module")
def trained(cell, tmp_path_factory):
    """Folders ``a`` and ``b``: two uninterrupted runs of one shard; ``resumed``: the same shard
    killed after its first finished model, then run again to completion."""
    base = tmp_path_factory.mktemp("train")
    results = base / "results"
    folders = {name: base / name for name in ("a", "b", "resumed")}
    for folder in folders.values():
        folder.mkdir()
        init_store(resolve_uri(None, results), folder.name, results / "mlartifacts")
    logs = {name: folder / "train.log" for name, folder in folders.items()}
    procs = {name: _start(_train_args(cell, folders[name]), logs[name]) for name in folders}
    try:
        killed = _kill_after_first_model(procs["resumed"], folders["resumed"], logs["resumed"])
        logs["again"] = folders["resumed"] / "again.log"
        procs["again"] = _start(_train_args(cell, folders["resumed"]), logs["again"])
        for name in ("a", "b", "again"):
            _finish(procs[name], logs[name])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for folder in folders.values():
        build_library([folder / "shard"], folder / "library", folder.name)
    return dict(folders, killed=killed, results=results)


def test_killed_shard_resumes_to_the_uninterrupted_result(trained):
    """Exact equality: one CPU thread, one batch order and dropout noise per cell, and chunks cut
    from the shard's plan (a resumed model trains with the same companions), so a resumed model
    has the same float32 weights, bit for bit, and the same metrics."""
    killed, a, resumed = trained["killed"], trained["a"], trained["resumed"]
    assert 1 <= len(killed["finished"]) < N_MODELS and not killed["done_marker"]
    ids = json.loads((a / "shard.done").read_text())
    assert json.loads((resumed / "shard.done").read_text()) == ids and len(set(ids)) == N_MODELS
    # Models finished before the kill were kept, not trained again.
    shard = resumed / "shard"
    assert {n: (shard / n).stat().st_mtime_ns for n in killed["mtimes"]} == killed["mtimes"]
    ref, got = _cards(a / "shard"), _cards(shard)
    assert list(got) == list(ref) and sorted(ref) == sorted(ids)
    for mid in ids:
        assert _comparable(got[mid]) == _comparable(ref[mid]), mid
        assert (shard / f"{mid}.safetensors").read_bytes() == (
            a / "shard" / f"{mid}.safetensors"
        ).read_bytes(), mid

    lib_ref, lib = Library.open(a / "library"), Library.open(resumed / "library")
    assert lib.verify() == [] and lib_ref.verify() == []
    pd.testing.assert_frame_equal(
        lib.index.drop(columns="mlflow_run_id"),
        lib_ref.index.drop(columns="mlflow_run_id"),
        check_exact=True,
    )
    weights = {k: v for k, v in lib.manifest["files"].items() if k.startswith("weights/")}
    assert weights == {
        k: v for k, v in lib_ref.manifest["files"].items() if k.startswith("weights/")
    }
    assert len(weights) == 1  # the shard's pack


def test_one_finished_run_per_model_after_a_kill(trained):
    """No duplicate or orphan runs: one active run per library model, FINISHED, the one its card
    names, logging the same weights; runs the kill left unfinished are deleted."""
    from mlflow.tracking import MlflowClient

    resumed, results = trained["resumed"], trained["results"]
    lib = Library.open(resumed / "library")
    runs = _runs(results, "resumed")
    active = [r for r in runs if r[2] == "active"]
    assert sorted(m for _, _, _, m in active) == sorted(lib.index["model_id"])
    assert {s for _, s, _, _ in active} == {"FINISHED"}
    assert dict(zip(lib.index["model_id"], lib.index["mlflow_run_id"])) == {
        m: rid for rid, _, _, m in active
    }
    left = {rid for rid, status, _, _ in trained["killed"]["runs"] if status != "FINISHED"}
    assert left <= {rid for rid, _, stage, _ in runs if stage == "deleted"}
    client = MlflowClient(tracking_uri=resolve_uri(None, results))
    for rid, _, _, mid in active:
        dest = resumed / "downloads" / rid
        dest.mkdir(parents=True)
        logged = json.loads(
            Path(client.download_artifacts(rid, "card.json", str(dest))).read_text()
        )
        assert logged["weights_sha256"] == lib.card(mid).weights_sha256, mid
    # The uninterrupted runs have exactly their six finished runs too.
    for name in ("a", "b"):
        assert sorted(s for _, s, _, _ in _runs(results, name)) == ["FINISHED"] * N_MODELS


def test_a_run_left_unfinished_is_replaced_not_duplicated(trained):
    """A kill inside `Tracker.log_run` leaves a RUNNING run (``create_run`` is its first write);
    logging the model again deletes it and leaves one finished run, and logging once more adds
    nothing."""
    from mlflow.tracking import MlflowClient

    results = trained["results"]
    uri = resolve_uri(None, results)
    init_store(uri, "orphan", results / "mlartifacts")
    shard = trained["a"] / "shard"
    mid = json.loads((trained["a"] / "shard.done").read_text())[0]
    card = ModelCard.read(shard / f"{mid}.json")
    tracker = Tracker(uri, "orphan")
    orphan = (
        MlflowClient(tracking_uri=uri)
        .create_run(tracker.experiment_id, tags={MODEL_TAG: mid})
        .info.run_id
    )
    rid = tracker.log_run(card, shard / f"{mid}.safetensors")
    assert tracker.log_run(card, shard / f"{mid}.safetensors") == rid
    runs = {r[0]: r for r in _runs(results, "orphan")}
    assert set(runs) == {orphan, rid}
    assert runs[rid][1:] == ("FINISHED", "active", mid) and runs[orphan][2] == "deleted"


def test_same_config_and_seeds_reproduce_the_library(trained):
    """Two independent runs in different folders: identical cards (but their run ids), weights,
    library index and logged metrics."""
    from mlflow.tracking import MlflowClient

    a, b = trained["a"], trained["b"]
    ca, cb = _cards(a / "shard"), _cards(b / "shard")
    assert list(ca) == list(cb) and len(ca) == N_MODELS
    assert [_comparable(c) for c in ca.values()] == [_comparable(c) for c in cb.values()]
    la, lb = Library.open(a / "library"), Library.open(b / "library")
    pd.testing.assert_frame_equal(
        la.index.drop(columns="mlflow_run_id"),
        lb.index.drop(columns="mlflow_run_id"),
        check_exact=True,
    )
    assert {
        k: v for k, v in la.manifest["files"].items() if k not in ("index.parquet", "cards.jsonl")
    } == {
        k: v for k, v in lb.manifest["files"].items() if k not in ("index.parquet", "cards.jsonl")
    }

    client = MlflowClient(tracking_uri=resolve_uri(None, trained["results"]))

    def logged(lib):
        return {
            m: {k: v for k, v in client.get_run(r).data.metrics.items() if k != "seconds"}
            for m, r in zip(lib.index["model_id"], lib.index["mlflow_run_id"])
        }

    metrics = logged(la)
    assert metrics == logged(lb)
    assert all(m["test_mae"] == ca[mid]["metrics"]["test_mae"] for mid, m in metrics.items())


def _many_models(shard, dest, copies):
    """A shard of ``copies`` x the models of ``shard`` under other ids (weights hard-linked):
    a library large enough that its assembly takes a window worth killing into."""
    dest.mkdir()
    for mid, card in _cards(shard).items():
        for i in range(copies):
            new = f"{i:04x}{mid[4:]}"
            os.link(shard / card["weights"], dest / f"{new}.safetensors")
            (dest / f"{new}.json").write_text(
                json.dumps(dict(card, model_id=new, weights=f"{new}.safetensors"))
            )
    return dest


def _build(shards, out, version, log):
    return _start(
        [
            "shotgun",
            "library",
            "build",
            *map(str, shards),
            "--out",
            str(out),
            "--library-version",
            version,
        ],
        log,
    )


def _scratch(out):
    versions = out.parent / f"{out.name}.versions"
    return sorted(p.name for p in versions.glob(".*")) + sorted(
        p.name for p in out.parent.glob(f".{out.name}.link-*")
    )


def _own_scratch(proc, versions):
    """Whether build ``proc`` has a scratch folder (``.building-...-<pid>``)."""
    return any(p.name.rpartition("-")[2] == str(proc.pid) for p in versions.glob(".building-*"))


def _wait_for_assembly(proc, versions):
    """Wait until build ``proc`` has created its scratch folder (False: it ended first)."""
    while proc.poll() is None:
        if _own_scratch(proc, versions):
            return True
        time.sleep(0.002)
    return False


def test_killed_library_builds_leave_the_previous_library_intact(trained, tmp_path):
    """SIGKILL `shotgun library build` at random moments of its assembly: the library path always
    opens to a complete, verifying build (the previous one, or the new one once switched), the
    previous build stays intact, and a later build succeeds and removes what the kills left."""
    shard = trained["a"] / "shard"
    big = _many_models(shard, tmp_path / "many", 40)
    out, versions = tmp_path / "lib", tmp_path / "lib.versions"
    build_library([shard], out, "1")
    before = Library.open(out)
    old_ids = sorted(before.index["model_id"])

    # One uninterrupted build elsewhere: its assembly time and its content.
    probe, log = tmp_path / "probe", tmp_path / "build.log"
    proc = _build([shard, big], probe, "2", log)
    assert _wait_for_assembly(proc, tmp_path / "probe.versions")
    start = time.monotonic()
    _finish(proc, log)
    window = time.monotonic() - start
    new_ids = sorted(Library.open(probe).index["model_id"])
    assert len(new_ids) == N_MODELS * 41

    # Kill moments stratified over 1.1 x the assembly time: most inside it, some after it.
    rng, outcomes, n = random.Random(0), [], 6
    for i in range(n):
        proc = _build([shard, big], out, "2", log)
        if _wait_for_assembly(proc, versions):
            time.sleep((i + rng.random()) / n * 1.1 * window)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT)
        lib = Library.open(out)
        assert lib.verify() == []
        ids = sorted(lib.index["model_id"])
        assert ids in (old_ids, new_ids)
        left = _own_scratch(proc, versions)
        outcomes.append("mid-build" if left else "switched" if ids == new_ids else "early")
        assert before.root.is_dir() and Library.open(before.root).verify() == []
        assert sorted(Library.open(before.root).index["model_id"]) == old_ids
        if ids == new_ids:  # switched: link the old content again, so that each build copies
            build_library([shard], out, "1")
            assert Library.open(out).root == before.root
    assert "mid-build" in outcomes, outcomes
    for path in (out, before.root):
        proc = run(["shotgun", "library", "verify", str(path)])
        assert proc.returncode == 0 and "all checksums verify" in proc.stdout, proc.stdout

    replaced = Library.open(out).root
    _finish(_build([shard, big], out, "2", log), log)
    lib = Library.open(out)
    assert sorted(lib.index["model_id"]) == new_ids and lib.verify() == []
    assert lib.index.drop(columns="mlflow_run_id").equals(
        Library.open(probe).index.drop(columns="mlflow_run_id")
    )
    assert _scratch(out) == []  # half-written builds of killed processes are gone
    builds = [p for p in versions.iterdir() if not p.name.startswith(".")]
    assert len(builds) <= 2 and replaced.is_dir() and Library.open(replaced).verify() == []
