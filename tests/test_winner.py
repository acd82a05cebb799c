"""The saved model is the winner: one rule (``--select``) picks among transfer, the stack,
properties as features, their blend and the baseline, on all rows and inside each outer training
fold (nested), and `model/` serves whichever it is."""

import json
from itertools import product

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, formula_transfer, refit_saved, run, scored_kfold, seen_by
from shotgun.library import Library
from shotgun.transfer.learners import make_learner

GVRH = ROOT / "data" / "inorganic" / "matbench_log10_gvrh.csv"


def transfer(smoke, data, out, *extra):
    return formula_transfer(smoke, data, out, "--fine-tune", 0, *extra)


def write_split(df, n_train, tmp_path):
    """The first ``n_train`` rows to train.csv, the formulas of the rest to new.csv (returned)."""
    df.head(n_train).to_csv(tmp_path / "train.csv", index=False)
    new = df.iloc[n_train:][["formula"]]
    new.to_csv(tmp_path / "new.csv", index=False)
    return new


def predict(model, data, out):
    return run(
        [
            "shotgun",
            "predict",
            "--model",
            str(model),
            "--data",
            str(data),
            "--input",
            "formula",
            "--out",
            str(out),
        ]
    )


def test_a_baseline_that_wins_is_saved_and_served(smoke, tmp_path):
    """A target equal to a composition feature: ridge on the raw descriptor fits it, so the
    baseline wins, model/ holds it, and predict reproduces the feature on new formulas."""
    from shotgun.descriptors import get_descriptor

    d = get_descriptor("composition")
    column = d.feature_names().index("mean:Number")
    df = pd.read_csv(GVRH).head(460)
    X, ok = d.featurize(df["formula"].tolist())
    assert ok.all()
    df["target"] = X[:, column]
    new = write_split(df, 400, tmp_path)

    proc = transfer(
        smoke,
        tmp_path / "train.csv",
        tmp_path / "out",
        "--learners",
        "ridge",
        "--baselines",
        "ridge,random_forest",
        "--no-nested",
        "--select",
        "cv",
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["winner"] == "baseline"
    assert s["saved"]["method"] == "baseline"
    assert s["saved"]["members"] == [s["baseline"]["name"]]
    methods = {m["method"]: m for m in s["methods"]}
    assert methods["baseline"]["cv_mae"] < methods["transfer"]["cv_mae"]
    meta = json.loads((tmp_path / "out" / "model" / "model.json").read_text())
    assert meta["method"] == "baseline" and len(meta["members"]) == 1
    assert meta["members"][0]["descriptor"]["name"] == "composition"
    assert not list((tmp_path / "out" / "model").glob("source-*"))  # no network in a baseline
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"saved under model/ (shotgun predict --model): baseline, {s['baseline']['name']}" in (
        report
    )

    proc = predict(tmp_path / "out" / "model", tmp_path / "new.csv", tmp_path / "pred.csv")
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(tmp_path / "pred.csv")["target"].to_numpy()
    # The feature itself, up to ridge's shrinkage among collinear composition features ...
    truth = X[400:, column]
    assert np.abs(pred - truth).mean() < 0.01 * truth.std()
    # ... and exactly ridge refitted on the descriptor computed here.
    lib = Library.open(smoke / "library")
    train = df.head(400)
    ref = refit_saved(
        tmp_path / "out" / "model", lib, train["formula"], train["target"], new["formula"], 3
    )
    np.testing.assert_allclose(pred, ref, rtol=1e-6, atol=1e-9)


def test_properties_that_win_are_saved_and_served(smoke, tmp_path):
    """A target that is a linear function of one library model's predictions: ridge on the
    source models' predictions (properties as features) fits it, wins, is saved as a list of
    library model ids, and predict reproduces it on new formulas; without its library the saved
    model is refused with the reason."""
    from shotgun.checksums import sha256
    from shotgun.library.card import LibraryError
    from shotgun.transfer import TransferModel

    lib = Library.open(smoke / "library")
    cands = lib.applicable("inorganic")
    source = lib.load(cands[~cands["weak"]]["model_id"].iloc[0])
    df = pd.read_csv(GVRH).head(140)
    df["target"] = 3.0 * source.predict(df["formula"].tolist()) - 1.0
    new = write_split(df, 120, tmp_path)

    proc = transfer(
        smoke,
        tmp_path / "train.csv",
        tmp_path / "out",
        "--learners",
        "ridge",
        "--baselines",
        "ridge",
        "--no-nested",
        "--no-control",
        "--select",
        "cv",
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    methods = {m["method"]: m for m in s["methods"]}
    assert s["winner"] == "properties" and s["saved"]["method"] == "properties"
    assert methods["properties"]["cv_mae"] < min(
        methods[k]["cv_mae"] for k in ("transfer", "baseline")
    )
    model = tmp_path / "out" / "model"
    meta = json.loads((model / "model.json").read_text())
    (member,) = meta["members"]
    assert source.card.model_id in member["source_model_ids"]
    assert len(member["source_model_ids"]) == s["n_candidates"]
    assert not list(model.glob("source-*"))  # the sources stay in the library

    proc = predict(model, tmp_path / "new.csv", tmp_path / "pred.csv")
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(tmp_path / "pred.csv")["target"].to_numpy()
    truth = df.tail(20)["target"].to_numpy()
    assert np.abs(pred - truth).mean() < 0.02 * truth.std()
    train = df.head(120)
    ref = refit_saved(model, lib, train["formula"], train["target"], new["formula"], 3)
    np.testing.assert_allclose(pred, ref, rtol=1e-6, atol=1e-9)

    # Pointed at a library that is not there, loading says which and why.
    meta["library"] = str(tmp_path / "moved")
    (model / "model.json").write_text(json.dumps(meta))
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"]["model.json"] = sha256(model / "model.json")
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LibraryError, match=r"uses \d+ models of the library .*moved"):
        TransferModel(model)


def test_a_saved_stack_predicts_the_mean_of_its_members(smoke, tmp_path):
    from shotgun.library.card import LibraryError
    from shotgun.transfer import TransferModel
    from shotgun.transfer.pipeline import Member, save_model

    lib = Library.open(smoke / "library")
    ids = list(lib.applicable("inorganic")["model_id"][:2])
    assert len(ids) == 2
    df = pd.read_csv(GVRH)
    train, y = df["formula"][:30].tolist(), df["target"][:30].to_numpy()
    new = df["formula"][30:45].tolist() + ["Xx2O3"]
    spec = [(ids[0], 1, "ridge"), (ids[1], 2, "bayesian_ridge")]
    members = []
    for mid, depth, learner in spec:
        m = lib.load(mid)
        members.append(Member(learner, m.features(train, depth).astype(np.float64), m, depth))
    target = {"kind": "inorganic", "input": "formula", "target": "target", "unit": None}
    cv = {"cv_mae": 0.1, "cv_rmse": 0.2, "cv_r2": 0.5}
    dest = save_model(tmp_path / "model", "stack", "mean of top 2", members, 3, y, target, cv, lib)

    expected = []
    for mid, depth, learner in spec:
        m = lib.load(mid)
        fitted = make_learner(learner, 3).fit(m.features(train, depth).astype(np.float64), y)
        G = m.features(new, depth).astype(np.float64)
        ok = np.isfinite(G).all(axis=1)
        p = np.full(len(new), np.nan)
        p[ok] = fitted.predict(G[ok])
        expected.append(p)
    got = TransferModel(dest).predict(new)
    np.testing.assert_allclose(got[:-1], np.mean(expected, axis=0)[:-1], rtol=1e-6, atol=1e-9)
    assert np.isnan(got[-1])
    assert not np.allclose(expected[0][:-1], expected[1][:-1])  # the mean is of two different

    # A blend weighs its members as saved.
    members[0].weight, members[1].weight = 0.25, 0.75
    blend = save_model(tmp_path / "blend", "blend", "blend", members, 3, y, target, cv, lib)
    got = TransferModel(blend).predict(new)
    want = 0.25 * expected[0] + 0.75 * expected[1]
    np.testing.assert_allclose(got[:-1], want[:-1], rtol=1e-6, atol=1e-9)

    # A folder of another format is refused with the format it has.
    meta = json.loads((dest / "model.json").read_text())
    meta["format"] = "shotgun-transfer/1"
    (dest / "model.json").write_text(json.dumps(meta))
    manifest = json.loads((dest / "manifest.json").read_text())
    from shotgun.checksums import sha256

    manifest["files"]["model.json"] = sha256(dest / "model.json")
    (dest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LibraryError, match="format 'shotgun-transfer/1', this release reads"):
        TransferModel(dest)
    pd.DataFrame({"formula": new}).to_csv(tmp_path / "new.csv", index=False)
    proc = predict(dest, tmp_path / "new.csv", tmp_path / "pred.csv")
    assert proc.returncode == 2 and "shotgun-transfer/1" in proc.stderr
    assert "Traceback" not in proc.stderr


def _choose(feats, X, P, y, tr, inner, refine, k_stack, rule="cv"):
    """Brute force of one selection on rows ``tr`` with ``inner`` splits (positions into y):
    every (model, depth) with ridge, the ``refine`` best also with Bayesian ridge; the best of
    them (transfer), the mean of the top ``k_stack`` distinct models (stack), the best of ridge
    and random forest on the raw descriptor ``X`` (baseline) and on the models' predictions
    ``P`` (properties), and the blend of the baseline's, the stack's and the properties' choices
    (equal weights). With ``rule`` "cv" the method picked is the one whose choosing, redone
    without each inner fold (among the ridge pipelines, for transfer and the stack) and scored
    on it, has the least MAE (ties: the earlier of baseline, transfer, stack, properties,
    blend). With "blend": the blend, its parts weighted by the multiples of 1/12 whose mean
    of those out-of-fold choices has the least MAE (ties: nearest equal weights) if fitting
    them without each inner fold does better on it than equal weights (else equal), the parts
    of weight 0 left out (one part left: that method); with "equal", equal weights; with
    either, the baseline instead when its choice has the lower MAE on every inner fold.
    Returns (method, [(key, learner, F, weight)], label of the picked pipelines' weights)."""
    folds = inner
    every = list(range(len(folds)))

    def preds(learner, F):  # per inner fold
        return [make_learner(learner, 3).fit(F[a], y[a]).predict(F[b]) for a, b in folds]

    def mae(pred, which):
        return np.concatenate([np.abs(pred[f] - y[folds[f][1]]) for f in which]).mean()

    pipes = [(key, "ridge", F, preds("ridge", F)) for key, F in feats.items()]
    top = sorted(range(len(pipes)), key=lambda i: mae(pipes[i][3], every))[:refine]
    pipes += [
        (pipes[i][0], "bayesian_ridge", pipes[i][2], preds("bayesian_ridge", pipes[i][2]))
        for i in sorted(top)
    ]
    base = [(("raw", 0), name, X, preds(name, X)) for name in ("ridge", "random_forest")]
    props = [(("props", 0), name, P, preds(name, P)) for name in ("ridge", "random_forest")]

    def first(cands, k, which):  # the k best on folds `which`, of distinct models when k > 1
        picked, seen = [], set()
        for c in sorted(cands, key=lambda c: mae(c[3], which)):
            if k > 1 and c[0][0] in seen:
                continue
            picked.append(c)
            seen.add(c[0][0])
            if len(picked) == k:
                break
        return picked

    # (method, candidates, k); the refined pipelines were picked on every inner fold, so the
    # choosing is cross-validated among the ridge ones alone.
    methods = [("baseline", base, 1), ("transfer", pipes, 1), ("stack", pipes, k_stack)]
    methods.append(("properties", props, 1))
    blended = [m for m in methods if m[0] in ("baseline", "stack", "properties")]
    n_ridge = len(feats)

    def pred(parts, which, f):  # the parts chosen on folds `which`, equally weighted, on fold f
        return np.mean(
            [
                np.mean([c[3][f] for c in first(c_[:n_ridge] if c_ is pipes else c_, k, which)], 0)
                for _, c_, k in parts
            ],
            axis=0,
        )

    def without(parts, f):
        return pred(parts, [g for g in every if g != f], f)

    if rule in ("blend", "equal"):
        w = np.full(3, 1 / 3)
        oof = [np.column_stack([without([m], f) for m in blended]) for f in every]
        grid = [np.array(c) / 12 for c in product(range(13), repeat=3) if sum(c) == 12]

        def fit(which):  # the weights of least MAE on folds `which` (ties: nearest equal)
            def mae(w):
                return np.concatenate([np.abs(oof[f] @ w - y[folds[f][1]]) for f in which]).mean()

            return min(grid, key=lambda w: (round(mae(w), 12), ((w - 1 / 3) ** 2).sum()))

        def cv_mae(weights_of):  # weights_of(f) scored on fold f
            err = [np.abs(oof[f] @ weights_of(f) - y[folds[f][1]]) for f in every]
            return np.concatenate(err).mean()

        if rule == "blend" and cv_mae(lambda f: fit([g for g in every if g != f])) < cv_mae(
            lambda f: w
        ):
            w = fit(every)
        parts = [(m, v) for m, v in zip(blended, w) if v > 0]

        def fold_mae(parts):  # the parts chosen on all inner folds, on each
            return [
                np.abs(
                    sum(
                        v * np.mean([c[3][f] for c in first(c_, k, every)], 0)
                        for (_, c_, k), v in parts
                    )
                    - y[folds[f][1]]
                ).mean()
                for f in every
            ]

        if all(b < m for b, m in zip(fold_mae([(methods[0], 1.0)]), fold_mae(parts))):
            parts = [(methods[0], 1.0)]
    else:
        scores = []
        for parts in [[m] for m in methods] + [blended]:
            err = sum(np.abs(without(parts, f) - y[folds[f][1]]).sum() for f in every)
            scores.append(err / sum(len(b) for _, b in folds))
        best = int(np.argmin(scores))
        chosen = blended if best == len(methods) else [methods[best]]
        parts = [(m, 1.0 / len(chosen)) for m in chosen]
    picked = []
    for (_, cands, k), v in parts:
        chosen = first(cands, k, every)
        picked += [(key, lr, F, v / len(chosen)) for key, lr, F, _ in chosen]
    weights = [v for _, v in parts]
    label = (
        ""
        if np.allclose(weights, weights[0])
        else ", ".join(f"{m[0]} {v:.2f}" for m, v in parts) + ": "
    )
    return ("blend" if len(parts) > 1 else parts[0][0][0]), picked, label


def test_nested_choice_among_methods_recomputed_by_brute_force(smoke, tmp_path):
    """The method picked inside each outer training fold (refined learners, baselines and the
    stack included), scored on its outer test fold; and the winner on all rows."""

    from shotgun.descriptors import get_descriptor

    df = pd.read_csv(GVRH).head(40)
    df.to_csv(tmp_path / "t.csv", index=False)
    proc = transfer(
        smoke,
        tmp_path / "t.csv",
        tmp_path / "out",
        "--learners",
        "ridge,bayesian_ridge",
        "--refine",
        "2",
        "--baselines",
        "ridge,random_forest",
        "--stack",
        "2",
        "--select",
        "cv",
        "--fit-weights-from",
        "0",
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    selected = s["nested"]["selected"]

    X, ok = get_descriptor("composition").featurize(df["formula"].tolist())
    assert ok.all()
    y = df["target"].to_numpy()
    lib = Library.open(smoke / "library")
    feats, columns = {}, []
    ranked = lib.applicable("inorganic").sort_values(  # the screen's order: RF draws columns
        ["test_r2", "model_id"], ascending=[False, True]
    )
    for mid in ranked[~ranked["weak"]]["model_id"]:
        m = lib.load(mid)
        for depth in range(1, min(2, m.n_hidden) + 1):
            feats[(mid, depth)] = m.features_descriptors(X, depth).astype(np.float64)
        columns.append(m.predict(df["formula"].tolist()))  # scale does not matter to either
    assert len({mid for mid, _ in feats}) >= 2  # a stack of two distinct models
    P = np.column_stack(columns)

    def name(key, learner):
        if key[0] == "props":
            return f"{learner} on predictions of {P.shape[1]} source models"
        return f"{learner} on composition" if key[0] == "raw" else f"{key[0]} d={key[1]} {learner}"

    seen = seen_by(lib, ranked[~ranked["weak"]]["model_id"], df["formula"], "inorganic")
    outer = scored_kfold(np.arange(len(y)), seen, 4, 3)
    rules = {r["rule"]: r for r in s["nested"]["rules"]}
    assert selected == rules["cv"] and set(rules) == {"blend", "equal", "cv"}
    for rule in ("cv", "blend", "equal"):
        chosen, pipelines, rows, preds = [], [], [], []
        for o, (tr, te) in enumerate(outer):
            inner = scored_kfold(tr, seen, 4, 3 + 1 + o)
            method, picked, label = _choose(feats, X, P, y, tr, inner, 2, 2, rule)
            chosen.append(method)
            members = " + ".join(name(key, learner) for key, learner, _, _ in picked)
            pipelines.append(label + members)
            rows.append(te)
            fitted = [make_learner(lr, 3).fit(F[tr], y[tr]) for _, lr, F, _ in picked]
            preds.append(
                np.average(
                    [f.predict(F[te]) for f, (_, _, F, _) in zip(fitted, picked)],
                    axis=0,
                    weights=[w for *_, w in picked],
                )
            )
        got = rules[rule]
        assert got["chosen"] == chosen and got["chosen_pipelines"] == pipelines
        pred, truth = np.concatenate(preds), y[np.concatenate(rows)]
        assert got["cv_mae"] == pytest.approx(np.abs(pred - truth).mean(), rel=1e-6)
        assert got["cv_rmse"] == pytest.approx(np.sqrt(((pred - truth) ** 2).mean()), rel=1e-6)

    # On all rows, the same rule on the outer folds picks the saved winner.
    method, picked, _ = _choose(feats, X, P, y, np.arange(len(y)), outer, 2, 2)
    assert s["winner"] == method and s["saved"]["method"] == method
    assert s["saved"]["members"] == [name(key, learner) for key, learner, _, _ in picked]
    meta = json.loads((tmp_path / "out" / "model" / "model.json").read_text())
    assert meta["method"] == method and len(meta["members"]) == len(picked)
    for m, (key, learner, _, weight) in zip(meta["members"], picked):
        assert m["learner"] == learner and m["weight"] == pytest.approx(weight, rel=1e-12)
        if key[0] not in ("raw", "props"):
            assert (m["source_model_id"], m["depth"]) == key


def test_blend_rule_gives_way_to_a_baseline_that_wins_every_inner_fold():
    """The default rule saves the blend, but a baseline whose choice has the lower MAE on every
    inner fold is saved instead (on 1,000 rows a random forest can be clearly better than the
    methods the blend averages it with); on four folds of five, or for another method, not.
    "blend" uses the blend of fitted weights, "equal" the one of equal weights; a blend that
    keeps one method is that method."""
    from shotgun.transfer.selection import Pick, Picks, select_method

    def pick(method, folds, parts=None):
        return Pick(method, [], float(np.mean(folds)), 0.0, fold_mae=list(folds), parts=parts)

    halves = {"baseline": 0.5, "stack": 0.5}
    blend = pick("blend", [1.0] * 5, halves)

    def picks(*methods, fitted=blend):
        return Picks(list(methods), blend, fitted)

    base, stack = pick("baseline", [0.9] * 5), pick("stack", [1.2] * 5)
    assert select_method(picks(base, stack)) is base
    assert select_method(picks(pick("baseline", [0.5] * 4 + [1.1]), stack)) is blend
    assert select_method(picks(pick("transfer", [0.1] * 5), stack)) is blend
    assert select_method(picks(base, stack), "cv") is base  # the least choice MAE (a tie: first)

    # Fitted weights: "blend" takes that blend, "equal" the other.
    fitted = pick("blend", [0.8] * 5, {"baseline": 0.75, "stack": 0.25})
    assert select_method(picks(base, stack, fitted=fitted)) is fitted
    assert select_method(picks(base, stack, fitted=fitted), "equal") is base
    alone = pick("blend", [0.7] * 5, {"stack": 1.0})
    assert select_method(picks(pick("baseline", [1.5] * 5), stack, fitted=alone)) is stack
    assert select_method(Picks([base, stack])).method == "baseline"  # no blend: as "cv"
    # Their names in the methods table.
    assert blend.blend_name == "mean of baseline, stack"
    assert fitted.blend_name == "mean of baseline 0.75, stack 0.25"
    assert alone.blend_name == "stack alone (the others weighted 0)"


def test_blend_weights_follow_the_parts_out_of_fold():
    """With hundreds of rows, a part far better than the others takes most of the weighted
    blend (the weights those of least MAE over the out-of-fold predictions, recomputed by brute
    force); on a few rows of equally good parts, fitting weights does not beat equal ones,
    which are kept; on fewer than FIT_WEIGHTS_FROM rows, none are fitted."""
    from shotgun.transfer.plans import build_plan
    from shotgun.transfer.selection import FIT_WEIGHTS_FROM, Screen, method_picks

    def picks(n, noise, seed=0, fit_from=FIT_WEIGHTS_FROM):
        rng = np.random.default_rng(seed)
        y = rng.normal(size=n)
        plan = build_plan(y, 5, 0, nested=False, curve=())
        screens = []
        for name, sd in noise.items():
            s = Screen(plan, y)
            for m in range(2):  # two distinct models: a stack of the top 2 is one of them
                e = rng.normal(scale=sd, size=n)
                s.add(
                    {"model_id": f"{name}{m}", "name": f"{name}{m}", "learner": "ridge"},
                    {p: y[test] + e[test] for p, (_, test) in enumerate(plan.pairs)},
                )
            screens.append(s)
        base, stack, props = screens
        return plan, y, method_picks(stack, base, 2, 0, props, fit_from)

    plan, y, found = picks(300, {"baseline": 0.1, "stack": 1.0, "properties": 1.0})
    blend = found.fitted
    assert blend.method == "blend" and blend.parts["baseline"] >= 0.75
    assert found.equal.parts == pytest.approx(
        dict.fromkeys(("baseline", "stack", "properties"), 1 / 3)
    )
    # Brute force: each part's choice is the same on every fold here (one pipeline, or the
    # top two), so its out-of-fold prediction is its own; the weights of least MAE.
    parts = {p.method: p for p in found.methods if p.method in ("baseline", "stack", "properties")}
    inner = plan.tasks[0].inner
    oof = np.column_stack([np.concatenate([parts[m].predict(p) for p in inner]) for m in parts])
    truth = np.concatenate([y[plan.pairs[p][1]] for p in inner])
    grid = [np.array(c) / 12 for c in product(range(13), repeat=3) if sum(c) == 12]
    best = min(grid, key=lambda w: (np.abs(oof @ w - truth).mean(), ((w - 1 / 3) ** 2).sum()))
    assert {m: w for m, w in zip(parts, best) if w > 0} == pytest.approx(blend.parts)

    # Equally good parts on 20 rows (the stack averages two models: noise sqrt(2) makes it as
    # good as the others): equal weights are kept in most draws.
    equal = {"baseline": 1 / 3, "stack": 1 / 3, "properties": 1 / 3}
    noise = {"baseline": 1.0, "stack": 2**0.5, "properties": 1.0}
    draws = [picks(20, noise, s, fit_from=0) for s in range(20)]
    kept = [d[2].fitted.parts == pytest.approx(equal) for d in draws]
    assert sum(kept) >= 12, kept

    # Below FIT_WEIGHTS_FROM rows the weights are equal, however much better a part is.
    better = {"baseline": 0.1, "stack": 1.0, "properties": 1.0}
    assert picks(50, better, fit_from=0)[2].fitted.parts["baseline"] >= 0.75
    few = picks(50, better)[2]
    assert few.fitted is few.equal and few.equal.parts == pytest.approx(equal)
