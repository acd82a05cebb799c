"""``shotgun datasets``: list, validate and scaffold source dataset declarations.

``list`` prints one record per source property with its kept and quarantined row counts, from a
full cleaning pass cached per content hash (``shotgun.data.summarize``); ``validate`` checks
declarations against the schema and their data file's columns; ``add`` writes a declaration
for a new table, with ``TODO`` placeholders that fail validation until a person fills them in.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from . import INPUT_KINDS as KINDS  # the classes a dataset may declare
LIST_KEYS = ("dataset", "property", "material_class", "unit", "rows", "quarantined")


# ------------------------------------------------------------------------------ list


def _summaries(datasets: dict, root: Path, cache_dir: Path | None, jobs: int) -> dict:
    """name -> report, or the error message; uncached datasets are cleaned in ``jobs`` processes."""
    from concurrent.futures import ProcessPoolExecutor

    from .data import DatasetError, summarize

    out: dict[str, dict | str] = {}
    todo = []
    for name, ds in datasets.items():
        try:
            report = summarize(ds, root, cache_dir, compute=False)
        except (DatasetError, OSError) as err:
            out[name] = str(err)
            continue
        if report is None:
            todo.append(name)
        else:
            out[name] = report
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo))) as pool:
            futures = {n: pool.submit(summarize, datasets[n], root, cache_dir) for n in todo}
            for name, fut in futures.items():
                try:
                    out[name] = fut.result()
                except DatasetError as err:
                    out[name] = str(err)
    else:
        for name in todo:
            try:
                out[name] = summarize(datasets[name], root, cache_dir)
            except DatasetError as err:
                out[name] = str(err)
    return out


def list_records(directory: Path, root: Path, cache_dir: Path | None = None, counts: bool = True,
                 jobs: int = 1) -> tuple[list[dict], list[str]]:
    """One record per declared source property (``LIST_KEYS``) and the problems met."""
    from .data import load_datasets

    datasets = load_datasets(directory)
    reports = _summaries(datasets, root, cache_dir, jobs) if counts else {}
    records, problems = [], []
    for name, ds in datasets.items():
        report = reports.get(name)
        if isinstance(report, str):
            problems.append(report)
            report = None
        for prop in ds.properties.values():
            entry = report["properties"].get(prop.name) if report else None
            records.append({
                "dataset": name,
                "property": prop.name,
                "material_class": ds.material_class,
                "unit": prop.unit,
                "rows": entry["kept"] if entry else None,
                "quarantined": sum(entry["quarantined"].values()) if entry else None,
            })
    return records, problems


def _list(a) -> int:
    records, problems = list_records(Path(a.datasets), Path(a.root), a.cache_dir and Path(a.cache_dir),
                                     counts=not a.no_counts, jobs=a.jobs)
    if a.format == "json":
        print(json.dumps(records, indent=1))
    else:
        rows = [[str(r[k]) if r[k] is not None else "-" for k in LIST_KEYS] for r in records]
        widths = [max(len(k), *(len(row[i]) for row in rows)) if rows else len(k)
                  for i, k in enumerate(LIST_KEYS)]
        numeric = {"rows", "quarantined"}
        for row in [list(LIST_KEYS), *rows]:
            print("  ".join(c.rjust(w) if k in numeric else c.ljust(w)
                            for c, w, k in zip(row, widths, LIST_KEYS)).rstrip())
        n_sets = len({r["dataset"] for r in records})
        print(f"{n_sets} datasets, {len(records)} properties")
    for p in problems:
        print(f"shotgun: error: {p}", file=sys.stderr)
    return 1 if problems else 0


# -------------------------------------------------------------------------- validate


def validate_file(path: Path, root: Path) -> str:
    """A one-line summary of a valid declaration; raises ``DatasetError`` otherwise."""
    from .data import DatasetError, load_dataset, read_columns

    ds = load_dataset(path)
    columns = set(read_columns(ds, root))
    wanted = [ds.input, *(p.column for p in ds.properties.values())]
    missing = [c for c in dict.fromkeys(wanted) if c not in columns]
    if missing:
        raise DatasetError(f"{path}: columns {missing} are not in {ds.file}; found {sorted(columns)}")
    n = len(ds.properties)
    return f"{path}: ok ({ds.material_class}, {n} propert{'y' if n == 1 else 'ies'} from {ds.file})"


def _validate(a) -> int:
    from .data import DatasetError

    failed = 0
    for f in a.files:
        try:
            print(validate_file(Path(f), Path(a.root)))
        except DatasetError as err:
            failed += 1
            print(err, file=sys.stderr)
    return 1 if failed else 0


# ------------------------------------------------------------------------------- add

_NAME_HINTS = {"smiles": "molecule", "formula": "inorganic", "composition": "inorganic",
               "structure": "structure"}
_DATA_DIRS = {"molecule": "molecules", "polymer": "polymers", "inorganic": "inorganic",
              "structure": "structures"}
_ID_LIKE = re.compile(r"(^|[_\s-])(id|idx|index|no)$", re.IGNORECASE)


def _valid_fraction(values: list[str], kind: str) -> float:
    from .data import canonicalize

    if not values:
        return 0.0
    _, why = canonicalize(values, kind)
    return sum(w is None for w in why) / len(values)


def guess_input(df) -> tuple[str, str]:
    """(input column, material class) guessed from column names, then from the content."""
    import pandas as pd

    text_cols = [c for c in df.columns if pd.to_numeric(df[c], errors="coerce").notna().mean() < 0.5]
    samples = {c: [v for v in df[c].astype(str).str.strip() if v][:100] for c in text_cols}
    ranked = sorted(text_cols, key=lambda c: not any(h in c.lower() for h in _NAME_HINTS))
    for col in ranked:
        vals = samples[col]
        if vals and sum(v.startswith("{") for v in vals) > 0.8 * len(vals):
            if _valid_fraction(vals, "structure") > 0.8:
                return col, "structure"
            continue
        if sum("*" in v for v in vals) > 0.8 * len(vals) and _valid_fraction(vals, "polymer") > 0.8:
            return col, "polymer"
        for kind in ("molecule", "inorganic"):
            if _valid_fraction(vals, kind) > 0.8:
                return col, kind
    raise ValueError("no column looks like SMILES, formulas or structures: give --input and --kind")


def _key(column: str) -> str:
    key = re.sub(r"[^A-Za-z0-9_]+", "_", column).strip("_")
    return key if re.match(r"^[A-Za-z]", key) else f"p_{key}"


def _scalar(v) -> str:
    return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid double-quoted YAML scalar


def scaffold(csv: Path, root: Path, name: str | None = None, input_col: str | None = None,
             kind: str | None = None, units: dict[str, str] | None = None,
             properties: list[str] | None = None, citation: str | None = None,
             license: str | None = None, description: str | None = None) -> tuple[str, dict]:
    """YAML text of a new declaration and a summary of what was guessed and left to fill in."""
    import pandas as pd

    from .data import _json_frame, _is_json, _read_text

    units = dict(units or {})
    df = (_json_frame(_read_text(csv, csv), csv) if _is_json(csv)
          else pd.read_csv(csv, dtype=str, keep_default_na=False))
    if df.empty:
        raise ValueError(f"{csv}: no data rows")
    guessed = input_col is None or kind is None
    if input_col is None:
        input_col, guess = guess_input(df)
        kind = kind or guess
    elif input_col not in df.columns:
        raise ValueError(f"{csv}: no column {input_col!r}; found {list(df.columns)}")
    elif kind is None:
        _, kind = guess_input(df[[input_col]])

    numeric, skipped = [], []
    for col in df.columns:
        if col == input_col:
            continue
        cells = df[col].astype(str).str.strip()
        filled = cells[cells != ""]
        num = pd.to_numeric(filled, errors="coerce")
        if len(filled) == 0 or num.notna().mean() < 0.9:
            skipped.append((col, "not numeric"))
        elif properties is None and _ID_LIKE.search(col):
            skipped.append((col, "identifier-like"))
        else:
            numeric.append((col, num.dropna().astype(float), len(df) - len(filled)))
    if properties is not None:
        unknown = sorted(set(properties) - {c for c, _, _ in numeric})
        if unknown:
            raise ValueError(f"{csv}: --property {unknown} not numeric columns of the file")
        numeric = [n for n in numeric if n[0] in properties]
    unused_units = sorted(set(units) - {c for c, _, _ in numeric})
    if unused_units:
        raise ValueError(f"--unit given for {unused_units}, which are not property columns")
    if not numeric:
        raise ValueError(f"{csv}: no numeric property columns")

    try:
        file = str(csv.resolve().relative_to(root.resolve()))
    except ValueError:
        file = str(csv.resolve())
    name = name or _key(re.sub(r"(\.csv|\.json)?(\.gz)?$", "", csv.name)).lower()
    how = f"guessed from column {input_col!r}" if guessed else "given"
    lines = [
        "# Declared with `shotgun datasets add`: fill in every TODO, check the guesses, then run",
        "# `shotgun datasets validate` on this file. Keys are explained in config/datasets/qm9.yaml.",
        f"name: {name}",
        f"file: {_scalar(file)}",
        f"material_class: {kind}  # {how}: molecule | polymer | inorganic | structure",
        f"input: {_scalar(input_col)}",
        "duplicates: mean  # merge rows whose canonical input repeats: mean | min | max | first | drop",
        f"description: {_scalar(description or 'TODO: what was measured or computed, how, on which materials')}",
        f"citation: {_scalar(citation or 'TODO: reference of the data')}",
        f"license: {_scalar(license or 'TODO: licence of the data, e.g. CC-BY-4.0')}",
        "properties:",
    ]
    todo = []
    for col, values, n_missing in numeric:
        key = _key(col)
        unit = units.get(col)
        if unit is None:
            todo.append(col)
        lines.append(f"  {key}:")
        if key != col:
            lines.append(f"    column: {_scalar(col)}")
        lines.append(f"    unit: {_scalar(unit or 'TODO')}  # unit of the column; \"1\" if dimensionless")
        lines.append(f"    # {len(values)} values, {n_missing} empty; min {values.min():.4g}, "
                     f"median {values.median():.4g}, max {values.max():.4g}")
        lines.append("    # transform: log10  # for a positive, heavy-tailed quantity; min/max: plausible range")
    for col, why in skipped:
        lines.append(f"# not a property: {col!r} ({why})")
    return "\n".join(lines) + "\n", {"name": name, "kind": kind, "input": input_col, "guessed": guessed,
                                     "properties": [c for c, _, _ in numeric], "todo_units": todo,
                                     "file": file}


def _unit_pairs(pairs: list[str]) -> dict[str, str]:
    units = {}
    for p in pairs:
        col, sep, unit = p.partition("=")
        if not sep or not col or not unit.strip():
            raise ValueError(f"--unit {p!r}: expected COLUMN=UNIT, e.g. Tg=degC")
        units[col] = unit.strip()
    return units


def _add(a) -> int:
    csv = Path(a.file)
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: no such file")
    text, info = scaffold(csv, Path(a.root), name=a.name, input_col=a.input, kind=a.kind,
                          units=_unit_pairs(a.unit), properties=a.property or None,
                          citation=a.citation, license=a.license, description=a.description)
    out = Path(a.out) if a.out else Path(a.datasets) / f"{info['name']}.yaml"
    if out.stem != info["name"]:
        raise ValueError(f"{out}: the file stem must equal the dataset name {info['name']!r}")
    if out.exists() and not a.force:
        raise ValueError(f"{out} exists: pass --force to overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    n = len(info["properties"])
    print(f"{out}: {info['kind']} dataset {info['name']!r}, input column {info['input']!r}"
          f"{' (guessed)' if info['guessed'] else ''}, {n} propert{'y' if n == 1 else 'ies'}")
    if Path(info["file"]).is_absolute():
        print(f"note: {csv} is outside {a.root}: copy it under data/{_DATA_DIRS[info['kind']]}/ "
              "and point `file:` at the copy")
    todo = [k for k in ("description", "citation", "license") if getattr(a, k) is None]
    if info["todo_units"] or todo:
        print("to fill in: " + ", ".join(todo + [f"unit of {c}" for c in info["todo_units"]]))
    print(f"then: shotgun datasets validate {out}")
    return 0


# -------------------------------------------------------------------------- parser


def add_parser(sub) -> None:
    """Register ``shotgun datasets {list,validate,add}`` on the top-level subparsers."""
    p = sub.add_parser("datasets", help="list, validate and declare source datasets")
    dsub = p.add_subparsers(dest="datasets_command", required=True)

    s = dsub.add_parser("list", help="one row per source property with kept / quarantined rows")
    s.add_argument("--datasets", default="config/datasets", help="folder of dataset declarations")
    s.add_argument("--root", default=".", help="folder the declared data files are relative to")
    s.add_argument("--format", choices=("table", "json"), default="table")
    s.add_argument("--cache-dir", default=None,
                   help="cache of cleaning reports (default: $SHOTGUN_CACHE_DIR or ~/.cache/shotgun)")
    s.add_argument("--no-counts", action="store_true", help="skip the cleaning pass; rows are null")
    s.add_argument("--jobs", type=int, default=1, help="processes cleaning uncached datasets")
    s.set_defaults(func=_list)

    s = dsub.add_parser("validate", help="check declarations: schema, placeholders, data columns")
    s.add_argument("files", nargs="+", metavar="FILE.yaml")
    s.add_argument("--root", default=".", help="folder the declared data files are relative to")
    s.set_defaults(func=_validate)

    s = dsub.add_parser(
        "add", help="write a declaration for a new CSV (or JSON) table",
        description="Scaffold config/datasets/<name>.yaml from a table: numeric columns become "
                    "properties; units, citation and licence not given stay TODO and fail validation.")
    s.add_argument("file", metavar="CSV", help="the data table (CSV, .csv.gz, or JSON)")
    s.add_argument("--name", help="dataset name (default: from the file name)")
    s.add_argument("--input", help="column of SMILES, formulas or structures (default: guessed)")
    s.add_argument("--kind", choices=KINDS, help="material class (default: guessed from the input)")
    s.add_argument("--unit", action="append", default=[], metavar="COLUMN=UNIT",
                   help="unit of a property column, repeatable; use 1 for dimensionless")
    s.add_argument("--property", action="append", metavar="COLUMN",
                   help="use only these columns as properties (repeatable; default: every numeric one)")
    s.add_argument("--description")
    s.add_argument("--citation")
    s.add_argument("--license")
    s.add_argument("--datasets", default="config/datasets", help="folder to write <name>.yaml into")
    s.add_argument("--out", help="output YAML (default: <datasets>/<name>.yaml)")
    s.add_argument("--root", default=".", help="the `file:` path is written relative to this folder")
    s.add_argument("--force", action="store_true", help="overwrite an existing declaration")
    s.set_defaults(func=_add)
