"""The MLflow store as its users meet it: refusals of a wrong store, a results folder that moves,
readable and timed runs with per-epoch losses, the experiment's kind, tracked transfer runs and
library models loaded by MLflow's pyfunc.

Everything is real: `shotgun init-tracking`, `shotgun train`, `shotgun library from-mlflow`,
`shotgun library log-pyfunc` and the smoke workflow's transfer as processes on an embedded SQLite
store in a temporary folder, read back with MlflowClient.
"""

import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, run
from shotgun.library import Library, ModelCard, from_mlflow
from shotgun.library.packs import PREDICTION_TOLERANCE
from shotgun.nn import History, fit_single
from shotgun.nn.mlp import MLP
from shotgun.tracking import (
    EXPERIMENT_KIND,
    MODEL_TAG,
    TRANSFER_EXPERIMENT,
    Tracker,
    TrackingError,
    experiment_name,
    init_store,
    open_store,
    resolve_uri,
)

DATASET = ROOT / "config" / "datasets" / "matbench_log10_kvrh.yaml"
PROPERTY = "log10_kvrh"
VERSION = "t"
OVERRIDES = ["trainer.max_epochs=5", "trainer.patience=2", "trainer.ensemble_size=2"]


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


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _train(cell, results, shard, models):
    """`shotgun train` of models ``models`` (e.g. 0-1) into ``shard``, logged to ``results``."""
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
        models,
        "--out",
        str(shard),
        "--results",
        str(results),
        "--library-version",
        VERSION,
    ]
    return _ok(run(args + [a for o in OVERRIDES for a in ("--override", o)]))


def _from_mlflow(results, out, version=VERSION):
    return run(
        [
            "shotgun",
            "library",
            "from-mlflow",
            "--results",
            str(results),
            "--library-version",
            version,
            "--out",
            str(out),
        ]
    )


def _cards(shard):
    return [ModelCard.read(p) for p in sorted(Path(shard).glob("*.json"))]


def _client(results):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resolve_uri(None, results))


def _history(client, rid, name):
    return sorted(client.get_metric_history(rid, name), key=lambda m: m.step)


def _locations(results):
    """Artifact locations recorded in a store: its experiments' and its runs'."""
    with sqlite3.connect(results / "mlflow.db") as con:
        return [r for (r,) in con.execute("SELECT artifact_location FROM experiments")] + [
            r for (r,) in con.execute("SELECT artifact_uri FROM runs")
        ]


@pytest.fixture(scope="module")
def trained(cell, tmp_path_factory):
    """A results folder whose store holds two models of one shard, and the wall-clock times
    (ms) before and after their `shotgun train`."""
    results = tmp_path_factory.mktemp("first") / "results"
    _ok(run(["shotgun", "init-tracking", "--results", str(results), "--library-version", VERSION]))
    before = time.time() * 1000
    _train(cell, results, results / "models" / "0-1", "0-1")
    return {"results": results, "before": before, "after": time.time() * 1000}


