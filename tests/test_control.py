"""The control networks of `shotgun transfer`: the candidates' architectures with random weights,
screened and selected like the pretrained candidates, against the smoke library."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, transfer_command
from shotgun.data.inputs import canonicalize
from shotgun.library import Library
from shotgun.nn import MLP
from shotgun.transfer.candidates import control_seed
from shotgun.transfer.learners import make_learner

SEED, FOLDS = 3, 4


@pytest.fixture(scope="module")
def unseen(smoke):
    """60 compounds of matbench_log10_kvrh that the smoke library's bulk-modulus models were not
    trained on (nor validated or tested on), with their log10 bulk moduli."""
    prepared = pd.read_parquet(smoke / "data" / "matbench_log10_kvrh" / "log10_kvrh.parquet")
    raw = ROOT / "data" / "inorganic" / "matbench_log10_kvrh.csv"
    df = pd.read_csv(raw, dtype={"formula": str}, keep_default_na=False)
    canon, _ = canonicalize(df["formula"].tolist(), "inorganic")
    df["canonical"] = canon
    df = df[df["canonical"].notna() & ~df["canonical"].isin(set(prepared["input"]))]
    df = df.drop_duplicates("canonical").sample(60, random_state=0).reset_index(drop=True)
    return df[["formula", "target"]]


def transfer(smoke, df, out, *extra):
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "target.csv", index=False)
    proc = transfer_command(
        smoke / "library",
        out / "target.csv",
        out,
        "formula",
        "target",
        "inorganic",
        "--folds",
        FOLDS,
        "--seed",
        SEED,
        "--learners",
        "ridge",
        "--baselines",
        "ridge",
        "--fine-tune",
        0,
        "--stack",
        2,
        *extra,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "summary.json").read_text()), proc.stdout


def test_pretrained_beats_random_weights_on_its_own_property(smoke, unseen, tmp_path):
    """The target is the property the candidates were trained on, on compounds they never saw:
    their features carry it, random projections of the same descriptors much less."""
    s, stdout = transfer(smoke, unseen, tmp_path)
    c, nested = s["control"], s["nested"]
    assert c["estimate"] == "nested" and c["n_networks"] == s["n_candidates"] == 2
    assert c["pretrained_better"] is True
    # Measured: nested MAE 0.125 pretrained against 0.164 control, R² 0.70 against 0.28 (the
    # control is level with ridge on the raw descriptors: 0.163, R² 0.52).
    assert c["cv_mae"] > 1.15 * nested["cv_mae"]
    assert c["cv_r2"] < nested["cv_r2"] - 0.2
    assert c["stack"]["cv_mae"] > nested["stack"]["cv_mae"]
    # The blend with the controls' stack and properties (the same baseline) is the fair
    # control of the saved blend.
    assert c["blend"]["cv_mae"] > nested["blend"]["cv_mae"]
    assert c["blend_pretrained_better"] is True
    report = (tmp_path / "report.md").read_text()
    sentence = "Pretrained features beat random ones on this target: nested MAE"
    assert sentence in stdout and sentence in report
    blend = f"the blend (with the same baseline): {nested['blend']['cv_mae']:.4g} against "
    assert blend + f"{c['blend']['cv_mae']:.4g}" in report
    # Compounds the sources never saw: the leakage guard finds no overlap.
    assert s["leakage"]["max_share"] == 0 and s["leakage"]["n_excluded"] == 0
    assert "overlap with the target: none" in report
    # Relatedness: the closest candidate's prediction, recomputed from its library model, follows
    # the target far better than any control network's (measured r² 0.75 against 0.009).
    r = c["relatedness"]
    lib = Library.open(smoke / "library")
    model = lib.load(r["model_id"])
    card = lib.card(r["model_id"])
    assert r["source"] == f"{card.dataset}/{card.property}" == "matbench_log10_kvrh/log10_kvrh"
    y = unseen["target"].to_numpy()
    pred = model.predict(unseen["formula"].tolist())
    assert r["r2"] == pytest.approx(np.corrcoef(pred, y)[0, 1] ** 2, rel=1e-4)
    assert r["r2"] > r["control_r2"] + 0.3
    assert "the library holds a source more related to this target than a random" in report


def test_on_noise_neither_pretrained_nor_random_weights_claim_a_gain(smoke, unseen, tmp_path):
    """A seeded Gaussian target: nothing can predict it. Out-of-fold R² of a learner that found
    nothing is at most about 0 (its predictions vary around the training means of the folds);
    0.1 is about two standard errors of a chance fit on 60 rows."""
    noise = unseen.assign(target=np.random.default_rng(0).normal(size=len(unseen)))
    s, _ = transfer(smoke, noise, tmp_path)
    c, nested = s["control"], s["nested"]
    for estimate in (nested, nested["stack"], c, c["stack"], c["blend"], nested["baseline"]):
        assert estimate["cv_r2"] < 0.1
    # No prediction follows noise: a squared correlation of at most about 0.1 (the 99th
    # percentile of one chance correlation on 60 rows is 0.11).
    assert max(c["relatedness"]["r2"], c["relatedness"]["control_r2"]) < 0.12
    # Neither beats the from-scratch baseline by more than chance either.
    assert min(nested["cv_mae"], c["cv_mae"]) > 0.9 * nested["baseline"]["cv_mae"]


def test_control_is_reproducible_and_recomputed_by_hand(smoke, unseen, tmp_path):
    a, _ = transfer(smoke, unseen, tmp_path / "a", "--no-nested")
    b, _ = transfer(smoke, unseen, tmp_path / "b", "--no-nested")
    off, _ = transfer(smoke, unseen, tmp_path / "off", "--no-nested", "--no-control")
    assert a["control"] == b["control"] and a["control"]["estimate"] == "same folds"
    assert off["control"] is None
    # The controls change nothing of the pretrained candidates' screen.
    ranking = [pd.read_csv(tmp_path / d / "ranking.csv") for d in ("a", "off")]
    pd.testing.assert_frame_equal(*ranking)
    assert "No control networks were screened" in (tmp_path / "off" / "report.md").read_text()

    # By hand: each candidate's network initialised as training initialises it (torch's default
    # initialisation after seeding with the control seed), the candidate's own input scaler,
    # pre-activations of the last 1-2 hidden layers, ridge on the same folds.
    from safetensors.torch import load_file
    from sklearn.model_selection import KFold

    from shotgun.descriptors import get_descriptor

    X, ok = get_descriptor("composition").featurize(unseen["formula"].tolist())
    assert ok.all()
    y = unseen["target"].to_numpy()
    lib = Library.open(smoke / "library")
    folds = list(KFold(n_splits=FOLDS, shuffle=True, random_state=SEED).split(y))
    maes = {}
    for mid in lib.applicable("inorganic")["model_id"]:
        card = lib.card(mid)
        scaler = load_file(str(lib.root / card.weights))
        torch.manual_seed(control_seed(SEED, mid))
        net = MLP(card.architecture).eval()
        z = (X - scaler["x_mean"].numpy()) / scaler["x_std"].numpy()
        h = torch.as_tensor(np.clip(z, -10, 10).astype(np.float32))
        pre = []
        with torch.no_grad():
            for block in net.blocks:
                pre.append(block["norm"](block["linear"](h)))
                h = block["act"](pre[-1])
        for depth in range(1, min(2, len(pre)) + 1):
            F = torch.cat(pre[-depth:], dim=1).numpy().astype(np.float64)
            pred = np.empty_like(y)
            for tr, te in folds:
                pred[te] = make_learner("ridge", SEED).fit(F[tr], y[tr]).predict(F[te])
            maes[(mid, depth)] = np.abs(pred - y).mean()
    best = min(maes, key=maes.get)
    assert a["control"]["cv_mae"] == pytest.approx(maes[best], rel=1e-6)
    assert a["control"]["best"]["cv_mae"] == a["control"]["cv_mae"]
    assert a["control"]["best"]["name"].endswith(f"d={best[1]} ridge")


def test_squared_correlations_against_numpy():
    from shotgun.metrics import squared_correlations

    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    P = np.column_stack([2 * y + rng.normal(size=30), rng.normal(size=30), np.full(30, 4.0), -y])
    r2 = squared_correlations(P, y)
    expected = [np.corrcoef(P[:, i], y)[0, 1] ** 2 for i in (0, 1, 3)]
    np.testing.assert_allclose(r2[[0, 1, 3]], expected, rtol=1e-12)
    assert r2[2] == 0.0 and r2[3] == pytest.approx(1.0)
