"""``summary.json`` of a transfer run, defined once: written by the run, read by the report, the
command line and the benchmarks.

Scores are cross-validated (``cv_mae``, ``cv_rmse``, ``cv_r2``). ``best``, ``stack``,
``fine_tune``, ``baseline`` and ``methods`` are each selected on the folds that score them
(optimistic); ``nested`` is the estimate to compare with the baseline and with published figures,
and ``nested.selected`` the estimate of the procedure that picks the ``winner`` (``saved``).
``control`` is the same selection among the candidates' control networks (random weights).
Optional parts are None (or empty) when the run did not compute them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    data: str
    input: str
    target: str
    kind: str
    unit: str | None = None


@dataclass(frozen=True)
class Best:
    """The best transfer pipeline on the screen's folds."""

    model_id: str
    dataset: str
    property: str
    descriptor: str
    learner: str
    depth: int
    cv_mae: float
    cv_rmse: float
    cv_r2: float


@dataclass(frozen=True)
class Scored:
    """A named pipeline (a baseline, a method) and its scores."""

    name: str
    cv_mae: float
    cv_rmse: float
    cv_r2: float


@dataclass(frozen=True)
class Method:
    """One method on the same folds: transfer, baseline, stack, properties, blend or fine_tune.
    ``choice_mae``: for the methods the winner is picked from, the MAE of the method's choosing
    cross-validated over the folds (chosen without each fold, scored on it), which picks it."""

    method: str
    name: str
    cv_mae: float
    cv_rmse: float
    cv_r2: float
    choice_mae: float | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True)
class Saved:
    """The winner, refitted on all rows and saved under ``model/``: its method, name and
    members (``id d=depth learner`` of each transferred model, or the baseline)."""

    method: str
    name: str
    members: list[str]
    cv_mae: float
    cv_rmse: float
    cv_r2: float


@dataclass(frozen=True)
class Stack:
    """The mean of the top ``k`` transferred models."""

    k: int
    model_ids: list[str]
    cv_mae: float
    cv_rmse: float
    cv_r2: float


@dataclass(frozen=True)
class FineTune:
    """One fine-tuned source network."""

    model_id: str
    cv_mae: float
    cv_rmse: float
    cv_r2: float


@dataclass(frozen=True)
class Score:
    cv_mae: float
    cv_rmse: float
    cv_r2: float


@dataclass(frozen=True)
class NestedBaseline(Score):
    chosen: list[str] = field(default_factory=list)  # baseline chosen per outer fold


@dataclass(frozen=True)
class NestedSelected(Score):
    """The whole procedure nested: the method picked inside each outer training fold by the
    ``rule`` (``--select``)."""

    chosen: list[str] = field(default_factory=list)  # method per outer fold
    chosen_pipelines: list[str] = field(default_factory=list)  # its members, joined by " + "
    rule: str | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True)
class Nested(Score):
    """Nested CV: the whole selection repeated inside each outer training fold."""

    chosen: list[str] = field(default_factory=list)  # model id per outer fold
    chosen_pipelines: list[str] = field(default_factory=list)  # "id d=depth learner"
    baseline: NestedBaseline | None = None
    outer_folds: int | None = None
    inner_folds: int | None = None
    stack: Score | None = field(default=None, metadata={"omit_none": True})
    # learners on the source models' predictions (properties as features): learner per fold
    properties: NestedBaseline | None = field(default=None, metadata={"omit_none": True})
    # the mean of the baseline's, the stack's and the properties' choices (--select's weights)
    blend: Score | None = field(default=None, metadata={"omit_none": True})
    selected: NestedSelected | None = None
    # the same for every rule of --select (selected is that of the run's)
    rules: list[NestedSelected] | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True)
class Relatedness:
    """How closely one network's prediction follows the target: the squared correlation of the
    best candidate's (``r2``, ``model_id``, ``source``: dataset/property) and of the best
    control network's (``control_r2``, ``control_model_id``) over all rows. It sees every target
    value (optimistic, never used to choose): a diagnostic of whether the library holds a source
    more related to the target than a random network of the same descriptors is."""

    r2: float
    model_id: str
    source: str
    control_r2: float
    control_model_id: str


@dataclass(frozen=True)
class Control(Score):
    """The control networks (each candidate's architecture, descriptor and input scaler with
    seeded random weights) through the same screen and selection. The scores are the nested
    estimate, or the same-fold best when nested CV was off (``estimate``);
    ``pretrained_better``: the candidates' estimate of the same kind has the lower MAE."""

    estimate: str = "nested"  # or "same folds"
    n_networks: int = 0
    pretrained_better: bool | None = None
    best: Scored | None = None  # the same-fold best control pipeline
    stack: Score | None = field(default=None, metadata={"omit_none": True})  # nested, top K
    chosen: list[str] = field(default_factory=list)  # nested: pipeline per outer fold
    # nested, learners on the control networks' predictions, against the candidates' own
    properties: Score | None = field(default=None, metadata={"omit_none": True})
    properties_pretrained_better: bool | None = field(default=None, metadata={"omit_none": True})
    # nested, the blend with the control networks' stack and properties (same baseline)
    blend: Score | None = field(default=None, metadata={"omit_none": True})
    blend_pretrained_better: bool | None = field(default=None, metadata={"omit_none": True})
    # with properties as features: the most related candidate and control network
    relatedness: Relatedness | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True)
