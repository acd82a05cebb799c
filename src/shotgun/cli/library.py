"""Verbs of the library: ``library {build,list,query,show,verify,diff,pack,unpack,from-mlflow}``
and ``predict`` (a library model or the winner saved by a transfer run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .command import Command, Group, add_kind, add_library_version, add_tracking

INDEX_VIEW = [
    "model_id",
    "material_class",
    "dataset",
    "property",
    "unit",
    "descriptor",
    "architecture",
    "n_train",
    "test_mae",
    "test_r2",
]


def add_query(s) -> None:
    add_kind(s, "material class of the source data")
    s.add_argument("--property")
    s.add_argument("--descriptor")
    s.add_argument("--dataset")
    s.add_argument("--min-r2", type=float, help="minimum test R2")
    s.add_argument("--top", type=int, help="best N by test R2")


def query_args(a) -> dict:
    q = {
        "kind": a.kind,
        "property": a.property,
        "descriptor": a.descriptor,
        "dataset": a.dataset,
        "min_r2": a.min_r2,
        "top": a.top,
    }
    return {k: v for k, v in q.items() if v is not None}


class Build(Command):
    name = "build"
    help = "assemble trained shards into a library"

    def add_arguments(self, s):
        s.add_argument("shards", nargs="+", help="shard folders")
        s.add_argument("--out", required=True, help="library path (a link to the current build)")
        add_library_version(s)
        s.add_argument(
            "--weights-dtype",
            help="how weights are stored: float16 (the default; predictions within 2e-3 of "
            "their spread under float32), bfloat16 or float32",
        )

    def run(self, a):
        from ..library import build_library

        dtype = {"weights_dtype": a.weights_dtype} if a.weights_dtype else {}
        manifest = build_library(
            [Path(p) for p in a.shards], Path(a.out), a.library_version, **dtype
        )
        print(f"{a.out}: library {a.library_version} with {manifest['n_models']} models")


class Query(Command):
    help = "query the index: models by class, property, descriptor, R2"

    def __init__(self, name: str):
        self.name = name

    def add_arguments(self, s):
        s.add_argument("library")
        add_query(s)
        s.add_argument("--format", choices=("table", "json"), default="table", help="output format")

    def run(self, a):
        from ..library import Library

        q = Library.open(a.library).query(**query_args(a))
        if a.format == "json":
            print(q.to_json(orient="records", indent=1))
        else:
            print(q[INDEX_VIEW].to_string(index=False) if len(q) else "no models match")


class Show(Command):
    name = "show"
    help = "render a model card"

    def add_arguments(self, s):
        s.add_argument("library")
        s.add_argument("model_id")
        s.add_argument("--format", choices=("text", "json"), default="text", help="output format")

    def run(self, a):
        from ..library import Library

        card = Library.open(a.library).card(a.model_id)
        print(card.to_json() if a.format == "json" else card.render())


class Verify(Command):
    name = "verify"
    help = "check every file against the manifest"

    def add_arguments(self, s):
        s.add_argument("library")

    def run(self, a):
        from ..library import Library

        lib = Library.open(a.library)
        problems = lib.verify()
        for p in problems:
            print(p)
        print(
            f"{a.library}: {len(lib.manifest['files'])} files, "
            + ("all checksums verify" if not problems else f"{len(problems)} problems")
        )
        return 1 if problems else 0


class Diff(Command):
    name = "diff"
    help = "models added, removed and changed between two libraries"

    def add_arguments(self, s):
        s.add_argument("a")
        s.add_argument("b")
        s.add_argument("--format", choices=("text", "json"), default="text", help="output format")

    def run(self, a):
        from ..library import Library, diff_libraries

        d = diff_libraries(Library.open(a.a), Library.open(a.b))
        if a.format == "json":
            print(json.dumps(d, indent=1))
            return
        print(
            f"{a.a} ({d['a']['version']}, {d['a']['n_models']} models) -> "
            f"{a.b} ({d['b']['version']}, {d['b']['n_models']} models)"
        )
        for key in ("added", "removed", "changed"):
            print(f"{key}: {len(d[key])}" + "".join(f"\n  {m}" for m in d[key]))
        print(f"unchanged: {d['unchanged']}")


class Pack(Command):
    name = "pack"
    help = "write a library, or the subset a query selects, to .tar.gz"

    def add_arguments(self, s):
        s.add_argument("library")
        s.add_argument("archive", help="the .tar.gz to write")
        add_query(s)
        s.add_argument("--force", action="store_true", help="overwrite an existing archive")

    def run(self, a):
        from ..library import Library, pack

        n = pack(Library.open(a.library), Path(a.archive), force=a.force, **query_args(a))
        print(f"{a.archive}: {n} models")


class Unpack(Command):
    name = "unpack"
    help = "extract a packed library, verifying every checksum"

    def add_arguments(self, s):
        s.add_argument("archive")
        s.add_argument("dest", help="new folder")

    def run(self, a):
        from ..library import unpack

        lib = unpack(Path(a.archive), Path(a.dest))
        print(f"{a.dest}: library {lib.version} with {len(lib.index)} models, checksums verified")


class FromMlflow(Command):
    name = "from-mlflow"
    help = "rebuild a library from the tracking store"

    def add_arguments(self, s):
        s.add_argument("--out", required=True, help="new library folder")
        s.add_argument(
            "--jobs",
            type=int,
            help="processes listing and downloading the runs (default: the CPUs, at most 8)",
        )
        add_library_version(s)
        add_tracking(s)

    def run(self, a):
        import os

        from ..library import from_mlflow
        from ..tracking import open_store

        if a.jobs is not None and a.jobs < 1:
            raise ValueError(f"--jobs: at least 1, got {a.jobs}")
        jobs = a.jobs or min(os.cpu_count() or 1, 8)
        uri = open_store(a.tracking_uri, Path(a.results))
        manifest = from_mlflow(uri, a.library_version, Path(a.out), jobs)
        print(f"{a.out}: library {a.library_version} with {manifest['n_models']} models from {uri}")


class LogPyfunc(Command):
    name = "log-pyfunc"
    help = "log library models as MLflow pyfunc models in their runs (runs:/<run id>/model)"
    description = (
        "Log library models as MLflow pyfunc models (models-from-code, no pickle), each in its "
        "own training run, to load with mlflow.pyfunc.load_model('runs:/<run id>/model'). "
        "The store is the one the library was trained into."
    )

    def add_arguments(self, s):
        s.add_argument("library")
        s.add_argument("model_ids", nargs="+", metavar="model_id")
        add_tracking(s)

    def run(self, a):
        from ..library import Library
        from ..tracking import log_pyfunc, open_store

        uri, lib = open_store(a.tracking_uri, Path(a.results)), Library.open(a.library)
        for mid in a.model_ids:
            print(f"{mid}: {log_pyfunc(uri, lib.card(mid))}")


class Report(Command):
    name = "report"
    help = "source-model quality: report.md, report.html, r2.png and cells.csv"

    def add_arguments(self, s):
        s.add_argument("library")
        s.add_argument("--out", required=True, help="output folder")

    def run(self, a):
        from ..library.report import write_library_report

        paths = write_library_report(Path(a.library), Path(a.out))
        print(f"{a.out}: " + ", ".join(p.name for p in paths))


class LibraryGroup(Group):
    name = "library"
    help = "build, query, verify, diff and share model libraries"
    commands = (
        Build(),
        Query("list"),
        Query("query"),
        Show(),
        Verify(),
        Diff(),
        Pack(),
        Unpack(),
        FromMlflow(),
        LogPyfunc(),
        Report(),
    )


class Predict(Command):
    name = "predict"
    help = (
        "predict with a library model (output in its unit) or with the winner saved by "
        "`shotgun transfer` (a transfer pipeline, a stack or a baseline)"
    )

    def add_arguments(self, s):
        s.add_argument("--library", help="library folder (with --model: a model id)")
        s.add_argument(
            "--model",
            required=True,
            help="library model id, or without --library a saved transfer model folder "
            "(the transfer output's model/)",
        )
        s.add_argument("--data", required=True, help="CSV of SMILES or formulas")
        s.add_argument("--input", required=True, help="input column")
        add_kind(
            s,
            "material class of the inputs when not the model's own (e.g. molecule for a "
            "composition model: through organic_composition)",
        )
        s.add_argument(
            "--out",
            help="output CSV (default: standard output); the count of inputs that could not be "
            "featurized goes to standard error",
        )

    def run(self, a):
        import pandas as pd

        from ..data.tables import read_table

        df = read_table(Path(a.data), a.input)
        inputs = df[a.input].astype(str).tolist()
        if a.library:  # a library model, in its property's unit
            from ..library import Library

            model = Library.open(a.library).load(a.model)
            pred = model.predict(inputs, kind=a.kind)
            column = f"{model.card.property} [{model.card.unit}]"
        else:  # the winner saved by `shotgun transfer` (OUT/model)
            from ..transfer import TransferModel

            if not (Path(a.model) / "model.json").is_file():
                raise FileNotFoundError(
                    f"{a.model}: not a saved transfer model (no model.json); "
                    "give --library for a library model id"
                )
            model = TransferModel(Path(a.model))
            pred = model.predict(inputs)
            unit = model.meta.get("unit")
            column = model.meta["target"] + (f" [{unit}]" if unit else "")
        out = pd.DataFrame({a.input: df[a.input], column: pred})
        if a.out:
            out.to_csv(a.out, index=False)
        else:
            print(out.to_csv(index=False), end="")
        print(
            f"{a.out or a.data}: {len(out)} inputs, {int(pd.isna(pred).sum())} not featurizable",
            file=sys.stderr,
        )


COMMANDS = [LibraryGroup(), Predict()]
