"""Source dataset definitions, input canonicalization and cleaning.

A dataset is described by a YAML file (see ``config/datasets/qm9.yaml`` for the
annotated format, ``schemas/dataset.schema.json`` for the schema).  ``prepare``
turns the raw table (CSV, or JSON for structures) into one parquet file per
property (columns ``input`` and ``target``), a ``quarantine.csv`` listing every
rejected (row, property) pair with a reason code, and a ``report.json`` with the
counts.  ``summarize`` computes the same report without writing tables and
caches it per (declaration, data file) content hash.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import jsonschema
import numpy as np
import pandas as pd
import yaml

from . import INPUT_KINDS
from .checksums import sha256

# Classes a source dataset may declare: molecule, polymer, inorganic and structure (inputs are
# JSON-serialised pymatgen Structure dicts).
DATASET_CLASSES = INPUT_KINDS

# Bump when cleaning changes what a report counts: invalidates cached summaries.
CLEANING_VERSION = 2

# Strings read as a missing target value (compared after strip + lower-case).
_MISSING_STRINGS = frozenset({"", "nan", "-nan", "na", "n/a", "null", "none", "<na>"})


class DatasetError(ValueError):
    """Invalid dataset definition or data file; the message names file, row/key and reason."""


@dataclass(frozen=True)
class Property:
    name: str
    column: str
    unit: str  # unit of the prepared target, after conversion and transform ("log10(GPa)")
    description: str = ""
    transform: str = "none"  # "none" | "log10" | "abs"
    min: float | None = None  # bounds on the transformed value
    max: float | None = None
    raw_unit: str = ""  # unit of the source column, as written in the YAML
    factor: float = 1.0  # raw value x factor is in the converted unit


@dataclass(frozen=True)
class Dataset:
    name: str
    file: str
    material_class: str
    input: str
    duplicates: str
    properties: dict[str, Property] = field(hash=False)
    description: str
    citation: str
    license: str
    path: Path

    def resolve(self, root: Path) -> Path:
        """Absolute path of the data file; ``file`` is relative to ``root``."""
        p = Path(self.file)
        return p if p.is_absolute() else (Path(root) / p).resolve()


# --------------------------------------------------------------------------- YAML


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    text = resources.files("shotgun").joinpath("schemas/dataset.schema.json").read_text("utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _error_key(err: jsonschema.ValidationError) -> str:
    """Dotted key path of a schema error, including the offending key when known."""
    parts = [str(p) for p in err.absolute_path]
    inst = err.instance
    if err.validator == "required" and isinstance(inst, dict):
        parts += [k for k in err.validator_value if k not in inst][:1]
    elif err.validator == "additionalProperties" and isinstance(inst, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(k for k in inst if k not in allowed)
        parts += extra[:1]
    return ".".join(parts) or "<top level>"


def _placeholders(doc, key: str = ""):
    """(dotted key, value) of every string left as a ``TODO`` placeholder (``datasets add``)."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _placeholders(v, f"{key}.{k}" if key else str(k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _placeholders(v, f"{key}.{i}")
    elif isinstance(doc, str) and doc.strip().upper().startswith("TODO"):
        yield key or "<top level>", doc


def load_dataset(path) -> Dataset:
    """Read and validate one dataset YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not valid UTF-8 ({e.reason})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise DatasetError(f"{path}: {where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{path}: <top level>: expected a mapping, got {type(doc).__name__}")

    errors = sorted(_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    lines = [f"{path}: {_error_key(e)}: {e.message}" for e in errors]
    lines += [f"{path}: {key}: placeholder {value!r} must be filled in" for key, value in _placeholders(doc)]
    if lines:
        raise DatasetError("\n".join(lines))

    if doc["name"] != path.stem:
        raise DatasetError(f"{path}: name: {doc['name']!r} must equal the file stem {path.stem!r}")

    props: dict[str, Property] = {}
    for pname, p in doc["properties"].items():
        lo, hi = p.get("min"), p.get("max")
        if lo is not None and hi is not None and lo >= hi:
            raise DatasetError(f"{path}: properties.{pname}: min ({lo}) must be below max ({hi})")
        transform = p.get("transform", "none")
        convert = p.get("convert", {"factor": 1.0, "unit": p["unit"]})
        props[pname] = Property(
            name=pname,
            column=p.get("column", pname),
            unit=f"log10({convert['unit']})" if transform == "log10" else convert["unit"],
            description=p.get("description", ""),
            transform=transform,
            min=None if lo is None else float(lo),
            max=None if hi is None else float(hi),
            raw_unit=p["unit"],
            factor=float(convert["factor"]),
        )
    return Dataset(
        name=doc["name"],
        file=doc["file"],
        material_class=doc["material_class"],
        input=doc["input"],
        duplicates=doc.get("duplicates", "mean"),
        properties=props,
        description=doc.get("description", ""),
        citation=doc["citation"],
        license=doc["license"],
        path=path,
    )


def load_datasets(directory) -> dict[str, Dataset]:
    """Load every ``*.yaml`` in ``directory``, keyed by dataset name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: not a directory")
    return {d.name: d for d in (load_dataset(p) for p in sorted(directory.glob("*.yaml")))}