def _error_line(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shotgun: error: "), proc.stderr
    return lines[0]


def test_the_store_looks_up_a_model_id_through_an_index(trained):
    """`shotgun init-tracking` indexes the tags by value: finding a model's run (done before
    logging each model) does not scan every run's tags as the store grows."""
    db = trained["results"] / "mlflow.db"
    with sqlite3.connect(db) as con:
        (mid,) = con.execute("SELECT value FROM tags WHERE key = ?", (MODEL_TAG,)).fetchone()
        plan = con.execute(
            "EXPLAIN QUERY PLAN SELECT run_uuid FROM tags WHERE key = ? AND value = ?",
            (MODEL_TAG, mid),
        ).fetchall()
    assert "USING INDEX shotgun_tags_key_value (key=? AND value=?)" in str(plan)
    tracker = Tracker(resolve_uri(None, trained["results"]), VERSION)
    assert tracker.find(mid) is not None and tracker.find("0" * 16) is None


def test_a_missing_store_is_refused_not_created(tmp_path):
    wrong = tmp_path / "no-results"
    line = _error_line(_from_mlflow(wrong, tmp_path / "lib"))
    assert "mlflow.db" in line and "no MLflow store" in line
    assert not wrong.exists() and not (tmp_path / "lib").exists()
    with pytest.raises(TrackingError, match="no MLflow store"):
        from_mlflow(resolve_uri(None, wrong), VERSION, tmp_path / "lib")
    assert not wrong.exists()


def test_an_unknown_version_and_a_version_without_runs_are_refused(trained, tmp_path):
    line = _error_line(_from_mlflow(trained["results"], tmp_path / "lib", "0.9"))
    assert "no library version '0.9'" in line and f"versions in this store: {VERSION}" in line
    results = tmp_path / "results"
    shutil.copytree(trained["results"], results)
    _ok(run(["shotgun", "init-tracking", "--results", str(results), "--library-version", "new"]))
    line = _error_line(_from_mlflow(results, tmp_path / "lib", "new"))
    assert "'new' has no finished run" in line
    assert not (tmp_path / "lib").exists()


def test_lost_artifacts_give_one_line(trained, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(trained["results"], results)
    shutil.rmtree(results / "mlartifacts")
    line = _error_line(_from_mlflow(results, tmp_path / "lib"))
    assert "cannot be read" in line and str(results / "mlartifacts") in line
    assert not (tmp_path / "lib").exists()


def test_a_moved_results_folder_trains_more_and_rebuilds(trained, cell, tmp_path):
    """Copy a results folder, move the copy, train two more models into it: every location the
    store records, and every artifact written, is under the new place; the original store is
    untouched; the library rebuilt from the moved store has all four models."""
    original = trained["results"]
    before = sorted(_locations(original))
    shutil.copytree(original, tmp_path / "a" / "results")
    (tmp_path / "a").rename(tmp_path / "b")
    results = tmp_path / "b" / "results"
    _train(cell, results, results / "models" / "2-3", "2-3")

    new_root = (results / "mlartifacts").resolve().as_uri()
    assert all(loc.startswith(new_root) for loc in _locations(results) if loc.startswith("file:"))
    assert not (tmp_path / "a").exists()
    assert sorted(_locations(original)) == before
    cards = _cards(results / "models" / "0-1") + _cards(results / "models" / "2-3")
    assert len(cards) == 4 and all(c.failure is None for c in cards)
    for c in cards:  # each run's artifacts are in the moved folder
        assert (results / "mlartifacts" / c.mlflow_run_id / "artifacts" / "card.json").is_file()
    assert len(list((original / "mlartifacts").iterdir())) == 2

    _ok(_from_mlflow(results, tmp_path / "lib"))
    lib = Library.open(tmp_path / "lib")
    assert lib.verify() == []
    assert sorted(lib.index["model_id"]) == sorted(c.model_id for c in cards)
    for c in cards:  # the rebuilt library holds each model's trained weights, as it stores them
        trained = load_file(str(next((results / "models").glob(f"*/{c.model_id}.safetensors"))))
        stored = lib.weights(c.model_id)
        assert set(stored) == set(trained)
        for name, t in stored.items():
            assert torch.equal(t, trained[name].to(t.dtype)), name


def test_runs_are_named_timed_and_hold_each_epoch(trained):
    """Run name dataset/property/descriptor/index; the run spans the model's training (inside the
    process's wall-clock window, ending after it began, with every epoch's metrics in between);
    one train_loss and one val_loss per epoch, whose best equals the card's best_val_mse."""
    results = trained["results"]
    client = _client(results)
    cards = _cards(results / "models" / "0-1")
    assert len(cards) == 2
    for card in cards:
        run = client.get_run(card.mlflow_run_id)
        assert run.info.run_name == f"matbench_log10_kvrh/{PROPERTY}/composition/{card.index}"
        start, end = run.info.start_time, run.info.end_time
        assert trained["before"] <= start < end <= trained["after"]
        val, train = (_history(client, card.mlflow_run_id, n) for n in ("val_loss", "train_loss"))
        epochs = card.metrics.epochs
        assert [m.step for m in val] == [m.step for m in train] == list(range(epochs))
        assert all(start <= m.timestamp <= end for m in val + train)
        assert val[-1].timestamp == end
        losses = [m.value for m in val]
        assert min(losses) == losses[card.metrics.best_epoch] == card.metrics.best_val_mse
        assert all(np.isfinite(m.value) and m.value > 0 for m in train)


def test_the_experiment_opens_as_classic_ml(trained):
    exp = _client(trained["results"]).get_experiment_by_name(experiment_name(VERSION))
    assert exp.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1] == "custom_model_development"


def test_the_logged_history_is_the_training_history(trained, tmp_path):
    """A model trained alone: its first epoch's training loss is the MSE of the network at its
    initial weights (one batch, no dropout, batch norm on the batch), computed here without the
    trainer; the history read back from MLflow equals the one training returned, value for value,
    over more epochs than one log_batch call takes."""
    torch.manual_seed(0)
    X, y = torch.randn(64, 6), torch.randn(64)
    arch = {
        "n_in": 6,
        "hidden": [5, 4, 3],
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": True,
    }
    cfg = {
        "optim": {"lr": 0.01, "weight_decay": 0.0},
        "trainer": {"accelerator": "cpu", "max_epochs": 3, "patience": 3, "batch_size": 64},
    }
    fit = fit_single(arch, 7, cfg, X[:48], y[:48], X[48:], y[48:], 1, 2, (5, 6))
    torch.manual_seed(7)
    net = MLP(arch).train()
    with torch.no_grad():
        first = float(((net(X[:48]) - y[:48]) ** 2).mean())
    assert fit.history.train_loss[0] == pytest.approx(first, rel=1e-5)
    assert len(fit.history.val_loss) == fit.stats["epochs"] == 3

    # Log it, and a long history (1,300 epochs: 2,600 step metrics, three log_batch calls).
    card = _cards(trained["results"] / "models" / "0-1")[0]
    uri = resolve_uri(None, tmp_path)
    init_store(uri, VERSION, tmp_path / "mlartifacts")
    tracker = Tracker(uri, VERSION)
    rng = np.random.default_rng(0)
    long = History(
        1000,
        rng.random(1300).tolist(),
        rng.random(1300).tolist(),
        list(range(2000, 3300)),
    )
    client = _client(tmp_path)
    for i, history in enumerate([fit.history, long]):
        rid = tracker.log_run(card.replace(model_id=f"{card.model_id[:15]}{i}"), None, history)
        for name in ("train_loss", "val_loss"):
            got = _history(client, rid, name)
            assert [m.value for m in got] == getattr(history, name)
            assert [m.timestamp for m in got] == history.epoch_end_ms
        info = client.get_run(rid).info
        assert (info.start_time, info.end_time) == (history.start_ms, history.epoch_end_ms[-1])
        logged = json.loads(
            Path(client.download_artifacts(rid, "card.json", str(tmp_path))).read_text()
        )
        assert logged["mlflow_run_id"] == rid


def _at(doc, path):
    """The value of summary.json at a dotted path."""
    for key in path.split("."):
        doc = doc[key]
    return doc


def test_the_workflow_tracks_its_transfer(smoke):
    """The smoke workflow's transfer is one finished run of experiment shotgun-transfer: its
    options as params, every metric equal to summary.json's value at the metric's path, the
    winner and the used library models as tags (each linked to its own training run), and the
    run's files as artifacts, summary.json byte for byte."""
    client = _client(smoke)
    exp = client.get_experiment_by_name(TRANSFER_EXPERIMENT)
    assert exp.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    out = smoke / "transfer" / "esol_demo"
    summary = json.loads((out / "summary.json").read_text())
    # the latest (a results folder brought up to date may hold earlier runs of the target)
    tracked = next(r for r in runs if r.data.tags["shotgun.target"].endswith(":logSolubility"))
    assert tracked.info.status == "FINISHED" and tracked.info.start_time < tracked.info.end_time
    assert tracked.info.run_name == f"{Path(summary['target']['data']).stem}/logSolubility"
    params = tracked.data.params
    assert (params["folds"], params["seed"], params["kind"]) == ("3", "0", "molecule")
    assert params["learners"] == ",".join(summary["learners"])

    metrics = tracked.data.metrics
    for key in ("best.cv_mae", "baseline.cv_mae", "saved.cv_mae", "n_samples"):
        assert key in metrics
    if summary["nested"]:
        for key in ("nested.cv_mae", "nested.baseline.cv_mae", "nested.selected.cv_mae"):
            assert key in metrics
    if summary.get("control"):
        assert "control.cv_mae" in metrics
    assert all(metrics[k] == pytest.approx(_at(summary, k), rel=1e-12) for k in metrics)

    tags = tracked.data.tags
    assert tags["shotgun.winner"] == summary["winner"]
    assert tags["shotgun.saved.name"] == summary["saved"]["name"]
    assert tags["shotgun.library_version"] == "0.0.0-smoke"
    ids = tags["shotgun.model_ids"].split(",")
    lib = Library.open(smoke / "library")
    winners = {m.split(" ")[0] for m in summary["saved"]["members"]}
    assert summary["best"]["model_id"] in ids
    assert winners & set(lib.index["model_id"]) <= set(ids)
    runs_of = dict(pair.split("=") for pair in tags["shotgun.model_runs"].split(","))
    assert set(runs_of) == set(ids)
    for mid, rid in runs_of.items():
        assert rid == lib.card(mid).mlflow_run_id
        model_run = client.get_run(rid)
        assert model_run.data.tags[MODEL_TAG] == mid
        link = f"[{mid}](#/experiments/{model_run.info.experiment_id}/runs/{rid})"
        assert link in tags["mlflow.note.content"]  # the run's description links it

    names = {a.path for a in client.list_artifacts(tracked.info.run_id)}
    wanted = {"summary.json", "report.html", "ranking.csv", "parity.png", "learning_curve.png"}
    assert wanted | {"library_models.json"} <= names
    got = client.download_artifacts(tracked.info.run_id, "summary.json", str(smoke.parent / "dl"))
    assert Path(got).read_bytes() == (out / "summary.json").read_bytes()


def _transfer_args(smoke, out):
    """A small `shotgun transfer` of the demo target on two smoke models."""
    return [
        "transfer",
        "--library",
        str(smoke / "library"),
        "--target",
        str(ROOT / "config" / "targets" / "esol_demo.yaml"),
        "--out",
        str(out),
        "--folds",
        "3",
        "--max-models",
        "2",
        "--learners",
        "ridge",
        "--baselines",
        "ridge",
        "--no-nested",
        "--fine-tune",
        "0",
    ]


def test_a_transfer_without_a_store_imports_no_mlflow(smoke, tmp_path):
    """Without --tracking-uri or --results, shotgun transfer logs nothing, creates no store and
    never imports MLflow."""
    code = (
        "import sys; from shotgun.cli import main; status = main(sys.argv[1:]); "
        "print('mlflow imported:', 'mlflow' in sys.modules); sys.exit(status)"
    )
    proc = _ok(run([sys.executable, "-c", code, *_transfer_args(smoke, tmp_path / "out")]))
    assert "mlflow imported: False" in proc.stdout
    assert (tmp_path / "out" / "summary.json").is_file()
    assert not list(tmp_path.rglob("mlflow.db")) and not (ROOT / "mlruns").exists()


def test_a_transfer_logs_to_the_store_it_names(smoke, tmp_path):
    """--tracking-uri of a SQLite store that does not exist yet: the store is created with the
    run's artifacts beside it, and the run is the one the command printed."""
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    args = _transfer_args(smoke, tmp_path / "out")
    proc = _ok(run(["shotgun", *args, "--tracking-uri", f"sqlite:///{db}"]))
    rid = proc.stdout.strip().splitlines()[-1].split()[2]
    client = _client(db.parent)
    tracked = client.get_run(rid)
    assert tracked.info.status == "FINISHED"
    assert client.get_experiment(tracked.info.experiment_id).name == TRANSFER_EXPERIMENT
    assert (db.parent / "mlartifacts" / rid / "artifacts" / "summary.json").is_file()
    assert tracked.data.params["max_models"] == "2"


def test_a_failure_to_log_keeps_the_transfer(smoke, tmp_path, monkeypatch):
    """A tracking server that cannot be reached: the transfer's files are all written, the
    command says in one warning line that the run was not logged, and exits 0 (a workflow job
    keeps its outputs)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    out = tmp_path / "out"
    args = ["shotgun", *_transfer_args(smoke, out), "--tracking-uri", "http://127.0.0.1:9"]
    proc = _ok(run(args))
    warned = [line for line in proc.stderr.splitlines() if line.startswith("shotgun: warning:")]
    assert len(warned) == 1, proc.stderr
    assert f"{out}: written, but not logged to http://127.0.0.1:9" in warned[0]
    for name in ("summary.json", "report.html", "ranking.csv", "parity.png", "model/model.json"):
        assert (out / name).is_file(), name


def _pickles(folder):
    """Files under ``folder`` that are pickles: by name, or by a pickle protocol 2-5 header."""
    headers = {bytes([0x80, protocol]) for protocol in range(2, 6)}
    return [
        p
        for p in Path(folder).rglob("*")
        if p.is_file() and (p.suffix in {".pkl", ".pickle"} or p.read_bytes()[:2] in headers)
    ]


def test_a_library_model_loads_as_mlflow_pyfunc(trained, tmp_path):
    """`shotgun library log-pyfunc` logs a library model into its own run, leaving the run's
    status and times as training left them; mlflow.pyfunc.load_model("runs:/<run>/model")
    predicts what Library.load(model_id).predict does, from a list and from a DataFrame; the
    logged model holds no pickle and loads from its results folder moved elsewhere; a second
    log-pyfunc adds no second model; a store without the model's run is one error line."""
    import mlflow

    results = tmp_path / "results"
    shutil.copytree(trained["results"], results)
    _ok(_from_mlflow(results, tmp_path / "lib"))
    lib = Library.open(tmp_path / "lib")
    mid = lib.index["model_id"][0]
    rid = lib.card(mid).mlflow_run_id
    client = _client(results)
    before = client.get_run(rid).info
    args = ["shotgun", "library", "log-pyfunc", str(tmp_path / "lib"), mid]
    proc = _ok(run([*args, "--results", str(results)]))
    assert proc.stdout.strip() == f"{mid}: runs:/{rid}/model"
    after = client.get_run(rid).info
    assert (after.status, after.start_time, after.end_time) == ("FINISHED",) + (
        before.start_time,
        before.end_time,
    )

    # Moved afterwards, the folder's store is rebound: the model loads from the new place.
    moved = tmp_path / "moved" / "results"
    moved.parent.mkdir()
    results.rename(moved)
    mlflow.set_tracking_uri(open_store(None, moved))
    model = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    inputs = ["NaCl", "Fe2O3", "SiO2", "MgO", "Al2O3"]
    expected = lib.load(mid).predict(inputs)
    assert np.isfinite(expected).all()
    # The run holds the trained float32 weights, the library float16 ones.
    atol = PREDICTION_TOLERANCE * lib.card(mid).target_scaler.std
    np.testing.assert_allclose(np.asarray(model.predict(inputs)), expected, atol=atol)
    frame = pd.DataFrame({"input": inputs})
    np.testing.assert_allclose(np.asarray(model.predict(frame)), expected, atol=atol)

    local = mlflow.artifacts.download_artifacts(f"runs:/{rid}/model", dst_path=str(tmp_path / "m"))
    files = {p.relative_to(local).as_posix() for p in Path(local).rglob("*") if p.is_file()}
    assert {"MLmodel", "mlflow_model.py"} <= files
    assert any(f.endswith(f"{mid}.safetensors") for f in files)
    assert _pickles(local) == []

    _ok(run([*args, "--results", str(moved)]))
    other = tmp_path / "other"
    _ok(run(["shotgun", "init-tracking", "--results", str(other), "--library-version", VERSION]))
    line = _error_line(run([*args, "--results", str(other)]))
    assert f"no run {rid} (model {mid})" in line
    client = _client(moved)
    exp = client.get_run(rid).info.experiment_id
    assert len(client.search_logged_models([exp], filter_string=f"source_run_id = '{rid}'")) == 1
