"""What logging costs a shard: ``Tracker.log_run`` of N models into a fresh embedded SQLite store,
with each model's per-epoch history (E epochs: 2E step metrics) and without it; and what logging
P of them as MLflow pyfunc models (``log_pyfunc``, as ``shotgun library log-pyfunc`` does) costs.

The cards are real (trained here once, a few epochs, on a synthetic 300-row cell); the histories
are synthetic numbers of the requested length. Prints JSON as its last line:
``python benchmarks/tracking_log.py --models 200 --epochs 200 --pyfunc 20``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def trained_card(folder: Path):
    from shotgun.training import Cell, compose_train_config, train_shard

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 16))
    y = 3 + 2 * np.tanh(X @ rng.normal(size=16) / 3)
    cell = Cell(
        "bench",
        "inorganic",
        "y",
        "eV",
        {"name": "composition", "version": "1", "params": {}},
        np.array([f"A{i}B" for i in range(300)]),
        X,
        y,
        0,
    )
    root = Path(__file__).resolve().parents[1]
    cfg = compose_train_config(root / "config" / "train", ["trainer.max_epochs=2"])
    card = train_shard(cell, cfg, [0], folder / "shard", log=lambda *a: None)[0]
    return card, folder / "shard" / card.weights


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=200)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--pyfunc", type=int, default=20, help="models also logged as pyfunc models")
    a = p.parse_args()

    from shotgun.nn import History
    from shotgun.tracking import Tracker, init_store, log_pyfunc, resolve_uri

    out = {"models": a.models, "epochs": a.epochs, "pyfunc_models": min(a.pyfunc, a.models)}
    with tempfile.TemporaryDirectory() as tmp:
        card, weights = trained_card(Path(tmp))
        rng = np.random.default_rng(0)
        for mode in ("without_history", "with_history"):
            results = Path(tmp) / mode
            uri = resolve_uri(None, results)
            init_store(uri, "bench", results / "mlartifacts")
            tracker = Tracker(uri, "bench")
            start = time.perf_counter()
            for i in range(a.models):
                history = None
                if mode == "with_history":
                    t0 = int(time.time() * 1000)
                    history = History(
                        t0,
                        rng.random(a.epochs).tolist(),
                        rng.random(a.epochs).tolist(),
                        list(range(t0 + 1, t0 + 1 + a.epochs)),
                    )
                tracker.log_run(card.replace(model_id=f"{i:016x}"), weights, history)
            seconds = time.perf_counter() - start
            out[f"{mode}_seconds_per_model"] = round(seconds / a.models, 4)
            out[f"{mode}_store_mb"] = round((results / "mlflow.db").stat().st_size / 1e6, 1)

        # pyfunc models of the first models (each run's weights artifact named by its model id)
        results = Path(tmp) / "pyfunc"
        uri = resolve_uri(None, results)
        init_store(uri, "bench", results / "mlartifacts")
        tracker, cards = Tracker(uri, "bench"), []
        for i in range(out["pyfunc_models"]):
            named = Path(tmp) / "named" / f"{i:016x}.safetensors"
            named.parent.mkdir(exist_ok=True)
            named.hardlink_to(weights)
            c = card.replace(model_id=named.stem)
            cards.append(c.replace(mlflow_run_id=tracker.log_run(c, named)))
        log_pyfunc(uri, cards[0])  # imports and first-use setup, not timed
        before = _mb(results / "mlartifacts")
        start = time.perf_counter()
        for c in cards[1:]:
            log_pyfunc(uri, c)
        out["pyfunc_seconds_per_model"] = round((time.perf_counter() - start) / (len(cards) - 1), 4)
        out["pyfunc_artifact_mb_per_model"] = round(
            (_mb(results / "mlartifacts") - before) / (len(cards) - 1), 3
        )
        out["weights_mb"] = round(weights.stat().st_size / 1e6, 3)
    print(json.dumps(out))


def _mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


if __name__ == "__main__":
    main()
