"""Verbs of the data stages: ``prepare``, ``featurize`` and ``datasets {list,validate,add}``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .command import Command, Group, add_kind


class Prepare(Command):
    name = "prepare"
    help = "clean one source dataset into per-property tables"

    def add_arguments(self, s):
        s.add_argument(
            "--dataset", required=True, help="dataset declaration (config/datasets/*.yaml)"
        )
        s.add_argument("--out", required=True, help="output folder")
        s.add_argument("--root", default=".", help="folder the declared data file is relative to")
        s.add_argument("--max-rows", type=int, default=None, help="seeded subsample per property")
        s.add_argument("--seed", type=int, default=0, help="seed of the subsample")

    def run(self, a):
        import pandas as pd

        from ..data import load_dataset, prepare

        ds = load_dataset(a.dataset)
        out = Path(a.out)
        report = prepare(ds, out, Path(a.root), max_rows=a.max_rows, seed=a.seed)
        # The union of kept inputs over all properties: what the featurize stage computes.
        tables = [pd.read_parquet(out / f"{p}.parquet", columns=["input"]) for p in ds.properties]
        inputs = pd.concat(tables)["input"].drop_duplicates().sort_values()
        inputs.to_frame().to_csv(out / "inputs.csv", index=False)
        print(json.dumps(report, indent=1))


def parameters(pairs: list[str]) -> dict:
    """``key=value`` strings as a dict; values parsed as JSON when possible (3, true, [..])."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--descriptor-param expects key=value, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


class Featurize(Command):
    name = "featurize"
    help = "compute a descriptor for a column of inputs"

    def add_arguments(self, s):
        from ..descriptors import DESCRIPTORS

        s.add_argument("--data", required=True, help="CSV or Parquet file")
        s.add_argument(
            "--input",
            required=True,
            help="column of SMILES, formulas or structures (pymatgen Structure JSON)",
        )
        add_kind(s, "input kind", required=True)
        s.add_argument(
            "--descriptor",
            required=True,
            choices=sorted(DESCRIPTORS),
            metavar="DESCRIPTOR",
            help=f"one of {', '.join(DESCRIPTORS)}",
        )
        s.add_argument(
            "--descriptor-param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="descriptor parameter, repeatable (e.g. radius=2, counts=false)",
        )
        s.add_argument(
            "--out", required=True, help="output Parquet: input, ok, one column per feature"
        )
        s.add_argument(
            "--n-workers",
            type=int,
            default=None,
            help="processes of the local Dask cluster started for large inputs "
            "(default: the CPUs this process may use; 1 featurizes in-process)",
        )
        s.add_argument(
            "--scheduler",
            default=None,
            metavar="ADDRESS",
            help="Dask scheduler to send the work to instead (e.g. tcp://host:8786)",
        )
        s.add_argument("--cache", default=None, help="feature cache folder (content addressed)")

    def run(self, a):
        from ..data.tables import read_table
        from ..descriptors import featurize_inputs, make_descriptor, write_features
        from ..parallel import available_cpus

        d = make_descriptor(a.descriptor, parameters(a.descriptor_param))
        if a.kind not in d.kinds:
            raise ValueError(
                f"descriptor {a.descriptor!r} accepts {', '.join(d.kinds)} inputs, not {a.kind}"
            )
        inputs = read_table(Path(a.data), a.input)[a.input].astype(str).tolist()
        try:
            X, ok, spec, names = featurize_inputs(
                inputs,
                d,
                n_workers=a.n_workers or available_cpus(),
                cache_dir=a.cache,
                progress=True,
                scheduler_address=a.scheduler,
            )
        except ConnectionError as err:  # --scheduler does not answer
            raise ValueError(str(err)) from err
        write_features(Path(a.out), inputs, X, ok, spec, names)
        failed = [i + 1 for i in range(len(ok)) if not ok[i]]
        print(
            f"{a.out}: {len(inputs)} rows, {len(names)} features, {len(failed)} failed"
            + (f" (rows {failed[:20]}{' ...' if len(failed) > 20 else ''})" if failed else "")
        )


class DatasetsList(Command):
    name = "list"
    help = "one row per source property with kept / quarantined rows"

    def add_arguments(self, s):
        s.add_argument(
            "--datasets", default="config/datasets", help="folder of dataset declarations"
        )
        s.add_argument("--root", default=".", help="folder the declared data files are relative to")
        s.add_argument("--format", choices=("table", "json"), default="table", help="output format")
        s.add_argument(
            "--cache-dir",
            default=None,
            help="cache of cleaning reports (default: $SHOTGUN_CACHE_DIR or ~/.cache/shotgun)",
        )
        s.add_argument(
            "--no-counts", action="store_true", help="skip the cleaning pass; rows are null"
        )
        s.add_argument("--jobs", type=int, default=1, help="processes cleaning uncached datasets")

    def run(self, a):
        from ..data.summaries import LIST_KEYS, list_records

        records, problems = list_records(
            Path(a.datasets),
            Path(a.root),
            a.cache_dir and Path(a.cache_dir),
            counts=not a.no_counts,
            jobs=a.jobs,
        )
        if a.format == "json":
            print(json.dumps(records, indent=1))
        else:
            rows = [[str(r[k]) if r[k] is not None else "-" for k in LIST_KEYS] for r in records]
            widths = [
                max(len(k), *(len(row[i]) for row in rows)) if rows else len(k)
                for i, k in enumerate(LIST_KEYS)
            ]
            numeric = {"rows", "quarantined"}
            for row in [list(LIST_KEYS), *rows]:
                print(
                    "  ".join(
                        c.rjust(w) if k in numeric else c.ljust(w)
                        for c, w, k in zip(row, widths, LIST_KEYS)
                    ).rstrip()
                )
            n_sets = len({r["dataset"] for r in records})
            print(f"{n_sets} datasets, {len(records)} properties")
        for p in problems:
            print(f"shotgun: error: {p}", file=sys.stderr)
        return 1 if problems else 0


