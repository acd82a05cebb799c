import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)  # the environment's snakemake and shotgun


def run(args, **kw):
    """Run a command of this environment from the repository root."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, **kw)


def transfer_command(library, data, out, input_column, target, kind, *options):
    """``shotgun transfer`` of a target table against a library (the completed process)."""
    return run(
        [
            "shotgun",
            "transfer",
            "--library",
            str(library),
            "--data",
            str(data),
            "--input",
            input_column,
            "--target",
            target,
            "--kind",
            kind,
            "--out",
            str(out),
            *map(str, options),
        ]
    )


def seen_by(library, model_ids, inputs, kind):
    """Which of ``inputs`` the models ``model_ids`` of ``library`` were trained on: the rows a
    transfer run keeping them fits on in every split and never scores."""
    import numpy as np

    from shotgun.data.inputs import canonical_hashes

    hashes = canonical_hashes(list(inputs), kind)
    seen = np.zeros(len(hashes), dtype=bool)
    for mid in model_ids:
        seen |= np.isin(hashes, library.load(mid).train_inputs)
    return seen


def scored_kfold(rows, seen, k, seed):
    """(train, test) positions into all rows: shuffled K-fold over the rows of ``rows`` not
    ``seen``, the seen ones in every training split (the splits of a transfer run)."""
    import numpy as np
    from sklearn.model_selection import KFold

    rows = np.asarray(rows)
    free, fixed = rows[~seen[rows]], rows[seen[rows]]
    return [
        (np.sort(np.concatenate([fixed, free[a]])), free[b])
        for a, b in KFold(n_splits=k, shuffle=True, random_state=seed).split(free)
    ]


def formula_transfer(smoke, data, out, *options):
    """``shotgun transfer`` of a table of formulas and ``target`` values against the smoke
    library, 4 folds, seed 3. One of the bulk-modulus compounds these tests use is in the smoke
    models' training sets: the leakage guard is lifted (it has its own tests,
    tests/test_leakage.py), and that compound is fitted on, never scored (:func:`seen_by`)."""
    return transfer_command(
        smoke / "library",
        data,
        out,
        "formula",
        "target",
        "inorganic",
        "--folds",
        4,
        "--seed",
        3,
        "--max-overlap",
        1,
        *options,
    )


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """A real Snakemake run of config/smoke.yaml; returns its results folder
    (SHOTGUN_SMOKE_RESULTS names an existing one to bring up to date instead)."""
    given = os.environ.get("SHOTGUN_SMOKE_RESULTS")
    results = Path(given) if given else tmp_path_factory.mktemp("smoke") / "results"
    proc = run(
        [
            "snakemake",
            "--profile",
            "profiles/local",
            "--configfile",
            "config/smoke.yaml",
            "--config",
            f"results={results}",
            "--cores",
            "2",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return results


def refit_saved(model_dir, library, train_inputs, y, inputs, seed):
    """Predictions of a saved transfer winner recomputed from its model.json alone: each member's
    learner refitted on features computed here (its source model's neural features through the
    library, its raw descriptor, or its source models' predictions) of ``train_inputs``, applied
    to ``inputs``, averaged."""
    import json

    import numpy as np

    from shotgun.descriptors import for_kind
    from shotgun.transfer.learners import make_learner

    meta = json.loads((Path(model_dir) / "model.json").read_text())
    kind, preds = meta["kind"], []
    for m in meta["members"]:
        if "source_model_ids" in m:  # properties: each source model's standardised prediction
            models = [library.load(mid) for mid in m["source_model_ids"]]

            def featurize(rows, models=models):
                return np.column_stack(
                    [(s.predict(list(rows), kind=kind) - s.y_mean) / s.y_std for s in models]
                )
        elif "source_model_id" in m:
            model = library.load(m["source_model_id"])

            def featurize(rows, model=model, depth=m["depth"]):
                return model.features(rows, depth, kind=kind).astype(np.float64)
        else:
            d = for_kind(m["descriptor"], kind)

            def featurize(rows, d=d):
                X, ok = d.featurize(list(rows))
                return np.where(ok[:, None], X, np.nan)

        F, G = featurize(train_inputs), featurize(inputs)
        fit = np.isfinite(F).all(axis=1)
        ok = np.isfinite(G).all(axis=1)
        learner = make_learner(m["learner"], seed).fit(F[fit], np.asarray(y)[fit])
        pred = np.full(len(G), np.nan)
        pred[ok] = learner.predict(G[ok])
        preds.append(pred)
    return np.average(preds, axis=0, weights=[m.get("weight", 1.0) for m in meta["members"]])


def tensor_spans(path) -> dict[str, tuple[int, int]]:
    """Byte range of every tensor of a safetensors file, read from its header by hand (an
    8-byte little-endian length, then JSON with each tensor's data offsets)."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    return {
        k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1]) for k, v in header.items()
    }
