"""`shotgun transfer` and `shotgun predict` on small targets against the smoke library."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, run
from shotgun.library import Library


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """40 shear moduli (a property the smoke library was not trained on) and one bad formula."""
    df = pd.read_csv(ROOT / "data" / "inorganic" / "matbench_log10_gvrh.csv").head(40)
    df.loc[7, "formula"] = "Xx2O3"
    path = tmp_path_factory.mktemp("target") / "gvrh.csv"
    df.to_csv(path, index=False)
    return path


def transfer(smoke, data, out, *extra):
    return run(["shotgun", "transfer", "--library", str(smoke / "library"), "--data", str(data),
                "--input", "formula", "--target", "target", "--kind", "inorganic",
                "--out", str(out), "--folds", "4", "--seed", "3", *extra])


def test_transfer_contract_and_baseline_on_the_same_folds(smoke, target, tmp_path):
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shotgun.descriptors import get_descriptor

    proc = transfer(smoke, target, tmp_path)
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert (s["n_samples"], s["n_dropped"], s["folds"], s["seed"]) == (39, 1, 4, 3)
    lib = Library.open(smoke / "library")
    assert s["n_candidates"] == len(lib.applicable("inorganic"))
    ranking = pd.read_csv(tmp_path / "ranking.csv")
    assert len(ranking) == s["n_candidates"] * 2 * 2  # depths 1, 2 x ridge, random forest
    best = ranking.iloc[ranking["cv_mae"].argmin()]
    assert s["best"]["model_id"] == best["model_id"] and s["best"]["depth"] == best["depth"]

    # Independent recomputation of the baseline on the contract's folds.
    df = pd.read_csv(target).drop(index=7)
    X, ok = get_descriptor("composition").featurize(df["formula"].tolist())
    assert ok.all()
    y = df["target"].to_numpy()
    errors = {}
    for name, learner in {
        "ridge": lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15))),
        "random_forest": lambda: RandomForestRegressor(n_estimators=100, max_features=0.33,
                                                       random_state=3),
    }.items():
        pred = np.empty_like(y)
        for tr, te in KFold(n_splits=4, shuffle=True, random_state=3).split(X):
            pred[te] = learner().fit(X[tr], y[tr]).predict(X[te])
        errors[f"{name} on composition"] = np.abs(pred - y).mean()
    name = min(errors, key=errors.get)
    assert s["baseline"]["name"] == name
    assert s["baseline"]["cv_mae"] == pytest.approx(errors[name], rel=1e-9)


@pytest.mark.parametrize("change, message", [
    (["--kind", "ceramic"], "unknown --kind"),
    (["--target", "nope"], "no column 'nope'"),
    (["--folds", "50"], "fewer than --folds 50"),
])
def test_transfer_input_errors(smoke, target, tmp_path, change, message):
    args = {"--kind": "inorganic", "--target": "target", "--folds": "4"}
    args.update(dict(zip(change[::2], change[1::2])))
    proc = run(["shotgun", "transfer", "--library", str(smoke / "library"), "--data", str(target),
                "--input", "formula", "--out", str(tmp_path)] + [x for kv in args.items() for x in kv])
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_transfer_refuses_a_constant_target(smoke, tmp_path):
    path = tmp_path / "const.csv"
    pd.DataFrame({"formula": ["NaCl", "KCl", "MgO", "CaO", "FeO", "ZnS"], "target": 1.0}).to_csv(
        path, index=False)
    proc = transfer(smoke, path, tmp_path / "out", "--folds", "3")
    assert proc.returncode == 2 and "constant" in proc.stderr


def test_predict_cli_in_original_units(smoke, tmp_path):
    lib = Library.open(smoke / "library")
    mid = lib.query(kind="inorganic", top=1)["model_id"].iloc[0]
    ref = lib.card(mid)["reference"]
    data = tmp_path / "in.csv"
    pd.DataFrame({"formula": ref["inputs"] + ["Qq"]}).to_csv(data, index=False)
    out = tmp_path / "pred.csv"
    proc = run(["shotgun", "predict", "--library", str(smoke / "library"), "--model", mid,
                "--data", str(data), "--input", "formula", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(out)
    col = pred.columns[1]
    assert lib.card(mid)["unit"] in col
    np.testing.assert_allclose(pred[col][:-1], ref["predictions"], rtol=1e-5)
    assert np.isnan(pred[col].iloc[-1])
