"""The leakage guard of `shotgun transfer`: candidates whose source model was trained on the
target's inputs are measured, reported and left out, against the smoke library."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import transfer_command
from shotgun.library import Library


def cell_rows(smoke, dataset, prop, descriptor, material_class):
    """A cell of the smoke library: its model ids, its data, and the rows its models were fitted
    on (training and validation split, recomputed from the cell and a card) and tested on."""
    from shotgun.nn.architecture import stable_seed
    from shotgun.training.cell import load_cell, split_indices

    lib = Library.open(smoke / "library")
    mids = sorted(lib.query(dataset=dataset, property=prop)["model_id"])
    card = lib.card(mids[0])
    cell = load_cell(
        smoke / "data" / dataset / f"{prop}.parquet",
        smoke / "features" / dataset / f"{descriptor}.parquet",
        dataset,
        material_class,
        prop,
        card.unit,
    )
    cfg = card.train_config
    seed = stable_seed(cfg["seed"], dataset, prop, "split")
    tr, val, te = split_indices(len(cell.y), cfg["trainer"], seed)
    return mids, cell, np.concatenate([tr, val]), te


@pytest.fixture(scope="module")
def qm9_rows(smoke):
    return cell_rows(smoke, "qm9", "gap", "ecfp", "molecule")


def transfer(smoke, df, out, *extra):
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "target.csv", index=False)
    args = ["--learners", "ridge", "--baselines", "ridge", "--fine-tune", "0", "--no-nested"]
    return transfer_command(
        smoke / "library",
        out / "target.csv",
        out,
        "smiles",
        "gap",
        "molecule",
        "--folds",
        3,
        *args,
        *extra,
    )


def test_a_source_trained_on_the_targets_inputs_is_left_out(smoke, qm9_rows, tmp_path):
    from rdkit import Chem

    mids, cell, fitted, held_out = qm9_rows
    # 25 molecules the QM9 models were fitted on and 35 they were tested on, spelt as other
    # (non-canonical) SMILES: the guard canonicalises the target's inputs as cleaning does.
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(fitted, 25, replace=False), held_out[:35]])
    spelt = [Chem.MolToSmiles(Chem.MolFromSmiles(s), doRandom=True) for s in cell.inputs[rows]]
    df = pd.DataFrame({"smiles": spelt, "gap": cell.y[rows]})
    assert sum(a != b for a, b in zip(spelt, cell.inputs[rows])) > 30
    share = np.isin(cell.inputs[rows], cell.inputs[fitted]).mean()  # oracle: 25 / 60
    assert share == pytest.approx(25 / 60)

    proc = transfer(smoke, df, tmp_path / "guarded")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "guarded" / "summary.json").read_text())
    lib = Library.open(smoke / "library")
    applicable = set(lib.applicable("molecule")["model_id"])
    g = s["leakage"]
    assert g["max_overlap"] == 0.01 and g["n_unknown"] == 0
    assert g["excluded"] == sorted(mids) and g["n_excluded"] == len(mids)
    assert g["max_share"] == pytest.approx(share)
    assert s["n_candidates"] == len(applicable) - len(mids)
    ranking = pd.read_csv(tmp_path / "guarded" / "ranking.csv")
    assert not set(ranking["model_id"]) & set(mids)
    assert (ranking["train_overlap"] == 0).all()  # polymers and inorganic formulas: no overlap
    report = (tmp_path / "guarded" / "report.md").read_text()
    assert "trained on up to 41.7% of the target's inputs; 2 above 1.0% left out" in report
    assert g["n_unscored"] == 0  # the kept sources saw none of the rows

    # A higher limit keeps them and reports the share per candidate.
    proc = transfer(smoke, df, tmp_path / "kept", "--max-overlap", "0.5")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "kept" / "summary.json").read_text())
    assert s["leakage"]["n_excluded"] == 0 and s["n_candidates"] == len(applicable)
    ranking = pd.read_csv(tmp_path / "kept" / "ranking.csv").set_index("model_id")
    for mid in mids:
        assert ranking.loc[[mid], "train_overlap"].to_numpy() == pytest.approx(share)
    # The 25 molecules they were fitted on are then fitted on only: never scored.
    assert s["leakage"]["n_unscored"] == 25
    report = (tmp_path / "kept" / "report.md").read_text()
    assert "the 25 target rows the kept ones saw are used for fitting only, never scored" in report

    # A limit that keeps sources which saw every row leaves nothing to score: a clear error.
    every = df.iloc[:25]
    proc = transfer(smoke, every, tmp_path / "all_seen", "--max-overlap", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert "trained on all but 0 of the target's 25 inputs, too few to score" in error
    assert error.endswith("lower --max-overlap")
    # Two rows no kept source saw: too few for --folds 3 (and for nested CV, which splits each
    # outer training fold again).
    proc = transfer(smoke, df.iloc[23:27], tmp_path / "two_unseen", "--max-overlap", "1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert "trained on all but 2 of the target's 4 inputs, too few to score with --folds 3" in error


def test_every_candidate_trained_on_the_target_is_a_clear_error(smoke, tmp_path):
    """The smoke library's only inorganic candidates are its bulk-modulus models."""
    _, cell, fitted, _ = cell_rows(
        smoke, "matbench_log10_kvrh", "log10_kvrh", "composition", "inorganic"
    )
    df = pd.DataFrame({"smiles": cell.inputs[fitted[:30]], "gap": cell.y[fitted[:30]]})
    proc = transfer(smoke, df, tmp_path, "--kind", "inorganic")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]  # one line, after the progress lines
    assert error.startswith(f"shotgun: error: {tmp_path / 'target.csv'}: every candidate's")
    assert "trained on more than 1.0% of the target's inputs (the least: 100.0%)" in error
    assert error.endswith("--max-overlap raises the limit")


def test_a_library_without_training_inputs_reports_unknown(smoke, qm9_rows, tmp_path):
    """A library built from shards trained before training inputs were recorded: weights
    without the hashes."""
    from safetensors.torch import save_file

    from shotgun.checksums import sha256
    from shotgun.library import write_library

    lib = Library.open(smoke / "library")
    models = []
    for mid in lib.applicable("molecule")["model_id"]:
        card = lib.card(mid)
        tensors = lib.weights(mid, card)
        del tensors["train_inputs"]
        path = tmp_path / f"{mid}.safetensors"
        save_file(tensors, str(path))
        models.append((card.replace(weights_sha256=sha256(path)), path))
    write_library(tmp_path / "old", models, "0.0.0-old")
    _, cell, fitted, _ = qm9_rows
    df = pd.DataFrame({"smiles": cell.inputs[fitted[:30]], "gap": cell.y[fitted[:30]]})
    proc = transfer(smoke, df, tmp_path / "out", "--library", str(tmp_path / "old"))
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    g = s["leakage"]
    assert g["max_share"] is None and g["n_excluded"] == 0 and g["n_unknown"] == len(models)
    assert s["n_candidates"] == len(models)
    assert ranking_overlaps(tmp_path / "out").isna().all()
    assert "overlap with the target: unknown" in (tmp_path / "out" / "report.md").read_text()


def ranking_overlaps(out):
    return pd.read_csv(out / "ranking.csv")["train_overlap"]
