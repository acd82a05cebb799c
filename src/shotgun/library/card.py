"""The model card: everything needed to rebuild, use and audit one library model.

Training writes one card per model (``<id>.json`` beside ``<id>.safetensors``), MLflow stores it
as the run's ``card.json``, the library keeps it in its card table and indexes it, and a saved
transfer pipeline carries its source model's card. All of them read and write cards through
:class:`ModelCard`: ``ModelCard.from_dict`` checks the keys (missing or unknown keys, a newer
``card_schema``) and ``to_json`` writes the file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ShotgunError

CARD_SCHEMA = 1


class LibraryError(ShotgunError):
    """A library, card or weights file that is missing, altered or malformed."""


class CardError(LibraryError):
    """A model card that cannot be read: the message names the card and the key."""


@dataclass(frozen=True)
class Metrics:
    """Test metrics in the property's unit (held-out split) and the fit's statistics; a model
    that failed to train has no test metrics and no best validation loss (None)."""

    test_mae: float | None
    test_rmse: float | None
    test_r2: float | None
    best_val_mse: float | None  # standardised target
    best_epoch: int
    epochs: int
    seconds: float  # training time per model (its share of its batch)


@dataclass(frozen=True)
class TargetScaler:
    """The target was standardised with these: prediction = network output x std + mean."""

    mean: float
    std: float


@dataclass(frozen=True)
class InputScaler:
    """Inputs are standardised by the weights file's tensors (mean, std), then clipped."""

    tensors: list[str]
    clip: float


@dataclass(frozen=True)
class Reference:
    """A few test inputs and the model's predictions: a loaded model must reproduce them."""

    inputs: list[str]
    predictions: list[float]


