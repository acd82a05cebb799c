"""The smoke workflow end to end: Snakemake, MLflow store, library, transfer."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, run, tensor_spans
from shotgun.checksums import sha256
from shotgun.library import Library
from shotgun.library.packs import PREDICTION_TOLERANCE
from shotgun.tracking import count_runs, resolve_uri

SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
# The smoke config's transfer target: its declaration with the config's overrides.
DEMO = {
    **yaml.safe_load((ROOT / "config" / "targets" / "esol_demo.yaml").read_text()),
    **SMOKE["targets"][0],
}


def test_library_matches_the_grid_and_the_tracking_store(smoke):
    lib = Library.open(smoke / "library")
    expected = sum(s["n_models"] for s in SMOKE["sources"].values())  # one property each
    assert len(lib.index) == expected
    assert set(lib.index["material_class"]) == {"molecule", "polymer", "inorganic"}
    packs = sorted((smoke / "library" / "weights").rglob("*.safetensors"))
    assert len(packs) == sum(
        -(-s["n_models"] // SMOKE["shard_size"]) for s in SMOKE["sources"].values()
    )
    assert count_runs(resolve_uri(None, smoke), SMOKE["library_version"]) == expected
    assert lib.index["model_id"].is_unique
    assert lib.index["mlflow_run_id"].str.len().gt(0).all()
    assert lib.verify() == []
    for rel, digest in lib.manifest["files"].items():
        assert sha256(smoke / "library" / rel) == digest


def test_loaded_model_reproduces_recorded_test_predictions(smoke):
    """Within the float16 weights' tolerance, relative to the target's spread."""
    lib = Library.open(smoke / "library")
    for mid in lib.index["model_id"]:
        model = lib.load(mid)
        ref = model.card.reference
        np.testing.assert_allclose(
            model.predict(ref.inputs),
            ref.predictions,
            rtol=0,
            atol=PREDICTION_TOLERANCE * model.card.target_scaler.std,
        )


def test_card_metrics_are_in_original_units(smoke):
    """Recompute one model's test MAE from the prepared data and the recorded split."""
    from shotgun.nn import stable_seed
    from shotgun.training import split_indices

    lib = Library.open(smoke / "library")
    row = lib.query(kind="inorganic").iloc[0]
    model = lib.load(row["model_id"])
    table = pd.read_parquet(smoke / "data" / row["dataset"] / f"{row['property']}.parquet")
    cfg = model.card.train_config
    _, _, test = split_indices(
        len(table),
        cfg["trainer"],
        stable_seed(cfg["seed"], row["dataset"], row["property"], "split"),
    )
    y = table["target"].to_numpy()[test]
    pred = model.predict(table["input"].to_numpy()[test].tolist())
    tolerance = PREDICTION_TOLERANCE * model.card.target_scaler.std  # float16 weights
    assert abs(np.abs(pred - y).mean() - row["test_mae"]) <= tolerance


def test_tampered_weights_are_refused(smoke, tmp_path):
    import shutil

    from shotgun.library import LibraryError

    copy = tmp_path / "lib"
    shutil.copytree(smoke / "library", copy)
    lib = Library.open(copy)
    mid = lib.index["model_id"].iloc[0]
    path = copy / lib.card(mid).weights
    data = bytearray(path.read_bytes())
    data[tensor_spans(path)[f"{mid}/net.output.bias"][0]] ^= 0xFF
    path.write_bytes(bytes(data))
    try:
        lib.load(mid)
    except LibraryError as err:
        assert "checksum" in str(err)
    else:
        raise AssertionError("tampered weights were loaded")
    proc = run(["shotgun", "library", "verify", str(copy)])
    assert proc.returncode == 1 and "checksum" in proc.stdout


def test_transfer_demo_writes_the_contract_files(smoke):
    out = smoke / "transfer" / "esol_demo"
    s = json.loads((out / "summary.json").read_text())
    demo = pd.read_csv(ROOT / DEMO["data"])
    assert s["n_samples"] + s["n_dropped"] == len(demo)
    assert s["folds"] == DEMO["folds"]
    assert s["n_candidates"] == len(Library.open(smoke / "library").applicable("molecule"))
    for key in (
        "model_id",
        "dataset",
        "property",
        "descriptor",
        "learner",
        "depth",
        "cv_mae",
        "cv_rmse",
        "cv_r2",
    ):
        assert key in s["best"]
    ranking = pd.read_csv(out / "ranking.csv")
    assert s["best"]["cv_mae"] == pytest.approx(ranking["cv_mae"].min(), rel=1e-12)
    assert set(ranking["model_id"]) <= set(Library.open(smoke / "library").index["model_id"])
    assert (out / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_library_cli(smoke):
    lib = smoke / "library"
    proc = run(["shotgun", "library", "list", str(lib), "--kind", "polymer", "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and {r["material_class"] for r in rows} == {"polymer"}
    mid = rows[0]["model_id"]
    card = json.loads(run(["shotgun", "library", "show", str(lib), mid, "--format", "json"]).stdout)
    assert card["model_id"] == mid and card["architecture"]["hidden"]
    text = run(["shotgun", "library", "show", str(lib), mid]).stdout
    assert card["architecture_name"] in text and f"{card['metrics']['test_mae']:.4g}" in text
    assert card["train_config"]["trainer"]["precision"] == 32 and "precision 32" in text
    proc = run(["shotgun", "library", "show", str(lib), "nope"])
    assert proc.returncode == 2 and "no model" in proc.stderr
