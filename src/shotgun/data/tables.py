"""Reading tables: declared source data files (CSV, gzipped CSV, JSON) and users' tables.

Source data files are read as text, verbatim (no missing-value guessing), with errors that name
the file and line; :func:`read_table` reads a user's CSV or Parquet file (targets, inputs to
predict or featurize) and checks that the wanted column is there.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pandas as pd

from .declarations import Dataset, DatasetError


def read_text(path: Path, yaml_path: Path) -> str:
    """Decoded text of a (gzipped) data file, with clear errors."""
    if not path.is_file():
        raise DatasetError(f"{path}: data file not found (declared in {yaml_path})")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path}: corrupt gzip file ({e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DatasetError(
            f"{path}: line {line} (data row {line - 1}): not valid UTF-8 (byte {raw[e.start]:#04x})"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise DatasetError(f"{path}: empty file")
    return text


def is_json(path: Path) -> bool:
    return path.name.lower().endswith((".json", ".json.gz"))


def _json_cell(v) -> str:
    """A JSON value as the string a CSV cell would hold; objects stay JSON (sorted keys)."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return repr(v) if isinstance(v, float) else str(v)


def json_frame(text: str, path: Path) -> pd.DataFrame:
    """A JSON table (an object of equal-length column arrays, or an array of row objects) as a
    frame of strings."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}"
        ) from None
    if isinstance(doc, dict) and all(isinstance(v, list) for v in doc.values()):
        lengths = {k: len(v) for k, v in doc.items()}
        if len(set(lengths.values())) > 1:
            raise DatasetError(f"{path}: column arrays differ in length: {lengths}")
        records = doc
    elif isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
        records = {k: [r.get(k) for r in doc] for k in dict.fromkeys(k for r in doc for k in r)}
    else:
        raise DatasetError(
            f"{path}: expected an object of column arrays or an array of row objects"
        )
    return pd.DataFrame(
        {k: [_json_cell(v) for v in vals] for k, vals in records.items()}, dtype=object
    )


def read_strings(path: Path) -> pd.DataFrame:
    """Every column of a CSV (gzipped or not) or JSON table as verbatim strings."""
    text = read_text(path, path)
    if is_json(path):
        return json_frame(text, path)
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def read_columns(dataset: Dataset, root: Path) -> list[str]:
    """Column names of the dataset's data file (the CSV header, the JSON keys)."""
    path = dataset.resolve(root)
    text = read_text(path, dataset.path)
    if is_json(path):
        return list(json_frame(text, path).columns)
    return list(pd.read_csv(io.StringIO(text), nrows=0).columns)


def read_source_table(path: Path, columns: list[str], yaml_path: Path) -> pd.DataFrame:
    """The needed columns of a (gzipped) CSV or JSON source table as strings, with clear errors."""
    text = read_text(path, yaml_path)
    if is_json(path):
        df = json_frame(text, path)
        header, where = df.columns, "keys"
    else:
        header, where = pd.read_csv(io.StringIO(text), nrows=0).columns, "line 1 (header)"
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(
            f"{path}: {where}: missing column(s) {missing} declared in {yaml_path}; "
            f"found {list(header)}"
        )
    if is_json(path):
        df = df[columns]
    else:
        try:
            df = pd.read_csv(
                io.StringIO(text),
                usecols=columns,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
            )
        except pd.errors.ParserError as e:
            raise DatasetError(f"{path}: malformed CSV: {e}") from None
    if df.empty:
        raise DatasetError(f"{path}: no data rows" + ("" if is_json(path) else " after the header"))
    return df


def read_table(path: Path, column: str) -> pd.DataFrame:
    """A user's CSV or Parquet file, checked to have ``column``. CSV cells are read as verbatim
    strings: ``NaN`` is sodium nitride and ``None`` nobelium neon, not missing values (numbers
    are converted where they are used)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        df = (
            pd.read_parquet(path)
            if path.suffix == ".parquet"
            else pd.read_csv(path, dtype=str, keep_default_na=False)
        )
    except (ValueError, OSError) as err:  # bad text, CSV or Parquet (pyarrow's errors too)
        raise ValueError(f"{path}: cannot read as a table: {err}") from err
    if column not in df.columns:
        raise ValueError(
            f"{path}: no column {column!r} (columns: {', '.join(map(str, df.columns))})"
        )
    return df