@dataclass(frozen=True)
class ModelCard:
    model_id: str
    material_class: str
    dataset: str
    property: str
    unit: str
    descriptor: dict[str, Any]  # Descriptor.spec(): name, version, params
    architecture: dict[str, Any]  # shotgun.nn.architecture: n_in, hidden, activation, ...
    architecture_name: str
    index: int  # the model's index in its (dataset, property, descriptor) cell
    target_scaler: TargetScaler
    input_scaler: InputScaler
    metrics: Metrics
    n_train: int
    n_val: int
    n_test: int
    n_unfeaturized: int  # rows of the prepared table the descriptor could not featurize
    data_hash: str
    train_config: dict[str, Any]  # the composed Hydra config
    reference: Reference | None  # None for a model that failed to train
    weights: str | None  # file name of the weights, relative to the card's folder or library
    weights_sha256: str | None
    shotgun_version: str
    device: str
    card_schema: int = CARD_SCHEMA
    mlflow_run_id: str | None = field(default=None)  # absent when trained without tracking
    # Why the model failed to train (absent when it trained): such a model has no weights and
    # no test metrics, a resumed shard does not train it again, and libraries leave it out.
    failure: str | None = field(default=None)

    @classmethod
    def from_dict(cls, doc: dict, source: str = "card") -> ModelCard:
        """A card from its JSON mapping; ``source`` names it in errors."""
        if not isinstance(doc, dict):
            raise CardError(f"{source}: a model card is a JSON object")
        if doc.get("card_schema", CARD_SCHEMA) > CARD_SCHEMA:
            raise CardError(
                f"{source}: card_schema {doc['card_schema']} is newer than this "
                f"shotgun reads ({CARD_SCHEMA})"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - set(fields))
        missing = sorted(
            n for n, f in fields.items() if n not in doc and f.default is dataclasses.MISSING
        )
        if unknown or missing:
            raise CardError(
                f"{source}: not a model card (missing keys {missing}, unknown keys {unknown})"
            )
        nested = {
            "target_scaler": TargetScaler,
            "input_scaler": InputScaler,
            "metrics": Metrics,
            "reference": Reference,
        }
        try:
            values = {
                k: nested[k](**v) if k in nested and v is not None else v for k, v in doc.items()
            }
        except TypeError as err:
            raise CardError(f"{source}: {err}") from None
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        try:
            doc = json.loads(Path(path).read_text())
        except ValueError as err:
            raise CardError(f"{path}: not JSON ({err})") from None
        return cls.from_dict(doc, str(path))

    def to_dict(self) -> dict:
        # Nested records as dicts; the JSON fields (train_config, ...) as they are, not copied
        # (dataclasses.asdict deep-copies them: most of the time of writing 10^5 cards).
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key, value in doc.items():
            if dataclasses.is_dataclass(value):
                doc[key] = dataclasses.asdict(value)
        for key in ("mlflow_run_id", "failure"):  # written only when set
            if doc[key] is None:
                del doc[key]
        return doc

    def to_json(self, indent: int | None = 1) -> str:
        """The card file's text (sorted keys: the same card gives the same bytes); one line
        without ``indent``."""
        compact = (",", ":") if indent is None else None
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, separators=compact)

    def replace(self, **changes) -> ModelCard:
        return dataclasses.replace(self, **changes)

    @property
    def n_hidden(self) -> int:
        return len(self.architecture["hidden"])

    def index_row(self) -> dict:
        """The card's row of the library index (``INDEX_COLUMNS``)."""
        m = self.metrics
        return {
            "model_id": self.model_id,
            "material_class": self.material_class,
            "dataset": self.dataset,
            "property": self.property,
            "unit": self.unit,
            "descriptor": self.descriptor["name"],
            "descriptor_version": self.descriptor["version"],
            "input_kinds": _input_kinds(json.dumps(self.descriptor, sort_keys=True)),
            "architecture": self.architecture_name,
            "n_hidden": self.n_hidden,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "test_mae": m.test_mae,
            "test_rmse": m.test_rmse,
            "test_r2": m.test_r2,
            "mlflow_run_id": self.mlflow_run_id or "",
            "data_hash": self.data_hash,
            "weak": is_weak(m.test_r2),
        }

    def render(self) -> str:
        """The card as readable text (``shotgun library show``)."""
        m, arch, d = self.metrics, self.architecture, self.descriptor
        t = self.train_config
        params = ", ".join(f"{k}={v}" for k, v in d["params"].items())
        lines = [
            f"model {self.model_id}",
            f"  property     {self.property} [{self.unit}] of {self.dataset} "
            f"({self.material_class})",
            f"  data         {self.n_train} train / {self.n_val} validation / {self.n_test} test"
            f" rows, data hash {self.data_hash[:16]}",
            f"  descriptor   {d['name']} v{d['version']} ({params})",
            f"  architecture {self.architecture_name}, dropout {arch['dropout']}, "
            f"batch norm {arch['batch_norm']}",
            f"  test         MAE {m.test_mae:.4g}, RMSE {m.test_rmse:.4g}, R2 {m.test_r2:.3f}",
            f"  training     {t['optim']['name']} lr {t['optim']['lr']}, batch "
            f"{t['trainer']['batch_size']}, {m.epochs} epochs (best {m.best_epoch}), seed "
            f"{t['seed']}, index {self.index}, precision {t['trainer'].get('precision', 32)}"
            f" (float32 matmul {t['trainer'].get('matmul_precision', 'highest')})",
            f"  target scale mean {self.target_scaler.mean:.6g}, std {self.target_scaler.std:.6g}",
            f"  provenance   shotgun {self.shotgun_version}, MLflow run "
            f"{self.mlflow_run_id or '-'}, weights sha256 {self.weights_sha256[:16]}",
        ]
        return "\n".join(lines)


INDEX_COLUMNS = [
    "model_id",
    "material_class",
    "dataset",
    "property",
    "unit",
    "descriptor",
    "descriptor_version",
    "input_kinds",
    "architecture",
    "n_hidden",
    "n_train",
    "n_val",
    "n_test",
    "test_mae",
    "test_rmse",
    "test_r2",
    "mlflow_run_id",
    "data_hash",
    "weak",  # test R² below zero or undefined: worse than the training mean on held-out rows
]


@functools.cache
def _input_kinds(spec: str) -> str:
    """The input kinds of a descriptor spec (JSON), comma-separated: computed once per spec."""
    from ..descriptors import from_spec

    return ",".join(from_spec(json.loads(spec)).kinds)


def is_weak(test_r2: float) -> bool:
    """A model whose test R² is below zero (or undefined) predicts its property no better than
    the training mean: flagged in the index, left out of transfer candidates by default."""
    return not test_r2 >= 0
