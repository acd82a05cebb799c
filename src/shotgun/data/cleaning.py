"""Cleaning a source dataset: per-property tables, the quarantine and a report whose counts add up.

``prepare`` turns the raw table (CSV, or JSON for structures) into one parquet file per property
(columns ``input`` and ``target``), a ``quarantine.csv`` listing every rejected (row, property)
pair with a reason code, and a ``report.json`` with the counts (``rows_in = kept + quarantined +
subsampled_out`` for every property).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..checksums import sha256
from .declarations import Dataset, Property
from .inputs import canonicalize
from .tables import read_source_table

# Strings read as a missing target value (compared after strip + lower-case).
_MISSING_STRINGS = frozenset({"", "nan", "-nan", "na", "n/a", "null", "none", "<na>"})


def _parse_targets(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Float values plus a reason array ('' where the value is usable)."""
    stripped = values.str.strip()
    num = pd.to_numeric(stripped, errors="coerce").to_numpy(dtype=np.float64)
    for i in np.flatnonzero(np.isnan(num)):  # pandas gives NaN for overflow such as "1e999"
        try:
            num[i] = float(stripped.iat[i])
        except ValueError:
            pass
    missing = stripped.str.lower().isin(_MISSING_STRINGS).to_numpy()
    reason = np.full(len(values), "", dtype=object)
    reason[np.isnan(num)] = "non_numeric_target"
    reason[missing] = "missing_target"
    reason[np.isinf(num)] = "non_finite_target"
    return num, reason


def _merge_duplicates(
    keys: np.ndarray, values: np.ndarray, rows: np.ndarray, policy: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Merge repeated keys. Returns (kept row indices, kept values, removed row indices, reason)."""
    df = pd.DataFrame({"key": keys, "value": values, "row": rows})
    group = df.groupby("key", sort=False)
    size = group["value"].transform("size").to_numpy()
    if policy == "drop":
        dup = size > 1
        return rows[~dup], values[~dup], rows[dup], "duplicate_dropped"
    first = ~df.duplicated("key", keep="first").to_numpy()  # rows are in file order
    merged = values if policy == "first" else group["value"].transform(policy).to_numpy()
    return rows[first], merged[first], rows[~first], "duplicate_merged"


def _target_values(prop: Property, column: pd.Series, reason: np.ndarray) -> np.ndarray:
    """The property's values after conversion and transform; marks rejected rows in ``reason``
    (an input's reason, where it has one, wins)."""
    values, why = _parse_targets(column)
    reason[:] = np.where(reason != "", reason, why)
    values = values * prop.factor
    if prop.transform == "abs":
        values = np.abs(values)
    elif prop.transform == "log10":
        bad = (reason == "") & (values <= 0)
        reason[bad] = "log_of_nonpositive"
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.log10(values)
    ok = reason == ""
    if prop.min is not None:
        reason[ok & (values < prop.min)] = "out_of_range"
    if prop.max is not None:
        reason[ok & (values > prop.max)] = "out_of_range"
    return values


def _clean_property(
    dataset: Dataset,
    prop: Property,
    column: pd.Series,
    canon: np.ndarray,
    in_reason: np.ndarray,
    raw_input: np.ndarray,
    max_rows: int | None,
    seed: int,
):
    """(table, quarantined rows, report entry) of one property."""
    n = len(column)
    rows = np.arange(1, n + 1)
    reason = in_reason.copy()
    values = _target_values(prop, column, reason)
    ok = reason == ""
    kept_rows, kept_vals, removed, dup_reason = _merge_duplicates(
        canon[ok], values[ok], rows[ok], dataset.duplicates
    )
    reason[removed - 1] = dup_reason

    subsampled = 0
    if max_rows is not None and len(kept_rows) > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(len(kept_rows), max_rows, replace=False))
        subsampled = len(kept_rows) - max_rows
        kept_rows, kept_vals = kept_rows[pick], kept_vals[pick]

    table = pd.DataFrame(
        {"input": canon[kept_rows - 1].astype(str), "target": kept_vals.astype(np.float64)}
    )
    bad = reason != ""
    rejected = pd.DataFrame(
        {"row": rows[bad], "property": prop.name, "input": raw_input[bad], "reason": reason[bad]}
    )
    counts = pd.Series(reason[bad]).value_counts().sort_index()
    entry = {
        "unit": prop.unit,
        "rows_in": n,
        "kept": int(len(kept_rows)),
        "quarantined": {str(k): int(v) for k, v in counts.items()},
        "subsampled_out": int(subsampled),
    }
    assert (
        entry["rows_in"]
        == entry["kept"] + sum(entry["quarantined"].values()) + entry["subsampled_out"]
    ), f"{dataset.name}.{prop.name}: row counts do not add up: {entry}"
    return table, rejected, entry


def clean(
    dataset: Dataset, root: Path, max_rows: int | None = None, seed: int = 0
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict]:
    """Clean ``dataset``: per-property tables, the quarantine and the report (nothing written).

    Row numbers are 1-based data rows (the header is not counted).
    Checks run in this order per property: input, target value, unit conversion, transform,
    min/max, duplicates (aggregated on the transformed value), then optional subsampling.
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    path = dataset.resolve(root)
    columns = list(dict.fromkeys([dataset.input, *(p.column for p in dataset.properties.values())]))
    df = read_source_table(path, columns, dataset.path)
    n = len(df)
    raw_input = df[dataset.input].to_numpy(dtype=object)
    canon, in_reason = canonicalize(list(raw_input), dataset.material_class)
    canon = np.array(canon, dtype=object)
    in_reason = np.array([r or "" for r in in_reason], dtype=object)

    tables: dict[str, pd.DataFrame] = {}
    quarantine: list[pd.DataFrame] = []
    report = {
        "dataset": dataset.name,
        "file": dataset.file,
        "data_sha256": sha256(path),
        "material_class": dataset.material_class,
        "rows_in": n,
        "properties": {},
    }

    for prop in dataset.properties.values():
        table, rejected, entry = _clean_property(
            dataset, prop, df[prop.column], canon, in_reason, raw_input, max_rows, seed
        )
        tables[prop.name] = table
        quarantine.append(rejected)
        report["properties"][prop.name] = entry

    q = pd.concat(quarantine, ignore_index=True).sort_values(["row", "property"], kind="stable")
    return tables, q, report


def prepare(
    dataset: Dataset, out_dir: Path, root: Path, max_rows: int | None = None, seed: int = 0
) -> dict:
    """Clean ``dataset`` into ``out_dir`` (one parquet per property) and return the report."""
    tables, quarantine, report = clean(dataset, root, max_rows=max_rows, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(out_dir / f"{name}.parquet", index=False)
    quarantine.to_csv(out_dir / "quarantine.csv", index=False)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
