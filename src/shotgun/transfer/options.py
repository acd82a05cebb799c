"""The options of one transfer run, defined once for the target YAML, the CLI and the workflow.

A target declaration (``config/targets/<name>.yaml``) is a mapping of these options plus a
``description`` and a ``citation``; ``shotgun transfer`` takes the same options as flags (and
``--target NAME.yaml`` to start from a declaration); the workflow's ``targets:`` entries override
declared keys and reach the command as flags. Each option is one field of
:class:`TransferOptions` below: its default, help text, type and bounds; the flags, the checks and
the summary's record of the run all come from these fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import MATERIAL_CLASSES
from ..errors import ShotgunError
from .learners import BASELINE_LEARNERS, LEARNERS, TRANSFER_LEARNERS
from .plans import NESTED_MAX_ROWS, SPLITS
from .selection import FIT_WEIGHTS_FROM, SELECT_RULES

# Candidates the first pass keeps by default: a library of any size costs about as much to
# screen as one of this many applicable models (benchmarks/README.md, "Screening 100,000").
MAX_MODELS = 2000


class TransferError(ShotgunError):
    """Bad transfer options or target data; the message names the file or option."""


def _option(default, help: str, type=str, choices=None, minimum=None, metavar=None):
    return field(
        default=default,
        metadata={
            "help": help,
            "type": type,
            "choices": choices,
            "minimum": minimum,
            "metavar": metavar,
        },
    )


@dataclass(frozen=True)
class TransferOptions:
    """How to run transfer learning on one target; see the module docstring."""

    data: str | None = _option(None, "target table: CSV or Parquet", metavar="FILE")
    input: str | None = _option(
        None, "column of SMILES, polymer repeat units or formulas", metavar="COLUMN"
    )
    target: str | None = _option(
        None,
        "column of target values; on the command line also a target declaration "
        "(config/targets/NAME.yaml) whose options the other flags override",
        metavar="COLUMN",
    )
    kind: str | None = _option(
        None,
        "material class of the inputs: inputs of another kind are dropped (dropped.csv), and "
        "refused when none or too few are of this one",
        choices=MATERIAL_CLASSES,
    )
    unit: str | None = _option(None, "the target's unit (plots and report)")
    folds: int = _option(5, "K-fold cross-validation", int, minimum=2)
    seed: int = _option(0, "folds, subsamples and learners", int)
    max_models: int | None = _option(
        MAX_MODELS,
        "first pass: screen at most N candidates, chosen without the target's values: the "
        "best of every library cell (dataset, property, descriptor) by source test R2, then "
        "the second best of each, and so on",
        int,
        minimum=1,
    )
    keep_weak: bool = _option(
        False,
        "keep source models whose test R2 is below zero (flagged weak in the index; "
        "left out by default)",
        bool,
    )
    max_depth: int = _option(2, "hidden layers used as features: 1..N", int, minimum=1)
    n: int | None = _option(None, "use a seeded subsample of N usable rows", int, minimum=10)
    learners: tuple[str, ...] = _option(
        TRANSFER_LEARNERS,
        "learners on neural features (ridge screens all candidates; the others "
        f"refine the best): comma-separated from {', '.join(LEARNERS[:4])}; random_forest is "
        "slow on many pipelines",
        list,
        choices=LEARNERS,
    )
    refine: int = _option(
        3, "ridge-best pipelines per selection tried with the other learners", int, minimum=0
    )
    baselines: tuple[str, ...] = _option(
        BASELINE_LEARNERS, "from-scratch learners on the raw descriptors", list, choices=LEARNERS
    )
    repeats: int = _option(1, "repeated K-fold with new shuffles", int, minimum=1)
    split: str = _option(
        "random",
        "extrapolate: train on the lowest 80%% of target values, test on the top 20%%",
        choices=SPLITS,
    )
    nested: bool | None = _option(
        None,
        f"nested CV estimate and learning curve (default: on up to {NESTED_MAX_ROWS} rows)",
        bool,
    )
    fine_tune: int = _option(
        3, "fine-tune the N best source networks on the same folds (0: off)", int, minimum=0
    )
    stack: int = _option(
        5, "stacked ensemble: mean of the top K transferred models (1: off)", int, minimum=1
    )
    properties: bool = _option(
        True,
        "properties as features: the predictions of every candidate source model on the "
        "target's inputs as one descriptor vector, with ridge and random forest, screened and "
        "selected like the other methods (default on)",
        bool,
    )
    select: str = _option(
        "blend",
        "how the saved method is picked: blend (the mean of the baseline's, the stack's and "
        "the properties' choices, the best on the quality benchmark, weighted by the least MAE "
        "of their out-of-fold choices on the inner folds when these hold --fit-weights-from "
        "rows and fitting weights does better cross-validated than equal ones; the baseline "
        "instead when it has the lower MAE on every inner fold), equal (the same with equal "
        "weights) or cv (the method whose choosing does best cross-validated); nested.rules "
        "estimates each",
        choices=SELECT_RULES,
    )
    fit_weights_from: int = _option(
        FIT_WEIGHTS_FROM,
        "fit the blend's weights on a selection's inner folds from N rows (below: equal "
        "weights, which did better on 16-40 rows)",
        int,
        minimum=0,
        metavar="N",
    )
    control: bool = _option(
        True,
        "control networks: every candidate's architecture, descriptor and input scaler with "
        "fresh seeded random weights, through the same screen and selection, so that a gain "
        "can be told from a random projection (default on)",
        bool,
    )

    max_overlap: float = _option(
        0.01,
        "leave out candidates whose source model was trained on more than this share of the "
        "target's inputs (canonical SMILES or reduced formulas; 1: keep all); the rows a kept "
        "one saw are fitted on in every split, never scored",
        float,
        minimum=0.0,
        metavar="SHARE",
    )

    # Keys a target declaration must state; `description` and `citation` may be added.
    DECLARED = ("data", "input", "target", "kind", "unit", "folds", "seed")
    ABOUT = ("description", "citation")

    @classmethod
    def from_mapping(
        cls,
        doc: Mapping[str, Any],
        source: str = "options",
        required: tuple[str, ...] = ("data", "input", "target", "kind"),
    ) -> TransferOptions:
        """Options from a mapping (YAML, flags), checked: unknown keys, types, bounds, choices
        and the ``required`` keys give a :class:`TransferError` naming ``source`` and the key."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - set(fields))
        if unknown:
            raise TransferError(f"{source}: unknown option(s) {unknown}; known: {sorted(fields)}")
        values = {k: _checked(k, v, fields[k].metadata, source) for k, v in doc.items()}
        missing = [k for k in required if values.get(k) is None]
        if missing:
            raise TransferError(f"{source}: missing {', '.join(missing)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: Path, overrides: Mapping[str, Any] | None = None) -> TransferOptions:
        """A target declaration with ``overrides`` applied on top."""
        from ..data.declarations import read_yaml

        doc = read_yaml(Path(path), TransferError)
        doc = {k: v for k, v in doc.items() if k not in cls.ABOUT}
        source = f"{path}" + (f" (with the overrides {dict(overrides)})" if overrides else "")
        return cls.from_mapping({**doc, **(overrides or {})}, source, cls.DECLARED)

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    def replace(self, **changes) -> TransferOptions:
        return dataclasses.replace(self, **changes)

    @classmethod
    def flags(cls, values: Mapping[str, Any]) -> list[str]:
        """Command-line flags that set ``values`` (the workflow's per-target overrides)."""
        out = []
        for key, value in values.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                out.append(flag if value else f"--no-{key.replace('_', '-')}")
            elif isinstance(value, (list, tuple)):
                out += [flag, ",".join(map(str, value))]
            elif value is not None:
                out += [flag, str(value)]
        return out

    @classmethod
    def add_arguments(cls, parser) -> None:
        """One flag per option (absent unless given, so a declaration's values stay)."""
        import argparse

        for f in dataclasses.fields(cls):
            meta, flag = f.metadata, "--" + f.name.replace("_", "-")
            default = f.default if not isinstance(f.default, tuple) else ",".join(f.default)
            help_ = meta["help"] + (f" (default: {default})" if f.default is not None else "")
            if meta["type"] is bool:
                parser.add_argument(
                    flag,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=meta["help"],
                )
            elif meta["type"] is list:
                parser.add_argument(flag, default=argparse.SUPPRESS, help=help_, metavar="A,B")
            else:
                parser.add_argument(
                    flag,
                    type=meta["type"],
                    choices=meta["choices"],
                    default=argparse.SUPPRESS,
                    help=help_,
                    metavar=meta["metavar"],
                )


def _checked(key: str, value: Any, meta: Mapping, source: str) -> Any:
    """``value`` of option ``key`` converted to its type and checked against its bounds."""
    kind, choices, minimum = meta["type"], meta["choices"], meta["minimum"]
    if value is None:
        return None
    if kind is list:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise TransferError(
                f"{source}: {key}: expected names separated by commas, got {value!r}"
            )
        value = tuple(i.strip() for i in items if i.strip())
        bad = [i for i in value if i not in choices]
        if bad or not value:
            raise TransferError(
                f"{source}: {key}: unknown {bad or value!r}; choose from {', '.join(choices)}"
            )
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise TransferError(f"{source}: {key}: expected true or false, got {value!r}")
        return value
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TransferError(f"{source}: {key}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TransferError(f"{source}: {key}: expected a number, got {value!r}")
        value = float(value)
    if kind is str and not isinstance(value, str):
        raise TransferError(f"{source}: {key}: expected text, got {value!r}")
    if choices is not None and value not in choices:
        raise TransferError(f"{source}: {key}: {value!r} is not one of {', '.join(choices)}")
    if minimum is not None and value < minimum:
        raise TransferError(f"{source}: {key}: {value} is less than the minimum of {minimum}")
    return value


def declared_target(entry, targets_dir: str | Path) -> tuple[str, TransferOptions, dict]:
    """(name, options, overrides) of an entry of the workflow's ``targets:`` list: a name of
    ``<targets_dir>/<name>.yaml``, or ``{name, key: value, ...}`` overriding declared keys
    (values given as text, as ``--config targets=...`` passes them, are read as YAML)."""
    import yaml

    entry = {"name": entry} if isinstance(entry, str) else dict(entry)
    name = entry.pop("name")
    overrides = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in entry.items()}
    path = Path(targets_dir) / f"{name}.yaml"
    if not path.is_file():
        raise TransferError(f"targets: {name!r} is not declared ({path} does not exist)")
    return name, TransferOptions.from_yaml(path, overrides), overrides
