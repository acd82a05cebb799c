"""`shotgun transfer` and `shotgun predict` on small targets against the smoke library."""

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, formula_transfer, refit_saved, run, scored_kfold, seen_by
from shotgun.library import Library
from shotgun.library.packs import PREDICTION_TOLERANCE
from shotgun.transfer.learners import make_learner, ridge_batch
from shotgun.transfer.plans import build_plan, make_splits


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """40 shear moduli (a property the smoke library was not trained on) and one bad formula."""
    df = pd.read_csv(ROOT / "data" / "inorganic" / "matbench_log10_gvrh.csv").head(40)
    df.loc[7, "formula"] = "Xx2O3"
    path = tmp_path_factory.mktemp("target") / "gvrh.csv"
    df.to_csv(path, index=False)
    return path


transfer = formula_transfer

# The cheapest run: ridge alone on the candidates and from scratch, same folds, no fine-tuning.
QUICK = ["--learners", "ridge", "--baselines", "ridge", "--no-nested", "--fine-tune", "0"]


def demo_transfer(library, out, *options):
    """``shotgun transfer`` of the declared esol_demo target (100 molecules) against
    ``library``, QUICK."""
    return run(
        ["shotgun", "transfer", "--library", str(library), "--target"]
        + ["config/targets/esol_demo.yaml", "--out", str(out), *QUICK, *map(str, options)]
    )