class DatasetsValidate(Command):
    name = "validate"
    help = "check declarations: schema, placeholders, data columns"

    def add_arguments(self, s):
        s.add_argument("files", nargs="+", metavar="FILE.yaml")
        s.add_argument("--root", default=".", help="folder the declared data files are relative to")

    def run(self, a):
        from ..data import DatasetError, validate_declaration

        failed = 0
        for f in a.files:
            try:
                print(validate_declaration(Path(f), Path(a.root)))
            except DatasetError as err:
                failed += 1
                print(err, file=sys.stderr)
        return 1 if failed else 0


def unit_pairs(pairs: list[str]) -> dict[str, str]:
    """``COLUMN=UNIT`` strings as a dict."""
    units = {}
    for p in pairs:
        col, sep, unit = p.partition("=")
        if not sep or not col or not unit.strip():
            raise ValueError(f"--unit {p!r}: expected COLUMN=UNIT, e.g. Tg=degC")
        units[col] = unit.strip()
    return units


class DatasetsAdd(Command):
    name = "add"
    help = "write a declaration for a new CSV (or JSON) table"
    description = (
        "Scaffold config/datasets/<name>.yaml from a table: numeric columns become "
        "properties; units, citation and licence not given stay TODO and fail "
        "validation."
    )

    def add_arguments(self, s):
        s.add_argument("file", metavar="CSV", help="the data table (CSV, .csv.gz, or JSON)")
        s.add_argument("--name", help="dataset name (default: from the file name)")
        s.add_argument(
            "--input", help="column of SMILES, formulas or structures (default: guessed)"
        )
        add_kind(s, "material class (default: guessed from the input)")
        s.add_argument(
            "--unit",
            action="append",
            default=[],
            metavar="COLUMN=UNIT",
            help="unit of a property column, repeatable; use 1 for dimensionless",
        )
        s.add_argument(
            "--property",
            action="append",
            metavar="COLUMN",
            help="use only these columns as properties (repeatable; default: every numeric one)",
        )
        s.add_argument("--description")
        s.add_argument("--citation")
        s.add_argument("--license")
        s.add_argument(
            "--datasets", default="config/datasets", help="folder to write <name>.yaml into"
        )
        s.add_argument("--out", help="output YAML (default: <datasets>/<name>.yaml)")
        s.add_argument(
            "--root", default=".", help="the `file:` path is written relative to this folder"
        )
        s.add_argument("--force", action="store_true", help="overwrite an existing declaration")

    def run(self, a):
        from ..data.scaffold import DATA_DIRS, scaffold

        csv = Path(a.file)
        if not csv.is_file():
            raise FileNotFoundError(f"{csv}: no such file")
        text, info = scaffold(
            csv,
            Path(a.root),
            name=a.name,
            input_col=a.input,
            kind=a.kind,
            units=unit_pairs(a.unit),
            properties=a.property or None,
            citation=a.citation,
            license=a.license,
            description=a.description,
        )
        out = Path(a.out) if a.out else Path(a.datasets) / f"{info['name']}.yaml"
        if out.stem != info["name"]:
            raise ValueError(f"{out}: the file stem must equal the dataset name {info['name']!r}")
        if out.exists() and not a.force:
            raise ValueError(f"{out} exists: pass --force to overwrite")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        n = len(info["properties"])
        print(
            f"{out}: {info['kind']} dataset {info['name']!r}, input column {info['input']!r}"
            f"{' (guessed)' if info['guessed'] else ''}, {n} propert{'y' if n == 1 else 'ies'}"
        )
        if Path(info["file"]).is_absolute():
            print(
                f"note: {csv} is outside {a.root}: copy it under data/{DATA_DIRS[info['kind']]}/ "
                "and point `file:` at the copy"
            )
        todo = [k for k in ("description", "citation", "license") if getattr(a, k) is None]
        if info["todo_units"] or todo:
            print("to fill in: " + ", ".join(todo + [f"unit of {c}" for c in info["todo_units"]]))
        print(f"then: shotgun datasets validate {out}")
        return 0


class Datasets(Group):
    name = "datasets"
    help = "list, validate and declare source datasets"
    description = (
        "list: one record per source property with its kept and quarantined rows (a "
        "full cleaning pass, cached per content hash); validate: declarations against "
        "the schema and their data file's columns; add: a declaration for a new table."
    )
    commands = (DatasetsList(), DatasetsValidate(), DatasetsAdd())


COMMANDS = [Prepare(), Featurize(), Datasets()]
