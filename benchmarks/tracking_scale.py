"""MLflow at 100,000 runs: what logging a model and rebuilding a library (``library
from-mlflow``) cost as the embedded SQLite store grows.

For each of ``--sizes`` (1,000, 10,000, 100,000 runs in the version's experiment), a store:

1. filled up to that size: the first ``--sizes`` entry by ``Tracker.log_run`` (card,
   summary metrics and params, card and weights artifacts; no per-epoch history); beyond it by
   copies of those runs made in SQL (each table's rows of a run under a new run id, with the
   model id tag made unique) whose artifacts are the original's, with the model id and run id
   made unique in the card and the weights file hard-linked under the new id;
2. ``--timed`` more models are logged into each store through ``Tracker.log_run``, timed per
   model, in ``--rounds`` turns over the stores (so that every size sees the same machine load);
3. ``from_mlflow`` rebuilds the library from every finished run with ``--jobs`` processes
   (and, at the first size, with one), timed.

The cards are real (trained once, a few epochs, on a synthetic cell: benchmarks/tracking_log.py),
spread over 200 properties (cells) as a library spreads over its grid; each model its own id and
its weights file (6 kB) under its id. Prints JSON as its last line:
``python benchmarks/tracking_scale.py --sizes 1000,10000,100000 --timed 200 --jobs 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking_log import trained_card

# The tables holding a run's rows, each keyed by run_uuid.
RUN_TABLES = ("runs", "tags", "params", "metrics", "latest_metrics")


def log_models(tracker, card, weights: Path, first: int, n: int, folder: Path) -> float:
    """Log models ``first .. first + n - 1`` (ids from their number, 200 cells); seconds per
    model."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(first, first + n):
        mid = f"{i:016x}"
        named = folder / f"{mid}.safetensors"
        named.hardlink_to(weights)
        model = card.replace(model_id=mid, weights=named.name, property=f"y{i % 200}")
        tracker.log_run(model, named)
    return (time.perf_counter() - start) / n


def fill(db: Path, experiment_id: str, originals: list[str], size: int) -> float:
    """Copies of the ``originals`` runs until the experiment holds ``size`` runs; seconds."""
    from shotgun.tracking import MODEL_TAG

    start = time.perf_counter()
    con = sqlite3.connect(db)
    have = con.execute("select count(*) from runs where experiment_id = ?", (experiment_id,))
    copy = have.fetchone()[0] // len(originals)
    con.execute("create temp table originals (run_uuid text primary key)")
    con.executemany("insert into originals values (?)", [(r,) for r in originals])
    columns = {t: [c[1] for c in con.execute(f"pragma table_info({t})")] for t in RUN_TABLES}
    copies = []
    while (n := con.execute("select count(*) from runs").fetchone()[0]) < size:
        new = f"printf('%08x', {copy}) || substr(run_uuid, 9)"
        limit = f"(select run_uuid from originals limit {size - n})"
        for table, cols in columns.items():
            select = [new if c == "run_uuid" else c for c in cols]
            if table == "tags":  # the model id tag stays unique
                select[cols.index("value")] = (
                    f"case when key = '{MODEL_TAG}' then value || '-{copy}' else value end"
                )
            if table == "runs":  # each copy its own artifact folder
                select[cols.index("artifact_uri")] = f"replace(artifact_uri, run_uuid, {new})"
            con.execute(
                f"insert into {table} ({', '.join(cols)}) select {', '.join(select)} "
                f"from {table} where run_uuid in {limit}"
            )
        copies += con.execute(
            f"select artifact_uri, replace(artifact_uri, run_uuid, {new}), {new} from runs "
            f"where run_uuid in {limit}"
        ).fetchall()
        con.commit()
        copy += 1
    con.close()
    for src, dest, new_id in copies:  # the copies' artifacts: card and weights
        src, dest = (Path(u.removeprefix("file:")) for u in (src, dest))
        card = json.loads((src / "card.json").read_text())
        suffix = "-" + str(int(new_id[:8], 16))
        old_weights = src / f"{card['model_id']}.safetensors"
        card["model_id"] += suffix
        card["mlflow_run_id"], card["weights"] = new_id, f"{card['model_id']}.safetensors"
        dest.mkdir(parents=True)
        (dest / "card.json").write_text(json.dumps(card))
        (dest / card["weights"]).hardlink_to(old_weights)
    return time.perf_counter() - start


def rebuild(uri: str, out: Path, jobs: int) -> dict:
    from shotgun.library import from_mlflow

    start = time.perf_counter()
    n = from_mlflow(uri, "bench", out, jobs)["n_models"]
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return {
        "n_models": n,
        "seconds": round(seconds, 1),
        "ms_per_model": round(1e3 * seconds / n, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--timed", type=int, default=200, help="models logged at each size")
    p.add_argument("--rounds", type=int, default=5, help="the timed logs, in turns over sizes")
    p.add_argument("--jobs", type=int, default=2, help="processes of from_mlflow")
    p.add_argument("--rebuild-max", type=int, help="rebuild only stores of at most N runs")
    p.add_argument("--scratch", help="folder for the stores (default: a temporary one)")
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]

    from shotgun.tracking import Tracker, finished_runs, init_store, resolve_uri

    out = {"sizes": sizes, "timed": a.timed, "rounds": a.rounds, "jobs": a.jobs}
    with tempfile.TemporaryDirectory(dir=a.scratch) as tmp:
        tmp = Path(tmp)
        card, weights = trained_card(tmp)
        out["weights_mb"] = weights.stat().st_size / 1e6
        stores = {}
        for size in sizes:  # one store of each size
            d = tmp / str(size)
            uri = resolve_uri(None, d)
            experiment_id = init_store(uri, "bench", d / "mlartifacts")
            tracker = Tracker(uri, "bench")
            log_models(tracker, card, weights, 0, sizes[0], d / "weights")
            originals = [run.info.run_id for _, run in finished_runs(uri, "bench")]
            filled = fill(d / "mlflow.db", experiment_id, originals, size)
            stores[size] = (d, uri, tracker)
            out[str(size)] = {"fill_s": round(filled, 1), "log_s": 0.0}
        # The timed logs in turns over the stores: each size sees the same machine load.
        per_round = a.timed // a.rounds
        for r in range(a.rounds):
            for size, (d, _uri, tracker) in stores.items():
                first = sizes[0] + r * per_round
                seconds = log_models(tracker, card, weights, first, per_round, d / "weights")
                out[str(size)]["log_s"] += seconds * per_round
        for size, (d, uri, _) in stores.items():
            row = out[str(size)]
            row["log_s_per_model"] = round(row.pop("log_s") / (per_round * a.rounds), 4)
            row["store_mb"] = round((d / "mlflow.db").stat().st_size / 1e6, 1)
            if a.rebuild_max is None or size <= a.rebuild_max:
                if size == sizes[0]:
                    row["from_mlflow_1_job"] = rebuild(uri, d / "library", 1)
                row[f"from_mlflow_{a.jobs}_jobs"] = rebuild(uri, d / "library", a.jobs)
            row["load_average_1min"] = os.getloadavg()[0]
            print(f"{size}: {row}", file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