def test_transfer_contract_and_baseline_on_the_same_folds(smoke, target, tmp_path):

    from shotgun.descriptors import get_descriptor

    proc = transfer(
        smoke,
        target,
        tmp_path,
        "--learners",
        "ridge",
        "--baselines",
        "ridge,random_forest",
        "--no-nested",
        "--fine-tune",
        "0",
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert (s["n_samples"], s["n_dropped"], s["folds"], s["seed"]) == (39, 1, 4, 3)
    assert s["nested"] is None and s["split"] == "random"
    lib = Library.open(smoke / "library")
    assert s["n_candidates"] == len(lib.applicable("inorganic"))
    ranking = pd.read_csv(tmp_path / "ranking.csv")
    n_depths = sum(min(2, lib.load(m).n_hidden) for m in lib.applicable("inorganic")["model_id"])
    assert len(ranking) == n_depths and set(ranking["learner"]) == {"ridge"}
    best = ranking.iloc[ranking["cv_mae"].argmin()]
    assert s["best"]["model_id"] == best["model_id"] and s["best"]["depth"] == best["depth"]

    # Independent recomputation of the baseline and of the best candidate on the contract's folds.
    df = pd.read_csv(target).drop(index=7)
    X, ok = get_descriptor("composition").featurize(df["formula"].tolist())
    assert ok.all()
    y = df["target"].to_numpy()
    applicable = lib.applicable("inorganic")["model_id"]
    seen = seen_by(lib, applicable, df["formula"], "inorganic")
    assert seen.sum() == 1  # a compound of the smoke library's bulk moduli: never scored
    folds = scored_kfold(np.arange(len(y)), seen, 4, 3)

    def cv_mae(learner, F):
        pred = np.full_like(y, np.nan)
        for tr, te in folds:
            pred[te] = make_learner(learner, 3).fit(F[tr], y[tr]).predict(F[te])
        return np.abs(pred - y)[~seen].mean()

    errors = {f"{name} on composition": cv_mae(name, X) for name in ("ridge", "random_forest")}
    name = min(errors, key=errors.get)
    assert s["baseline"]["name"] == name
    assert s["baseline"]["cv_mae"] == pytest.approx(errors[name], rel=1e-9)
    F = lib.load(best["model_id"]).features_descriptors(X, int(best["depth"]))
    assert best["cv_mae"] == pytest.approx(cv_mae("ridge", F.astype(np.float64)), rel=1e-6)


def test_nested_estimate_recomputed_by_brute_force(smoke, target, tmp_path):
    """Nested CV: the whole screen re-run inside each outer training fold, scored outside."""

    from shotgun.descriptors import get_descriptor

    proc = transfer(
        smoke,
        target,
        tmp_path,
        "--learners",
        "ridge",
        "--baselines",
        "ridge",
        "--fine-tune",
        "0",
        "--stack",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    nested = s["nested"]
    assert (nested["outer_folds"], nested["inner_folds"]) == (4, 4)

    df = pd.read_csv(target).drop(index=7)
    X, _ = get_descriptor("composition").featurize(df["formula"].tolist())
    y = df["target"].to_numpy()
    lib = Library.open(smoke / "library")
    feats = {}
    for mid in lib.applicable("inorganic")["model_id"]:
        m = lib.load(mid)
        for depth in range(1, min(2, m.n_hidden) + 1):
            feats[(mid, depth)] = m.features_descriptors(X, depth).astype(np.float64)
    errors, chosen = [], []
    seen = seen_by(lib, lib.applicable("inorganic")["model_id"], df["formula"], "inorganic")
    outer = scored_kfold(np.arange(len(y)), seen, 4, 3)
    for o, (tr, te) in enumerate(outer):
        inner = scored_kfold(tr, seen, 4, 3 + 1 + o)

        def inner_mae(F, inner=inner):
            err = [
                np.abs(make_learner("ridge", 3).fit(F[a], y[a]).predict(F[b]) - y[b])
                for a, b in inner
            ]
            return np.concatenate(err).mean()

        key = min(feats, key=lambda k: inner_mae(feats[k]))
        chosen.append(key[0])
        F = feats[key]
        errors.append(make_learner("ridge", 3).fit(F[tr], y[tr]).predict(F[te]) - y[te])
    err = np.concatenate(errors)
    assert nested["chosen"] == chosen
    assert nested["cv_mae"] == pytest.approx(np.abs(err).mean(), rel=1e-6)
    # The same-fold best is optimistic relative to its own nested estimate, or equal.
    assert s["best"]["cv_mae"] <= nested["cv_mae"] + 1e-12
    curve = pd.read_csv(tmp_path / "learning_curve.csv")
    assert set(curve["method"]) == {"transfer", "baseline"}
    assert sorted(set(curve["n"]))[:3] == [5, 10, 20]  # all sizes below the outer training folds
    last = curve[curve["n"] == curve["n"].max()].set_index("method")
    assert last.loc["transfer", "mae"] == pytest.approx(nested["cv_mae"], rel=1e-9)


def test_methods_refit_and_saved_model_predicts(smoke, target, tmp_path):
    proc = transfer(smoke, target, tmp_path, "--fine-tune", "2", "--stack", "3")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    methods = {m["method"]: m for m in s["methods"]}
    assert set(methods) == {"transfer", "baseline", "stack", "properties", "blend", "fine_tune"}
    # The default rule saves the blend, so the nested estimate of the whole procedure is the
    # blend's; each method the cv rule picks from states its cross-validated choosing.
    assert s["select"] == "blend" and s["winner"] == "blend"
    assert s["nested"]["selected"]["chosen"] == ["blend"] * 4
    assert s["nested"]["selected"]["cv_mae"] == s["nested"]["blend"]["cv_mae"]
    for m in ("baseline", "transfer", "stack", "properties", "blend"):
        assert methods[m]["choice_mae"] > 0
    assert "choice_mae" not in methods["fine_tune"]
    blended = {m.split(" ")[0] for m in s["saved"]["members"]}
    assert blended >= set(s["stack"]["model_ids"])  # the stack's members are in the blend
    assert s["saved"]["method"] == s["winner"]
    assert s["saved"]["name"] == methods[s["winner"]]["name"]
    assert len(s["fine_tune"]) == min(2, s["n_candidates"])
    assert s["stack"]["k"] == min(3, s["n_candidates"])
    assert s["nested"] is not None and len(s["nested"]["chosen"]) == 4
    ranking = pd.read_csv(tmp_path / "ranking.csv")
    assert {"bayesian_ridge", "gp"} <= set(ranking["learner"])  # the refined pipelines
    for name in ("report.md", "report.html", "parity.png", "learning_curve.png"):
        assert (tmp_path / name).stat().st_size > 0

    # The saved model = the winner's members refitted on all rows, averaged.
    out = tmp_path / "pred.csv"
    proc = run(
        [
            "shotgun",
            "predict",
            "--model",
            str(tmp_path / "model"),
            "--data",
            str(target),
            "--input",
            "formula",
            "--out",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(out)["target"].to_numpy()
    df = pd.read_csv(target)
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["method"] == s["winner"] and meta["format"] == "shotgun-transfer/2"
    inputs = df["formula"].tolist()
    lib = Library.open(smoke / "library")
    ref = refit_saved(tmp_path / "model", lib, inputs, df["target"].to_numpy(), inputs, 3)
    ok = np.isfinite(ref)
    np.testing.assert_allclose(pred[ok], ref[ok], rtol=1e-6, atol=1e-9)
    assert np.isnan(pred[7]) and ok.sum() == 39

    # In Python: one string is one input; inputs of another kind are refused.
    from shotgun.data import InputKindError
    from shotgun.transfer import TransferModel

    saved = TransferModel(tmp_path / "model")
    np.testing.assert_allclose(saved.predict(df["formula"][0]), pred[:1], rtol=1e-6)
    with pytest.raises(InputKindError, match=r"read as formulas; 3 as SMILES"):
        saved.predict(["CCO", "c1ccccc1", "CC(=O)N"])

    with open(tmp_path / "model" / "train.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    proc = run(
        [
            "shotgun",
            "predict",
            "--model",
            str(tmp_path / "model"),
            "--data",
            str(target),
            "--input",
            "formula",
        ]
    )
    assert proc.returncode == 2 and "checksum mismatch" in proc.stderr


def test_extrapolation_split_trains_low_and_tests_high(smoke, target, tmp_path):
    from shotgun.descriptors import get_descriptor

    proc = transfer(
        smoke,
        target,
        tmp_path,
        "--split",
        "extrapolate",
        "--learners",
        "ridge",
        "--no-nested",
        "--fine-tune",
        "0",
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["split"] == "extrapolate"
    df = pd.read_csv(target).drop(index=7)
    y = df["target"].to_numpy()
    X, _ = get_descriptor("composition").featurize(df["formula"].tolist())
    top = y >= np.sort(y)[-8]  # ceil(0.2 * 39) = 8 highest values
    b = s["best"]
    F = Library.open(smoke / "library").load(b["model_id"]).features_descriptors(X, b["depth"])
    pred = make_learner("ridge", 3).fit(F[~top], y[~top]).predict(F[top])
    # batched ridge (eigendecompositions) vs scikit-learn on float32 features: ~1e-7 apart
    assert b["cv_mae"] == pytest.approx(np.abs(pred - y[top]).mean(), rel=1e-6)


def test_batched_ridge_equals_ridgecv():
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shotgun.transfer.learners import ALPHAS

    rng = np.random.default_rng(1)
    y = rng.normal(size=60)
    Fs = [
        rng.normal(size=(60, h)) + np.outer(y, rng.normal(size=h)) * s
        for h, s in ((5, 1.0), (40, 0.3), (200, 0.1), (300, 0.0))
    ]  # covariance and Gram paths
    Fs[1][:, 3] = 2.5  # a constant feature
    train, test = np.arange(45), np.arange(45, 60)
    got = ridge_batch(Fs, y, train, test)
    for F, p in zip(Fs, got):
        ref = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(F[train], y[train])
        np.testing.assert_allclose(p, ref.predict(F[test]), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(
            p,
            make_learner("ridge", 0).fit(F[train], y[train]).predict(F[test]),
            rtol=1e-8,
            atol=1e-10,
        )


def test_rounding_noise_features_are_not_blown_up():
    """A feature equal on every training row up to rounding must not scale test rows by 1e13."""
    rng = np.random.default_rng(2)
    y = rng.normal(size=40)
    F = np.column_stack([y + rng.normal(size=40) * 0.1, np.full(40, 0.7)])
    F[:30, 1] += rng.normal(size=30) * 1e-14
    F[30:, 1] = 1.7  # differs on the test rows
    train, test = np.arange(30), np.arange(30, 40)
    without = make_learner("ridge", 0).fit(F[train, :1], y[train]).predict(F[test, :1])
    np.testing.assert_allclose(ridge_batch([F], y, train, test)[0], without, atol=1e-6)
    for name in ("ridge", "bayesian_ridge"):
        pred = make_learner(name, 0).fit(F[train], y[train]).predict(F[test])
        assert np.abs(pred).max() < 10


def test_test_rows_far_outside_the_training_rows_are_clipped():
    """A feature that barely varies on the training rows (as the variance of the magnetic
    moments of compounds without a magnetic element: 0 to 1e-6) and is large on the test rows
    (an iron compound: 0.5, a million standard deviations away) is clipped to 10 after
    standardising: no learner's prediction runs away (they did, to 1e3-1e4 times the target's
    range, on real band gaps), and the batched ridge still equals the estimator."""
    rng = np.random.default_rng(3)
    y = rng.normal(size=40)
    F = np.column_stack([y + rng.normal(size=40) * 0.3, rng.choice([0.0, 1e-8, 1e-6], size=40)])
    F[35:, 1] = 0.5
    train, test = np.arange(35), np.arange(35, 40)
    ref = make_learner("ridge", 0).fit(F[train], y[train]).predict(F[test])
    np.testing.assert_allclose(ridge_batch([F], y, train, test)[0], ref, rtol=1e-8, atol=1e-10)
    for name in ("ridge", "bayesian_ridge", "gp", "mlp"):
        pred = make_learner(name, 0).fit(F[train], y[train]).predict(F[test])
        assert np.abs(pred).max() < 2 * np.abs(y).max(), name


def test_splits_and_plan():
    y = np.array([5.0, 1.0, 3.0, 9.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])
    [(train, test)] = make_splits(y, 5, 0, split="extrapolate")
    assert sorted(y[test]) == [8.0, 9.0] and max(y[train]) == 7.0
    assert len(make_splits(y, 5, 0, repeats=3)) == 15
    plan = build_plan(y, 5, 0, curve=(5,))
    names = [t.name for t in plan.tasks]
    assert names[0] == "screen" and sum(n.startswith("nested/") for n in names) == 5
    for task in plan.tasks[1:]:
        test = plan.pairs[task.test_pair][1]
        assert not set(test) & set(task.train)
        for p in task.inner:  # inner folds never see the outer test rows
            assert set(plan.pairs[p][0]) | set(plan.pairs[p][1]) <= set(task.train)
    curve = [t for t in plan.tasks if t.name.startswith("curve/")]
    assert len(curve) == 5 and all(len(t.train) == 5 for t in curve)


def test_rows_that_must_not_be_scored_are_in_every_training_split():
    """Rows a kept source saw (``scored`` False) are fitted on in every pair and tested in none;
    the folds are drawn over the other rows, as K-fold would draw them without those rows."""
    from sklearn.model_selection import KFold

    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    scored = np.ones(40, dtype=bool)
    seen = np.array([1, 5, 6, 20, 33])
    scored[seen] = False
    plan = build_plan(y, 5, 0, curve=(10,), scored=scored)
    others = np.flatnonzero(scored)
    outer = KFold(5, shuffle=True, random_state=0).split(others)
    for (train, test), (a, b) in zip(plan.pairs[:5], outer):  # the screen: outer folds
        np.testing.assert_array_equal(test, others[b])
        np.testing.assert_array_equal(train, np.sort(np.concatenate([others[a], seen])))
    for task in plan.tasks:
        for p in task.inner + [task.test_pair] * (task.test_pair is not None):
            train, test = plan.pairs[p]
            assert scored[test].all() and not set(train) & set(test)
            if task.name.startswith("curve/"):  # a subsample: its own seen rows
                assert set(task.train[~scored[task.train]]) <= set(train)
            else:
                assert set(seen) <= set(train)
    nested = [t for t in plan.tasks if t.name.startswith("nested/")]
    tested = np.concatenate([plan.pairs[t.test_pair][1] for t in nested])
    np.testing.assert_array_equal(np.sort(tested), others)  # nested: each scored row once
    # Every row scored: the plan without the argument.
    full, plain = build_plan(y, 5, 0, scored=np.ones(40, dtype=bool)), build_plan(y, 5, 0)
    for (a, b), (c, d) in zip(full.pairs, plain.pairs, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


@pytest.mark.parametrize(
    "change, message",
    [
        (["--kind", "ceramic"], "argument --kind: invalid choice: 'ceramic'"),
        (["--target", "nope"], "no column 'nope'"),
        (["--target", "nope.yaml"], "--target nope.yaml: no such target declaration"),
        (["--folds", "50"], "fewer than --folds 50"),
        (["--folds", "1"], "folds: 1 is less than the minimum of 2"),
        (["--learners", "ridge,magic"], "learners: unknown ['magic']"),
        (["--max-models", "0"], "max_models: 0 is less than the minimum of 1"),
        (["--kind", "molecule"], "(--kind molecule): "),
    ],
)
def test_transfer_input_errors(smoke, target, tmp_path, change, message):
    args = {"--kind": "inorganic", "--target": "target", "--folds": "4"}
    args.update(dict(zip(change[::2], change[1::2])))
    proc = run(
        [
            "shotgun",
            "transfer",
            "--library",
            str(smoke / "library"),
            "--data",
            str(target),
            "--input",
            "formula",
            "--out",
            str(tmp_path),
        ]
        + [x for kv in args.items() for x in kv]
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_target_declaration_with_flags_runs_as_the_flags_alone(smoke, target, tmp_path):
    """`--target NAME.yaml` reads the declaration; flags override it; the run is the same as the
    one given by flags only (one options object behind both)."""
    declaration = tmp_path / "gvrh.yaml"
    declaration.write_text(
        yaml.safe_dump(
            {
                "description": "shear moduli",
                "data": str(target),
                "input": "formula",
                "target": "target",
                "kind": "inorganic",
                "unit": "log10(GPa)",
                "folds": 5,
                "seed": 3,
                "max_overlap": 1,
            }
        )
    )
    proc = run(
        [
            "shotgun",
            "transfer",
            "--library",
            str(smoke / "library"),
            "--target",
            str(declaration),
            "--out",
            str(tmp_path / "declared"),
            "--folds",
            "4",
            *QUICK,
        ]
    )
    assert proc.returncode == 0, proc.stderr
    proc = transfer(smoke, target, tmp_path / "flags", "--unit", "log10(GPa)", *QUICK)
    assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("declared", "flags"))
    assert a.pop("seconds") > 0 and b.pop("seconds") > 0
    assert a == b and a["folds"] == 4 and a["target"]["unit"] == "log10(GPa)"
    assert (tmp_path / "declared" / "ranking.csv").read_text() == (
        tmp_path / "flags" / "ranking.csv"
    ).read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(declaration.read_text().replace("folds: 5", "folds: five"))
    proc = run(
        [
            "shotgun",
            "transfer",
            "--library",
            str(smoke / "library"),
            "--target",
            str(bad),
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    assert proc.returncode == 2 and f"{bad}: folds: expected an integer" in proc.stderr


def test_transfer_refuses_a_constant_target(smoke, tmp_path):
    path = tmp_path / "const.csv"
    pd.DataFrame({"formula": ["NaCl", "KCl", "MgO", "CaO", "FeO", "ZnS"], "target": 1.0}).to_csv(
        path, index=False
    )
    proc = transfer(smoke, path, tmp_path / "out", "--folds", "3")
    assert proc.returncode == 2 and "constant" in proc.stderr


def test_predict_cli_in_original_units(smoke, tmp_path):
    lib = Library.open(smoke / "library")
    mid = lib.query(kind="inorganic", top=1)["model_id"].iloc[0]
    ref = lib.card(mid).reference
    data = tmp_path / "in.csv"
    pd.DataFrame({"formula": ref.inputs + ["Qq"]}).to_csv(data, index=False)
    out = tmp_path / "pred.csv"
    proc = run(
        [
            "shotgun",
            "predict",
            "--library",
            str(smoke / "library"),
            "--model",
            mid,
            "--data",
            str(data),
            "--input",
            "formula",
            "--out",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(out)
    col = pred.columns[1]
    assert lib.card(mid).unit in col
    atol = PREDICTION_TOLERANCE * lib.card(mid).target_scaler.std  # float16 weights
    np.testing.assert_allclose(pred[col][:-1], ref.predictions, rtol=0, atol=atol)
    assert np.isnan(pred[col].iloc[-1])


def test_screen_on_dask_workers_equals_in_process(smoke, target, tmp_path):
    for name, extra in (("local", []), ("dask", ["--n-workers", "2"])):
        proc = transfer(smoke, target, tmp_path / name, *QUICK, *extra)
        assert proc.returncode == 0, proc.stderr
    a, b = (pd.read_csv(tmp_path / n / "ranking.csv") for n in ("local", "dask"))
    pd.testing.assert_frame_equal(a, b)


def test_first_pass_keeps_the_best_of_every_cell_then_the_next(smoke, tmp_path):
    """--max-models 4 on a 100-molecule target: 6 applicable models in 3 cells; the first
    pass keeps each cell's best by source test R2, then the best of the cells' second
    models (worked out here from the cards); on Dask workers too, with the same ranking."""
    lib = Library.open(smoke / "library")
    by_cell: dict[tuple, list] = {}
    for mid in lib.applicable("molecule")["model_id"]:
        c = lib.card(mid)
        by_cell.setdefault((c.dataset, c.property, c.descriptor["name"]), []).append(
            (c.metrics.test_r2, mid)
        )
    assert len(by_cell) == 3 and sum(map(len, by_cell.values())) == 6
    firsts = [max(ms) for ms in by_cell.values()]
    seconds = [max(set(ms) - {first}) for ms, first in zip(by_cell.values(), firsts)]
    expected = {m for _, m in firsts} | {max(seconds)[1]}
    for name, extra in (("local", []), ("dask", ["--n-workers", "2"])):
        proc = demo_transfer(smoke / "library", tmp_path / name, "--max-models", 4, *extra)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["first_pass"] == {
            "n_applicable": 6,
            "n_cells": 3,
            "n_kept": 4,
            "n_cells_kept": 3,
            "max_models": 4,
        }
        assert summary["n_candidates"] == 4
        assert set(pd.read_csv(tmp_path / name / "ranking.csv")["model_id"]) == expected
        report = (tmp_path / name / "report.md").read_text()
        assert "candidates: 4 library models of 6 applicable in 3 cells (first pass" in report
    a, b = (pd.read_csv(tmp_path / n / "ranking.csv") for n in ("local", "dask"))
    pd.testing.assert_frame_equal(a, b)


def test_a_candidate_with_features_that_are_not_finite_is_left_out(smoke, tmp_path):
    """A library model whose batch-norm variances are negative gives NaN features on any input:
    the screen leaves it out, names it in summary.json, on stderr and in the report, and the
    run goes on with the others."""
    from safetensors.torch import save_file

    from shotgun.checksums import sha256
    from shotgun.library import write_library

    lib = Library.open(smoke / "library")
    ids = list(lib.applicable("molecule")["model_id"])
    models = []
    for mid in ids:
        card, tensors = lib.card(mid), lib.weights(mid)
        if mid == ids[0]:
            for name in [n for n in tensors if n.endswith("running_var")]:
                tensors[name] = -tensors[name].abs() - 1
        path = tmp_path / "shard" / f"{mid}.safetensors"
        path.parent.mkdir(exist_ok=True)
        save_file(tensors, str(path))
        models.append((card.replace(weights_sha256=sha256(path)), path))
    write_library(tmp_path / "lib", models, "0.0.0-broken")
    proc = demo_transfer(tmp_path / "lib", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["not_finite"] == [ids[0]]
    ranked = set(pd.read_csv(tmp_path / "out" / "ranking.csv")["model_id"])
    assert ranked == set(ids[1:])
    assert (
        f"1 candidates left out, their features on the target's inputs are not finite: {ids[0]}"
        in proc.stderr
    )
    report = (tmp_path / "out" / "report.md").read_text()
    line = "left out: 1 candidates whose features on the target's inputs are not finite"
    assert f"{line} (NaN or infinite): {ids[0]}" in report


def test_dropped_rows_are_listed_with_their_reason(smoke, target, tmp_path):
    """Rows left out of a run are in dropped.csv with the reason; with the rows used they add
    up to the file's rows. Under --no-nested the learning curve is a note, and the report says
    why, without a matplotlib warning."""
    df = pd.read_csv(target, dtype=str, keep_default_na=False)  # row 8: Xx2O3, not a formula
    df.loc[2, "target"] = ""
    df.loc[4, "target"] = "n/a"
    df.loc[11, "formula"] = "CCO"  # a SMILES, which the composition descriptor would read as C2O
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "out"
    proc = transfer(smoke, path, out, *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert (
        f"shotgun: warning: {path} column 'formula' (--kind inorganic): 1 of 40 inputs read as "
        "SMILES, not as formulas (e.g. 'CCO')" in proc.stderr
    )
    dropped = pd.read_csv(out / "dropped.csv", keep_default_na=False)
    assert dropped.values.tolist() == [
        [3, df["formula"][2], "missing_target", "inorganic"],
        [5, df["formula"][4], "non_numeric_target", "inorganic"],
        [8, "Xx2O3", "not_featurizable", ""],
        [12, "CCO", "not_featurizable", "molecule"],
    ]
    assert list(dropped.columns) == ["row", "input", "reason", "reads_as"]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_dropped"] == len(dropped) and s["n_samples"] + s["n_dropped"] == len(df)
    assert "UserWarning" not in proc.stderr and "legend" not in proc.stderr
    assert "No learning curve" in (out / "report.md").read_text()
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_target_of_another_kind_or_without_usable_rows_is_refused(smoke, tmp_path):
    lib = str(smoke / "library")
    proc = run(
        ["shotgun", "transfer", "--library", lib, "--target", "config/targets/esol_demo.yaml"]
        + ["--kind", "inorganic", "--out", str(tmp_path / "a")]
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(
        r"esol_demo.csv column 'smiles' \(--kind inorganic\): \d+ of 100 inputs read as "
        r"formulas; \d+ as SMILES \(e.g. ",
        proc.stderr,
    )

    path = tmp_path / "monomers.csv"
    pd.DataFrame({"smiles": ["CCO", "CCN", "CCC", "c1ccccc1", "CC=C", "OCCO"], "y": ""}).to_csv(
        path, index=False
    )
    flags = ["--data", str(path), "--input", "smiles", "--target", "y", "--folds", "3"]
    out = ["--out", str(tmp_path / "b")]
    proc = run(["shotgun", "transfer", "--library", lib, *out, *flags, "--kind", "polymer"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "shotgun: warning:" in proc.stderr and "6 of 6 inputs have no * (attachment point)" in (
        proc.stderr
    )
    assert (
        f"{path}: 0 usable rows of 6, fewer than --folds 3; dropped: 6 targets missing "
        "(e.g. row 1: 'CCO')" in proc.stderr
    )


def test_predict_checks_the_kind_of_its_inputs(smoke, tmp_path):
    from shotgun.data import InputKindError, InputKindWarning

    lib = Library.open(smoke / "library")
    comp_id = lib.query(descriptor="composition", top=1)["model_id"][0]
    comp = lib.load(comp_id)
    fingerprint = lib.load(lib.query(descriptor="ecfp", top=1)["model_id"][0])
    smiles = pd.read_csv(ROOT / "data" / "targets" / "esol_demo.csv")["smiles"][:20].tolist()
    with pytest.raises(InputKindError, match=r"it takes SMILES with kind='molecule'"):
        comp.predict(smiles)
    assert np.isfinite(comp.predict(smiles, kind="molecule")).all()  # organic_composition
    with pytest.raises(InputKindError, match=r"0 of 3 inputs read as SMILES or polymer repeat"):
        fingerprint.predict(["NaCl", "Fe2O3", "MgO"])
    ref = comp.card.reference.inputs[:3]
    with pytest.warns(InputKindWarning, match=r"1 of 4 inputs read as SMILES, not as formulas"):
        mixed = comp.predict(ref + ["CCO"])
    np.testing.assert_allclose(mixed[:3], comp.predict(ref), rtol=1e-6)  # float32 batches
    assert np.isnan(mixed[3])
    # One string is one input, not its characters.
    np.testing.assert_array_equal(comp.predict("NaCl"), comp.predict(["NaCl"]))
    assert comp.predict("NaCl").shape == (1,)
    np.testing.assert_array_equal(comp.features("NaCl", depth=2), comp.features(["NaCl"], depth=2))

    data = tmp_path / "smiles.csv"
    pd.DataFrame({"smiles": smiles}).to_csv(data, index=False)
    predict = ["shotgun", "predict", "--library", str(smoke / "library"), "--model", comp_id]
    proc = run([*predict, "--data", str(data), "--input", "smiles"])
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("shotgun: error: ") and proc.stderr.count("\n") == 1
    assert "(--kind molecule)" in proc.stderr
    data = tmp_path / "formulas.csv"
    pd.DataFrame({"formula": [*ref, "CCO", "Qq"]}).to_csv(data, index=False)
    proc = run([*predict, "--data", str(data), "--input", "formula"])  # no --out: still counted
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(io.StringIO(proc.stdout))) == 5
    assert "shotgun: warning:" in proc.stderr
    assert f"{data}: 5 inputs, 2 not featurizable" in proc.stderr


def test_plots_show_their_numbers_and_fit_the_figure():
    """The parity plot: the y = x line and each series' MAE and R² (computed here by hand); the
    learning curve: its labels inside the figure, plain numbers at the measured sizes on the
    log axis; without a curve a note and no legend, with no warning."""
    import warnings

    from shotgun.transfer.plots import curve_figure, parity_figure

    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    rows = np.arange(30)
    best, base = (rows, y + 0.1 * rng.normal(size=30)), (rows, y + 0.5 * rng.normal(size=30))
    fig = parity_figure(y, best, base, "qm9/gap d=1 ridge", "ridge on ecfp", "[eV]")
    ax = fig.axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    for pred in (best[1], base[1]):
        mae = sum(abs(a - b) for a, b in zip(y, pred)) / len(y)
        r2 = 1 - sum((a - b) ** 2 for a, b in zip(y, pred)) / sum((a - y.mean()) ** 2 for a in y)
        assert any(f"MAE {mae:.3g}, R² {r2:.3f}" in label for label in labels), labels
    (line,) = [line for line in ax.lines if line.get_label() == "y = x"]
    np.testing.assert_array_equal(line.get_xdata(), line.get_ydata())
    assert line.get_xdata()[0] <= min(y.min(), best[1].min(), base[1].min())

    sizes = [5, 10, 20, 31]
    curve = pd.DataFrame(
        {
            "n": sizes * 2,
            "method": ["transfer"] * 4 + ["baseline"] * 4,
            "mae": [0.9, 0.7, 0.6, 0.5, 1.0, 0.8, 0.7, 0.65],
        }
    )
    fig = curve_figure(curve, "[log10(mol/L)]")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(n) for n in sizes]
    lo, hi = ax.get_ylim()
    shown = [t for v, t in zip(ax.get_yticks(), ax.get_yticklabels()) if lo <= v <= hi]
    texts = [ax.xaxis.label, ax.yaxis.label, ax.title, *ax.get_xticklabels(), *shown]
    for text in texts:
        box = text.get_window_extent(renderer)
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, text.get_text()
        assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1, text.get_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = curve_figure(curve.iloc[:0], "")
    assert fig.axes == [] and "nested" in fig.texts[0].get_text()


@pytest.mark.parametrize(
    "declared", sorted((ROOT / "config" / "targets").glob("*.yaml")), ids=lambda p: p.stem
)
def test_declared_targets_read_as_declared(declared):
    """Every declared target names a bundled table with its input and target columns; its inputs
    read as its kind (no warning) and it has enough numeric targets for its folds."""
    import warnings

    from shotgun.data.inputs import check_kinds
    from shotgun.transfer import TransferOptions
    from shotgun.transfer.target import read_target

    o = TransferOptions.from_yaml(declared)
    about = yaml.safe_load(declared.read_text())
    assert o.unit and about["description"] and about["citation"]
    inputs, y, problem = read_target(ROOT / o.data, o.input, o.target, o.kind)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check = check_kinds(inputs, [o.kind], str(declared))
    usable = (problem == "") & check.fits
    assert usable.sum() >= 20 * o.folds and np.isfinite(y[usable]).all()