# ----------------------------------------------------------------- canonicalization


def _canonical_smiles(s: str, polymer: bool) -> tuple[str | None, str | None]:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(s)
    if mol is None or mol.GetNumAtoms() == 0:
        return None, "invalid_smiles"
    if polymer and sum(a.GetAtomicNum() == 0 for a in mol.GetAtoms()) != 2:
        return None, "polymer_star_count"
    return Chem.MolToSmiles(mol), None


# An explicit amount written after an element symbol or a closing bracket.
_AMOUNT = re.compile(r"(?<=[A-Za-z)\]])\s*([-+]?(?:\d+\.?\d*|\.\d+))")


def _canonical_formula(s: str) -> tuple[str | None, str | None]:
    from pymatgen.core import Composition

    # pymatgen silently drops zero amounts ("Fe0O" -> "O"), so check them here.
    if any(float(m) <= 0 for m in _AMOUNT.findall(s)):
        return None, "invalid_formula"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            comp = Composition(s)
            if not comp.valid or comp.num_atoms <= 0:  # unknown symbols become dummy species
                return None, "invalid_formula"
            return comp.reduced_formula, None
    except Exception:  # pymatgen raises ValueError, KeyError, ... on bad formulas
        return None, "invalid_formula"


def _canonical_structure(s: str) -> tuple[str | None, str | None]:
    from pymatgen.core import Structure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = Structure.from_dict(json.loads(s))
    except Exception:  # JSON or pymatgen errors of any kind
        return None, "invalid_structure"
    if len(st) == 0 or not st.composition.valid:
        return None, "invalid_structure"
    # Sites sorted by species, then fractional position, so that one crystal has one spelling.
    st = st.get_sorted_structure(
        key=lambda site: (site.species_string, tuple(np.round(np.mod(site.frac_coords, 1.0), 6)))
    )
    return json.dumps(st.as_dict(), sort_keys=True, separators=(",", ":")), None


_CONVERTERS = {
    "molecule": lambda s: _canonical_smiles(s, polymer=False),
    "polymer": lambda s: _canonical_smiles(s, polymer=True),
    "inorganic": _canonical_formula,
    "structure": _canonical_structure,
}


def canonicalize(inputs: Sequence[str], material_class: str) -> tuple[list[str | None], list[str | None]]:
    """Canonical form of each input, or ``None`` plus a reason code.

    molecule: RDKit canonical SMILES; polymer: same, with exactly two ``*``;
    inorganic: pymatgen reduced formula (``K4Mn4O8`` -> ``KMnO2``);
    structure: a JSON pymatgen Structure dict, re-serialised with sorted sites and keys.
    Each distinct string is processed once.
    """
    if material_class not in DATASET_CLASSES:
        raise ValueError(f"material_class must be one of {DATASET_CLASSES}, got {material_class!r}")
    convert = _CONVERTERS[material_class]
    smiles = material_class in ("molecule", "polymer")
    if smiles:
        from rdkit import RDLogger

        RDLogger.DisableLog("rdApp.*")
    try:
        cache: dict[str, tuple[str | None, str | None]] = {}
        canon: list[str | None] = []
        reasons: list[str | None] = []
        for x in inputs:
            if x is None or (isinstance(x, float) and math.isnan(x)) or not str(x).strip():
                c, r = None, "missing_input"
            else:
                key = str(x).strip()
                if key not in cache:
                    cache[key] = convert(key)
                c, r = cache[key]
            canon.append(c)
            reasons.append(r)
    finally:
        if smiles:
            RDLogger.EnableLog("rdApp.error")
    return canon, reasons


# ------------------------------------------------------------------------- reading


def _read_text(path: Path, yaml_path: Path) -> str:
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


def _is_json(path: Path) -> bool:
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


def _json_frame(text: str, path: Path) -> pd.DataFrame:
    """A JSON table: an object of equal-length column arrays, or an array of row objects."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    if isinstance(doc, dict) and all(isinstance(v, list) for v in doc.values()):
        lengths = {k: len(v) for k, v in doc.items()}
        if len(set(lengths.values())) > 1:
            raise DatasetError(f"{path}: column arrays differ in length: {lengths}")
        records = doc
    elif isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
        records = {k: [r.get(k) for r in doc] for k in dict.fromkeys(k for r in doc for k in r)}
    else:
        raise DatasetError(f"{path}: expected an object of column arrays or an array of row objects")
    return pd.DataFrame({k: [_json_cell(v) for v in vals] for k, vals in records.items()}, dtype=object)


def read_columns(dataset: Dataset, root: Path) -> list[str]:
    """Column names of the dataset's data file (the CSV header, the JSON keys)."""
    path = dataset.resolve(root)
    text = _read_text(path, dataset.path)
    if _is_json(path):
        return list(_json_frame(text, path).columns)
    return list(pd.read_csv(io.StringIO(text), nrows=0).columns)