class FirstPass:
    """The candidates screened: of the ``n_applicable`` library models that accept the
    target's inputs (weak ones left out), in ``n_cells`` cells, at most ``max_models`` (None:
    all), chosen without the target's values in turns over the cells, best source test R²
    first (:func:`shotgun.transfer.candidates.first_pass`)."""

    n_applicable: int
    n_cells: int
    n_kept: int
    n_cells_kept: int
    max_models: int | None = None


@dataclass(frozen=True)
class Leakage:
    """The leakage guard: the share of the target's inputs each candidate's source model was
    trained on (per candidate in ranking.csv); candidates above ``max_overlap`` were left out.
    ``max_share`` is the highest known share (None: the library records no training inputs);
    ``n_unknown`` candidates come from libraries built before training inputs were recorded.
    The ``n_unscored`` rows that a kept candidate's source saw are in every training split and
    in no test split: no reported error is measured on them."""

    max_overlap: float
    max_share: float | None = None
    n_excluded: int = 0
    n_unknown: int = 0
    excluded: list[str] = field(default_factory=list)  # model ids left out
    n_unscored: int = 0


@dataclass(frozen=True)
class TransferSummary:
    target: Target
    n_samples: int
    n_dropped: int
    folds: int
    seed: int
    n_candidates: int
    best: Best
    baseline: Scored
    subsample: int | None = None
    n_weak_excluded: int = 0  # applicable library models left out for a test R² below zero
    first_pass: FirstPass | None = None
    not_finite: list[str] = field(default_factory=list)  # left out: features not finite
    repeats: int = 1
    split: str = "random"
    learners: list[str] = field(default_factory=list)
    baseline_learners: list[str] = field(default_factory=list)
    refine: int | None = None
    select: str | None = None  # how the winner was picked (--select)
    # the fewest rows on which the blend's weights are fitted (--fit-weights-from)
    fit_weights_from: int | None = None
    seconds: float | None = None
    baselines: list[Scored] = field(default_factory=list)
    stack: Stack | None = None
    fine_tune: list[FineTune] | None = None
    methods: list[Method] = field(default_factory=list)
    winner: str | None = None  # the method picked on all rows (saved under model/)
    saved: Saved | None = None
    nested: Nested | None = None
    control: Control | None = None
    leakage: Leakage | None = None
    model: str = "model"
    library: str = ""
    library_version: str = ""
    note: str = ""

    # Field order of summary.json.
    ORDER = (
        "target",
        "n_samples",
        "n_dropped",
        "subsample",
        "folds",
        "repeats",
        "split",
        "seed",
        "n_candidates",
        "n_weak_excluded",
        "first_pass",
        "not_finite",
        "learners",
        "baseline_learners",
        "refine",
        "select",
        "fit_weights_from",
        "seconds",
        "best",
        "baseline",
        "baselines",
        "stack",
        "fine_tune",
        "methods",
        "winner",
        "saved",
        "nested",
        "control",
        "leakage",
        "model",
        "library",
        "library_version",
        "note",
    )

    @classmethod
    def from_dict(cls, doc: dict) -> TransferSummary:
        return _build(cls, doc)

    @classmethod
    def read(cls, path: Path) -> TransferSummary:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        doc = _plain(self)
        return {k: doc[k] for k in self.ORDER}

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    def replace(self, **changes) -> TransferSummary:
        return dataclasses.replace(self, **changes)


# The dataclass of each nested part, by (class, field).
_PARTS = {
    (TransferSummary, "target"): Target,
    (TransferSummary, "best"): Best,
    (TransferSummary, "baseline"): Scored,
    (TransferSummary, "baselines"): Scored,
    (TransferSummary, "stack"): Stack,
    (TransferSummary, "fine_tune"): FineTune,
    (TransferSummary, "methods"): Method,
    (TransferSummary, "saved"): Saved,
    (TransferSummary, "nested"): Nested,
    (Nested, "baseline"): NestedBaseline,
    (Nested, "stack"): Score,
    (Nested, "selected"): NestedSelected,
    (Nested, "rules"): NestedSelected,
    (Nested, "properties"): NestedBaseline,
    (Nested, "blend"): Score,
    (TransferSummary, "control"): Control,
    (Control, "best"): Scored,
    (Control, "stack"): Score,
    (Control, "properties"): Score,
    (Control, "blend"): Score,
    (Control, "relatedness"): Relatedness,
    (TransferSummary, "leakage"): Leakage,
    (TransferSummary, "first_pass"): FirstPass,
}


def _build(cls, doc: dict):
    """``cls`` from a JSON mapping, its nested parts (and lists of them) built too; keys that
    ``cls`` does not define are ignored (summaries of older releases)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in names:
            continue
        part = _PARTS.get((cls, key))
        if part is not None and isinstance(value, dict):
            value = _build(part, value)
        elif part is not None and isinstance(value, list):
            value = [_build(part, v) for v in value]
        values[key] = value
    return cls(**values)


def _plain(obj):
    """A dataclass as JSON-able dicts and lists, leaving out ``omit_none`` fields that are None."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get("omit_none") and getattr(obj, f.name) is None)
        }
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
