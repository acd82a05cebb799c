"""Inputs are read as written, by every reader: ``NaN`` is sodium nitride, not a missing value,
and ``None``, ``NA``, ``N/A`` and ``null`` are inputs that are not formulas. A formula table goes
through prepare, featurize, train, the library, predict and transfer's target reader."""

import json

import numpy as np
import pandas as pd
import yaml

from conftest import ROOT, run

NA_LIKE = {"NaN": 1.55, "None": 1.2, "NA": 1.3, "N/A": 1.4, "null": 1.1}


def test_formulas_that_look_missing_survive_every_reader(tmp_path):
    rows = pd.read_csv(ROOT / "tests" / "data" / "tiny_kvrh.csv")
    extra = pd.DataFrame({"formula": list(NA_LIKE), "target": list(NA_LIKE.values())})
    pd.concat([rows, extra]).to_csv(tmp_path / "table.csv", index=False)
    declaration = tmp_path / "verbatim.yaml"
    declaration.write_text(
        yaml.safe_dump(
            {
                "name": "verbatim",
                "file": str(tmp_path / "table.csv"),
                "material_class": "inorganic",
                "input": "formula",
                "description": "bulk moduli and NA-like formulas",
                "citation": "tests",
                "license": "CC-BY-4.0",
                "properties": {"y": {"column": "target", "unit": "log10(GPa)"}},
            }
        )
    )

    proc = run(
        ["shotgun", "prepare", "--dataset", str(declaration), "--out", str(tmp_path / "data")]
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(tmp_path / "data" / "y.parquet")
    quarantine = pd.read_csv(tmp_path / "data" / "quarantine.csv", keep_default_na=False)
    # NaN (Na N) is a formula; the others are not (no element is spelled A, l, o-n-e or /).
    assert "NaN" in set(table["input"])
    assert set(quarantine["input"]) == {"None", "NA", "N/A", "null"}
    assert set(quarantine["reason"]) == {"invalid_formula"}

    features = tmp_path / "composition.parquet"
    proc = run(
        [
            "shotgun",
            "featurize",
            "--data",
            str(tmp_path / "data" / "inputs.csv"),
            "--input",
            "input",
            "--kind",
            "inorganic",
            "--descriptor",
            "composition",
            "--out",
            str(features),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    got = pd.read_parquet(features, columns=["input", "ok"]).set_index("input")["ok"]
    assert bool(got["NaN"]) and got.all()

    shard = tmp_path / "models" / "0-0"
    proc = run(
        [
            "shotgun",
            "train",
            "--dataset",
            str(declaration),
            "--property",
            "y",
            "--prepared",
            str(tmp_path / "data" / "y.parquet"),
            "--features",
            str(features),
            "--models",
            "0-0",
            "--out",
            str(shard),
            "--no-tracking",
            "--override",
            "trainer.max_epochs=2",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    card = json.loads(next(shard.glob("*.json")).read_text())
    assert card["n_unfeaturized"] == 0
    assert card["n_train"] + card["n_val"] + card["n_test"] == len(table)

    proc = run(
        [
            "shotgun",
            "library",
            "build",
            str(shard),
            "--out",
            str(tmp_path / "lib"),
            "--library-version",
            "1",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    pd.DataFrame({"formula": ["NaN", "NA", "NaCl"]}).to_csv(tmp_path / "new.csv", index=False)
    proc = run(
        [
            "shotgun",
            "predict",
            "--library",
            str(tmp_path / "lib"),
            "--model",
            card["model_id"],
            "--data",
            str(tmp_path / "new.csv"),
            "--input",
            "formula",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(__import__("io").StringIO(proc.stdout), keep_default_na=False)
    assert pred["formula"].tolist() == ["NaN", "NA", "NaCl"]
    column = pred.columns[1]
    assert np.isfinite(float(pred[column][0])) and pred[column][1] == ""

    from shotgun.transfer.target import load_target

    inputs, y = load_target(tmp_path / "table.csv", "formula", "target", "inorganic")
    assert list(inputs[-5:]) == list(NA_LIKE) and np.allclose(y[-5:], list(NA_LIKE.values()))