def _read_table(path: Path, columns: list[str], yaml_path: Path) -> pd.DataFrame:
    """Read the needed columns of a (gzipped) CSV or JSON table as strings, with clear errors."""
    text = _read_text(path, yaml_path)
    if _is_json(path):
        df = _json_frame(text, path)
        header, where = df.columns, "keys"
    else:
        header, where = pd.read_csv(io.StringIO(text), nrows=0).columns, "line 1 (header)"
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(
            f"{path}: {where}: missing column(s) {missing} declared in {yaml_path}; found {list(header)}"
        )
    if _is_json(path):
        df = df[columns]
    else:
        try:
            df = pd.read_csv(
                io.StringIO(text), usecols=columns, dtype=str, keep_default_na=False, na_filter=False
            )
        except pd.errors.ParserError as e:
            raise DatasetError(f"{path}: malformed CSV: {e}") from None
    if df.empty:
        raise DatasetError(f"{path}: no data rows" + ("" if _is_json(path) else " after the header"))
    return df


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


# ------------------------------------------------------------------------- cleaning


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
    df = _read_table(path, columns, dataset.path)
    n = len(df)
    raw_input = df[dataset.input].to_numpy(dtype=object)
    canon, in_reason = canonicalize(list(raw_input), dataset.material_class)
    canon = np.array(canon, dtype=object)
    in_reason = np.array([r or "" for r in in_reason], dtype=object)
    rows = np.arange(1, n + 1)

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
        values, reason = _parse_targets(df[prop.column])
        reason = np.where(in_reason != "", in_reason, reason)
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

        tables[prop.name] = pd.DataFrame(
            {"input": canon[kept_rows - 1].astype(str), "target": kept_vals.astype(np.float64)}
        )
        bad = reason != ""
        quarantine.append(
            pd.DataFrame({"row": rows[bad], "property": prop.name, "input": raw_input[bad], "reason": reason[bad]})
        )
        counts = pd.Series(reason[bad]).value_counts().sort_index()
        entry = {
            "unit": prop.unit,
            "rows_in": n,
            "kept": int(len(kept_rows)),
            "quarantined": {str(k): int(v) for k, v in counts.items()},
            "subsampled_out": int(subsampled),
        }
        assert entry["rows_in"] == entry["kept"] + sum(entry["quarantined"].values()) + entry["subsampled_out"], (
            f"{dataset.name}.{prop.name}: row counts do not add up: {entry}"
        )
        report["properties"][prop.name] = entry

    q = pd.concat(quarantine, ignore_index=True).sort_values(["row", "property"], kind="stable")
    return tables, q, report


def prepare(dataset: Dataset, out_dir: Path, root: Path, max_rows: int | None = None, seed: int = 0) -> dict:
    """Clean ``dataset`` into ``out_dir`` (one parquet per property) and return the report."""
    tables, quarantine, report = clean(dataset, root, max_rows=max_rows, seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(out_dir / f"{name}.parquet", index=False)
    quarantine.to_csv(out_dir / "quarantine.csv", index=False)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


# ------------------------------------------------------------------------ summaries


def default_cache_dir() -> Path:
    """``$SHOTGUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/shotgun`` (``~/.cache/shotgun``)."""
    if os.environ.get("SHOTGUN_CACHE_DIR"):
        return Path(os.environ["SHOTGUN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shotgun"


def summary_key(dataset: Dataset, root: Path) -> str:
    """Hash of what a full cleaning report depends on: the declaration, the data, the code."""
    h = hashlib.sha256(f"cleaning {CLEANING_VERSION}\n".encode())
    h.update(dataset.path.read_bytes())
    h.update(sha256(dataset.resolve(root)).encode())
    return h.hexdigest()


def summarize(dataset: Dataset, root: Path, cache_dir: Path | None = None, compute: bool = True) -> dict | None:
    """The full (no subsampling) cleaning report of ``dataset``, cached by content hash.

    The cache holds ``<cache_dir>/datasets/<name>/<key>.json``; older entries of the same
    dataset are removed when a new one is written. With ``compute=False`` a missing entry
    gives ``None``.
    """
    folder = Path(cache_dir or default_cache_dir()) / "datasets" / dataset.name
    key = summary_key(dataset, root)
    cached = folder / f"{key}.json"
    if cached.is_file():
        try:
            return json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # unreadable cache entry: recompute
    if not compute:
        return None
    _, _, report = clean(dataset, root)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink(missing_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(cached)
    return report
