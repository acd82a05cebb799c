"""What logging costs a shard: ``Tracker.log_run`` of N models into a fresh embedded SQLite store,
with each model's per-epoch history (E epochs: 2E step metrics) and without it.

The cards are real (trained here once, a few epochs, on a synthetic 300-row cell); the histories
are synthetic numbers of the requested length. Prints JSON as its last line:
``python benchmarks/tracking_log.py --models 200 --epochs 200``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _cards(folder: Path):
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
    a = p.parse_args()

    from shotgun.nn import History
    from shotgun.tracking import Tracker, init_store, resolve_uri

    out = {"models": a.models, "epochs": a.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        card, weights = _cards(Path(tmp))
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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
