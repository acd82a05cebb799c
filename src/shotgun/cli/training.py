"""Verbs of the training stage: ``init-tracking``, ``train`` (one shard) and ``grid``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .command import Command, add_library_version, add_tracking


class InitTracking(Command):
    name = "init-tracking"
    help = "create the MLflow store and experiment once"

    def add_arguments(self, s):
        add_tracking(s, results_required=True)
        s.add_argument("--uri", dest="tracking_uri", help=argparse.SUPPRESS)  # former spelling
        add_library_version(s)

    def run(self, a):
        from ..tracking import init_store, open_store

        uri = open_store(a.tracking_uri, Path(a.results), create=True)
        exp = init_store(uri, a.library_version, Path(a.results) / "mlartifacts")
        print(f"{uri}: experiment {exp}")


def indices(spec: str) -> list[int]:
    """Model indices of ``first-last`` (inclusive) or of one index."""
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


class Train(Command):
    name = "train"
    help = "train one shard of models of a (dataset, property, descriptor) cell"

    def add_arguments(self, s):
        s.add_argument("--dataset", required=True, help="dataset declaration YAML")
        s.add_argument("--property", required=True)
        s.add_argument("--prepared", required=True, help="prepared property table (Parquet)")
        s.add_argument("--features", required=True, help="feature table of the dataset (Parquet)")
        s.add_argument("--models", required=True, help="model indices, e.g. 0-3")
        s.add_argument("--out", required=True, help="shard folder")
        s.add_argument("--config-dir", default="config/train", help="Hydra config folder")
        s.add_argument("--override", action="append", default=[], help="Hydra override, repeatable")
        add_tracking(s)
        add_library_version(s, required=False)
        s.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
        s.add_argument("--threads", type=int, default=1, help="torch threads")
        s.add_argument("--done", help="completion marker written after the last model (JSON ids)")

    def run(self, a):
        from ..data import load_dataset
        from ..tracking import Tracker, open_store
        from ..training import compose_train_config, load_cell, train_shard

        ds = load_dataset(a.dataset)
        prop = ds.properties[a.property]
        cell = load_cell(
            Path(a.prepared), Path(a.features), ds.name, ds.material_class, prop.name, prop.unit
        )
        cfg = compose_train_config(Path(a.config_dir), a.override)
        tracker = None
        if not a.no_tracking:
            tracker = Tracker(open_store(a.tracking_uri, Path(a.results)), a.library_version)
        cards = train_shard(cell, cfg, indices(a.models), Path(a.out), tracker, a.threads)
        for c in cards:
            m = c.metrics
            if c.failure is not None:
                print(f"{c.model_id} {c.architecture_name} failed: {c.failure}")
                continue
            print(
                f"{c.model_id} {c.architecture_name} test MAE {m.test_mae:.4g} "
                f"R2 {m.test_r2:.3f} ({m.epochs} epochs, {m.seconds:.1f} s)"
            )
        if a.done:  # the shard's completion marker, written last
            Path(a.done).write_text(json.dumps([c.model_id for c in cards]) + "\n")


class Grid(Command):
    name = "grid"
    help = "the shards a workflow config plans; last line: models"

    def add_arguments(self, s):
        s.add_argument("--configfile", required=True, help="workflow config, e.g. config/mdl.yaml")
        s.add_argument("--count", action="store_true", help="print only the number of models")

    def run(self, a):
        from ..training.grid import load_config, resolve_sources, shards

        config = load_config(a.configfile)
        sources = resolve_sources(config)
        planned = list(shards(config, sources))
        if not a.count:
            for s in planned:
                print(f"{s.dataset} {s.property} {s.descriptor} {s.models}")
        cells = {(s.dataset, s.property, s.descriptor) for s in planned}
        print(f"{len(sources)} datasets, {len(cells)} cells, {len(planned)} shards; models:")
        print(sum(s.n_models for s in planned))


COMMANDS = [InitTracking(), Train(), Grid()]
