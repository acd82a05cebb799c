"""The transferability map written by the smoke workflow (config/smoke.yaml: transfer_map)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from shotgun.library import Library

SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
MAP = SMOKE["transfer_map"]


@pytest.fixture(scope="module")
def tmap(smoke):
    return pd.read_csv(smoke / "transfer_map" / "transfer_map.csv")


def test_rows_are_the_applicable_pairs_without_the_diagonal(smoke, tmap):
    lib = Library.open(smoke / "library")
    props = lib.index[["dataset", "property", "material_class"]].drop_duplicates()
    expected = set()
    for t in props.itertuples(index=False):
        usable = lib.applicable(t.material_class)
        for s in usable[["dataset", "property"]].drop_duplicates().itertuples(index=False):
            if (s.dataset, s.property) != (t.dataset, t.property):
                expected.add((s.dataset, s.property, t.dataset, t.property))
    got = set(
        zip(
            tmap["source_dataset"],
            tmap["source_property"],
            tmap["target_dataset"],
            tmap["target_property"],
        )
    )
    assert got == expected and len(tmap) == len(expected)
    # The smoke library: molecule <-> polymer on ECFP, both from inorganic through composition;
    # no fingerprint model takes formulas, so the inorganic property is no target.
    assert len(expected) == 4
    classes = dict(zip(zip(props["dataset"], props["property"]), props["material_class"]))
    for r in tmap.itertuples(index=False):
        assert r.source_class == classes[(r.source_dataset, r.source_property)]
        assert r.target_class == classes[(r.target_dataset, r.target_property)]
        assert r.bridge == (r.source_class != r.target_class)
    assert tmap["bridge"].all()  # every smoke source is of another class than its target
    assert (tmap["n"] == MAP["n"]).all()
    np.testing.assert_allclose(tmap["gain"], 1 - tmap["transfer_cv_mae"] / tmap["baseline_cv_mae"])


def test_gain_recomputed_for_one_pair(smoke, tmap):
    """Source radonpy_pi1070/density on target qm9/gap, with scikit-learn alone."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from shotgun.descriptors import for_kind

    lib = Library.open(smoke / "library")
    folds, seed = MAP["folds"], MAP.get("seed", SMOKE["seed"])
    table = pd.read_parquet(smoke / "data" / "qm9" / "gap.parquet")
    table = table.sample(n=MAP["n"], random_state=seed)
    inputs, y = table["input"].tolist(), table["target"].to_numpy()
    splits = list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(y))

    def oof_mae(X, make):
        pred = np.empty_like(y)
        for train, test in splits:
            pred[test] = make().fit(X[train], y[train]).predict(X[test])
        return np.abs(pred - y).mean()

    def ridge():  # standardised features clipped to +-10 sigma, then ridge
        clip = FunctionTransformer(np.clip, kw_args={"a_min": -10, "a_max": 10})
        return make_pipeline(StandardScaler(), clip, RidgeCV(alphas=np.logspace(-3, 4, 15)))

    def forest():
        return RandomForestRegressor(n_estimators=100, max_features=0.33, random_state=seed)

    cands = lib.applicable("molecule")
    cands = cands[~((cands["dataset"] == "qm9") & (cands["property"] == "gap"))]
    transfer = []
    for mid in cands.loc[cands["property"] == "density", "model_id"]:
        model = lib.load(mid)
        for depth in range(1, min(2, model.n_hidden) + 1):
            F = model.features(inputs, depth, kind="molecule").astype(np.float64)
            assert np.isfinite(F).all()
            transfer.append(oof_mae(F, ridge))
    baselines = []
    specs = {json.dumps(lib.card(m).descriptor, sort_keys=True) for m in cands["model_id"]}
    for spec in map(json.loads, specs):
        X, ok = for_kind(spec, "molecule").featurize(inputs)
        assert ok.all()
        X = X.astype(np.float64)
        baselines += [oof_mae(X, ridge), oof_mae(X, forest)]

    row = tmap[(tmap["source_property"] == "density") & (tmap["target_property"] == "gap")]
    assert len(row) == 1
    row = row.iloc[0]
    assert row["transfer_cv_mae"] == pytest.approx(min(transfer), rel=1e-6)
    assert row["baseline_cv_mae"] == pytest.approx(min(baselines), rel=1e-6)
    assert row["gain"] == pytest.approx(1 - min(transfer) / min(baselines), rel=1e-5, abs=1e-9)


def test_heatmap_written(smoke):
    png = smoke / "transfer_map" / "transfer_map.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
