"""Source dataset definitions, input canonicalization and cleaning.

A dataset is described by a YAML file (see ``config/datasets/qm9.yaml`` for the
annotated format, ``schemas/dataset.schema.json`` for the schema).  ``prepare``
turns the raw CSV into one parquet file per property (columns ``input`` and
``target``), a ``quarantine.csv`` listing every rejected (row, property) pair
with a reason code, and a ``report.json`` with the counts.
"""

from __future__ import annotations

import gzip
import io
import json
import math
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

MATERIAL_CLASSES = ("molecule", "polymer", "inorganic")

# Strings read as a missing target value (compared after strip + lower-case).
_MISSING_STRINGS = frozenset({"", "nan", "-nan", "na", "n/a", "null", "none", "<na>"})


class DatasetError(ValueError):
    """Invalid dataset definition or data file; the message names file, row/key and reason."""


@dataclass(frozen=True)
class Property:
    name: str
    column: str
    unit: str  # unit of the prepared target, i.e. after the transform ("log10(Pa)")
    description: str = ""
    transform: str = "none"  # "none" | "log10"
    min: float | None = None  # bounds on the transformed value
    max: float | None = None
    raw_unit: str = ""  # unit of the source column, as written in the YAML


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
    if errors:
        lines = [f"{path}: {_error_key(e)}: {e.message}" for e in errors]
        raise DatasetError("\n".join(lines))

    if doc["name"] != path.stem:
        raise DatasetError(f"{path}: name: {doc['name']!r} must equal the file stem {path.stem!r}")

    props: dict[str, Property] = {}
    for pname, p in doc["properties"].items():
        lo, hi = p.get("min"), p.get("max")
        if lo is not None and hi is not None and lo >= hi:
            raise DatasetError(f"{path}: properties.{pname}: min ({lo}) must be below max ({hi})")
        transform = p.get("transform", "none")
        props[pname] = Property(
            name=pname,
            column=p.get("column", pname),
            unit=f"log10({p['unit']})" if transform == "log10" else p["unit"],
            description=p.get("description", ""),
            transform=transform,
            min=None if lo is None else float(lo),
            max=None if hi is None else float(hi),
            raw_unit=p["unit"],
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


def canonicalize(inputs: Sequence[str], material_class: str) -> tuple[list[str | None], list[str | None]]:
    """Canonical form of each input, or ``None`` plus a reason code.

    molecule: RDKit canonical SMILES; polymer: same, with exactly two ``*``;
    inorganic: pymatgen reduced formula (``K4Mn4O8`` -> ``KMnO2``).
    Each distinct string is processed once.
    """
    if material_class not in MATERIAL_CLASSES:
        raise ValueError(f"material_class must be one of {MATERIAL_CLASSES}, got {material_class!r}")
    if material_class == "inorganic":
        convert = _canonical_formula
    else:
        polymer = material_class == "polymer"
        convert = lambda s: _canonical_smiles(s, polymer)  # noqa: E731

    if material_class != "inorganic":
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
        if material_class != "inorganic":
            RDLogger.EnableLog("rdApp.error")
    return canon, reasons


# ------------------------------------------------------------------------- reading


def _read_table(path: Path, columns: list[str], yaml_path: Path) -> pd.DataFrame:
    """Read the needed columns of a (gzipped) CSV as strings, with clear errors."""
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

    header = pd.read_csv(io.StringIO(text), nrows=0).columns
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(
            f"{path}: line 1 (header): missing column(s) {missing} declared in {yaml_path}; "
            f"found {list(header)}"
        )
    try:
        df = pd.read_csv(
            io.StringIO(text), usecols=columns, dtype=str, keep_default_na=False, na_filter=False
        )
    except pd.errors.ParserError as e:
        raise DatasetError(f"{path}: malformed CSV: {e}") from None
    if df.empty:
        raise DatasetError(f"{path}: no data rows after the header")
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


def prepare(dataset: Dataset, out_dir: Path, root: Path, max_rows: int | None = None, seed: int = 0) -> dict:
    """Clean ``dataset`` into ``out_dir`` (one parquet per property) and return the report.

    Row numbers are 1-based data rows (the header is not counted).
    Checks run in this order per property: input, target value, transform, min/max,
    duplicates (aggregated on the transformed value), then optional subsampling.
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

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    quarantine: list[pd.DataFrame] = []
    report = {
        "dataset": dataset.name,
        "file": dataset.file,
        "material_class": dataset.material_class,
        "rows_in": n,
        "properties": {},
    }

    for prop in dataset.properties.values():
        values, reason = _parse_targets(df[prop.column])
        reason = np.where(in_reason != "", in_reason, reason)
        if prop.transform == "log10":
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

        table = pd.DataFrame({"input": canon[kept_rows - 1].astype(str), "target": kept_vals.astype(np.float64)})
        table.to_parquet(out_dir / f"{prop.name}.parquet", index=False)

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
    q.to_csv(out_dir / "quarantine.csv", index=False)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
