"""The training grid of a workflow config: which shards of which (dataset, property, descriptor)
cells to train. Used by the Snakefile (workflow/rules/common.smk) and by ``shotgun grid``.

Under ``sources:``, a key names a dataset declared in ``config/datasets/<name>.yaml``; the key
``all`` stands for every declared dataset not named explicitly, so a new dataset file joins such a
grid without a config edit. ``descriptors: applicable`` means every registered descriptor whose
input kinds include the dataset's material class. The config is checked against
``config.schema.yaml`` (the same schema the Snakefile validates with) and the declarations the
grid uses against the dataset schema. Only YAML is read here: the Snakefile is re-parsed by every
cluster job, so this must stay cheap (no pandas, no torch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from ..data.declarations import Dataset, load_dataset, read_yaml
from ..errors import ShotgunError

ALL = "all"  # sources key: every declared dataset not listed explicitly
APPLICABLE = "applicable"  # descriptors value: every registered descriptor accepting the inputs
# The workflow config's JSON schema (YAML), shared with the Snakefile's `validate`.
CONFIG_SCHEMA = str(resources.files("shotgun.training").joinpath("config.schema.yaml"))


class GridError(ShotgunError):
    """A workflow config that does not describe a grid; the message names the file and key."""


@dataclass(frozen=True)
class Shard:
    dataset: str
    property: str
    descriptor: str
    first: int
    last: int  # inclusive

    @property
    def models(self) -> str:
        return f"{self.first}-{self.last}"

    @property
    def n_models(self) -> int:
        return self.last - self.first + 1

    def folder(self, results: str) -> str:
        """Where the shard's model files (cards and weights) go."""
        return f"{results}/models/{self.dataset}/{self.property}/{self.descriptor}/{self.models}"

    def done(self, results: str) -> str:
        """The shard's completion marker (the Snakemake output; the folder is not one, so a
        re-run keeps the models an interrupted run finished)."""
        return self.folder(results) + ".done"


def declared_names(datasets_dir: str | Path) -> list[str]:
    """Names of the datasets declared in ``datasets_dir`` (``<name>.yaml``)."""
    return [p.stem for p in sorted(Path(datasets_dir).glob("*.yaml"))]


def read_datasets(datasets_dir: str | Path, names=None) -> dict[str, Dataset]:
    """The validated declarations of ``names`` (default: every one in ``datasets_dir``)."""
    names = declared_names(datasets_dir) if names is None else names
    return {n: load_dataset(Path(datasets_dir) / f"{n}.yaml") for n in names}


@cache
def applicable_descriptors(material_class: str) -> tuple[str, ...]:
    """Registered descriptors whose input kinds include ``material_class``."""
    from ..descriptors import DESCRIPTORS

    return tuple(name for name, cls in DESCRIPTORS.items() if material_class in cls.kinds)


def declarations_dir(config: Mapping) -> str:
    """The folder of dataset declarations (config key `datasets_dir`)."""
    return config.get("datasets_dir") or "config/datasets"


def resolve_sources(config: Mapping, datasets_dir: str | Path | None = None) -> dict:
    """``config['sources']`` with ``all`` expanded and every entry explicit:
    ``{dataset: {properties: [...], descriptors: [...], n_models, max_rows}}``."""
    sources = config["sources"]
    datasets_dir = datasets_dir or declarations_dir(config)
    names = declared_names(datasets_dir)
    named = [n for n in sources if n != ALL]
    unknown = sorted(set(named) - set(names))
    if unknown:
        raise GridError(f"config: sources: no declaration {datasets_dir}/<name>.yaml for {unknown}")
    entries = {n: sources[n] for n in named}
    if ALL in sources:
        entries.update({n: sources[ALL] for n in names if n not in entries})
    declared = read_datasets(datasets_dir, sorted(entries))
    resolved = {}
    for name in sorted(entries):
        src, decl = entries[name], declared[name]
        props = src.get("properties", ALL)
        declared_props = list(decl.properties)
        if props == ALL:
            props = declared_props
        bad = sorted(set(props) - set(declared_props))
        if bad:
            raise GridError(f"config: sources.{name}: undeclared properties {bad}")
        kind = decl.material_class
        descs = src["descriptors"]
        if descs == APPLICABLE:
            descs = applicable_descriptors(kind)
        else:
            misfit = [d for d in descs if d not in applicable_descriptors(kind)]
            if misfit:
                raise GridError(
                    f"config: sources.{name}: descriptors {misfit} do not accept {kind} inputs"
                )
        resolved[name] = {
            "properties": list(props),
            "descriptors": list(descs),
            "n_models": int(src["n_models"]),
            "max_rows": src.get("max_rows"),
        }
    return resolved


def shards(config: Mapping, sources: Mapping | None = None) -> Iterator[Shard]:
    """Every shard of the grid: ``shard_size`` consecutive model indices of one cell
    (``sources`` as from :func:`resolve_sources`; resolved from ``config`` when omitted)."""
    size = int(config["shard_size"])
    if sources is None:
        sources = resolve_sources(config)
    for name, src in sources.items():
        for prop in src["properties"]:
            for desc in src["descriptors"]:
                n = src["n_models"]
                for lo in range(0, n, size):
                    yield Shard(name, prop, desc, lo, min(lo + size, n) - 1)


@lru_cache(maxsize=1)
def _config_validator():
    import jsonschema
    import yaml

    with open(CONFIG_SCHEMA) as f:
        return jsonschema.Draft202012Validator(yaml.safe_load(f))


def validate_config(config: Mapping, source: str = "config") -> None:
    """Raise :class:`GridError` naming ``source`` and the key when ``config`` breaks the schema."""
    from ..data.declarations import error_key

    errors = sorted(
        _config_validator().iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        raise GridError("\n".join(f"{source}: {error_key(e)}: {e.message}" for e in errors))


def load_config(path: str | Path) -> dict:
    """A workflow config file, checked against the workflow's schema."""
    config = read_yaml(Path(path), GridError)
    validate_config(config, str(path))
    return config
