"""Source dataset declarations: one YAML file per dataset, validated by ``dataset.schema.json``.

``config/datasets/qm9.yaml`` explains the keys. :func:`load_dataset` reads and validates one
file into a :class:`Dataset` (errors name the file and the key), :func:`load_datasets` every file
of a folder, :func:`validate_declaration` also checks the declared columns against the data file.
Only YAML and the schema are read here: the workflow's grid loads every declaration when the
Snakefile is parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from .. import INPUT_KINDS
from ..errors import ShotgunError

# Classes a source dataset may declare: molecule, polymer, inorganic and structure (inputs are
# JSON-serialised pymatgen Structure dicts).
DATASET_CLASSES = INPUT_KINDS


class DatasetError(ShotgunError):
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


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    text = resources.files("shotgun.data").joinpath("dataset.schema.json").read_text("utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def error_key(err) -> str:
    """Dotted key path of a ``jsonschema`` error, including the offending key when known."""
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


def read_yaml(path: Path, error=DatasetError) -> dict:
    """A YAML mapping, with ``error`` naming the file (and line) when it is missing or invalid."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not valid UTF-8 ({e.reason})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise error(f"{path}: {where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(doc, dict):
        raise error(f"{path}: <top level>: expected a mapping, got {type(doc).__name__}")
    return doc


def load_dataset(path) -> Dataset:
    """Read and validate one dataset YAML file."""
    path = Path(path)
    doc = read_yaml(path)
    errors = sorted(_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    lines = [f"{path}: {error_key(e)}: {e.message}" for e in errors]
    lines += [
        f"{path}: {key}: placeholder {value!r} must be filled in"
        for key, value in _placeholders(doc)
    ]
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


def validate_declaration(path: Path, root: Path) -> str:
    """A one-line summary of a valid declaration whose columns exist in its data file; raises
    :class:`DatasetError` otherwise."""
    from .tables import read_columns

    ds = load_dataset(path)
    columns = set(read_columns(ds, root))
    wanted = [ds.input, *(p.column for p in ds.properties.values())]
    missing = [c for c in dict.fromkeys(wanted) if c not in columns]
    if missing:
        raise DatasetError(
            f"{path}: columns {missing} are not in {ds.file}; found {sorted(columns)}"
        )
    n = len(ds.properties)
    return f"{path}: ok ({ds.material_class}, {n} propert{'y' if n == 1 else 'ies'} from {ds.file})"
