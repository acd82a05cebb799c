"""Scaffolding a declaration for a new table (``shotgun datasets add``).

Numeric columns become properties; the input column and the material class are guessed from the
column names, then from the content. Units, citation, licence and description not given are
written as ``TODO`` placeholders, which fail validation until a person fills them in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from .inputs import canonicalize
from .tables import read_strings

_NAME_HINTS = {
    "smiles": "molecule",
    "formula": "inorganic",
    "composition": "inorganic",
    "structure": "structure",
}
DATA_DIRS = {
    "molecule": "molecules",
    "polymer": "polymers",
    "inorganic": "inorganic",
    "structure": "structures",
}  # data/<folder>/ of each class's bundled tables
_ID_LIKE = re.compile(r"(^|[_\s-])(id|idx|index|no)$", re.IGNORECASE)


def _valid_fraction(values: list[str], kind: str) -> float:
    if not values:
        return 0.0
    _, why = canonicalize(values, kind)
    return sum(w is None for w in why) / len(values)


def guess_input(df) -> tuple[str, str]:
    """(input column, material class) guessed from column names, then from the content."""
    text_cols = [
        c for c in df.columns if pd.to_numeric(df[c], errors="coerce").notna().mean() < 0.5
    ]
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


def _property_columns(df, csv: Path, input_col: str, units: dict, properties: list | None):
    """(numeric columns as (name, values, empty cells), skipped columns as (name, why))."""
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
    return numeric, skipped


def _property_lines(numeric, units: dict) -> tuple[list[str], list[str]]:
    """The YAML lines of the properties, and the columns whose unit is left TODO."""
    lines, todo = [], []
    for col, values, n_missing in numeric:
        key = _key(col)
        unit = units.get(col)
        if unit is None:
            todo.append(col)
        lines.append(f"  {key}:")
        if key != col:
            lines.append(f"    column: {_scalar(col)}")
        lines.append(
            f'    unit: {_scalar(unit or "TODO")}  # unit of the column; "1" if dimensionless'
        )
        lines.append(
            f"    # {len(values)} values, {n_missing} empty; min {values.min():.4g}, "
            f"median {values.median():.4g}, max {values.max():.4g}"
        )
        lines.append(
            "    # transform: log10  # for a positive, heavy-tailed quantity; "
            "min/max: plausible range"
        )
    return lines, todo


def scaffold(
    csv: Path,
    root: Path,
    name: str | None = None,
    input_col: str | None = None,
    kind: str | None = None,
    units: dict[str, str] | None = None,
    properties: list[str] | None = None,
    citation: str | None = None,
    license: str | None = None,
    description: str | None = None,
) -> tuple[str, dict]:
    """YAML text of a new declaration and a summary of what was guessed and left to fill in."""
    units = dict(units or {})
    df = read_strings(csv)
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
    numeric, skipped = _property_columns(df, csv, input_col, units, properties)

    try:
        file = str(csv.resolve().relative_to(root.resolve()))
    except ValueError:
        file = str(csv.resolve())
    name = name or _key(re.sub(r"(\.csv|\.json)?(\.gz)?$", "", csv.name)).lower()
    how = f"guessed from column {input_col!r}" if guessed else "given"
    props, todo = _property_lines(numeric, units)
    lines = [
        "# Declared with `shotgun datasets add`: fill in every TODO, check the guesses, then run",
        "# `shotgun datasets validate` on this file. Keys are explained in "
        "config/datasets/qm9.yaml.",
        f"name: {name}",
        f"file: {_scalar(file)}",
        f"material_class: {kind}  # {how}: molecule | polymer | inorganic | structure",
        f"input: {_scalar(input_col)}",
        "duplicates: mean  # merge rows whose canonical input repeats: "
        "mean | min | max | first | drop",
        "description: "
        + _scalar(description or "TODO: what was measured or computed, how, on which materials"),
        f"citation: {_scalar(citation or 'TODO: reference of the data')}",
        f"license: {_scalar(license or 'TODO: licence of the data, e.g. CC-BY-4.0')}",
        "properties:",
        *props,
        *(f"# not a property: {col!r} ({why})" for col, why in skipped),
    ]
    return "\n".join(lines) + "\n", {
        "name": name,
        "kind": kind,
        "input": input_col,
        "guessed": guessed,
        "properties": [c for c, _, _ in numeric],
        "todo_units": todo,
        "file": file,
    }
