"""The target of a transfer run: its table read, its inputs checked against the run's kind and
featurized in every candidate descriptor space, unusable rows dropped with a reason (listed in
``dropped.csv``), an optional seeded subsample."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import MATERIAL_CLASSES
from .candidates import spec_key
from .options import TransferError, TransferOptions

# Why a row of the target table is dropped (dropped.csv `reason`; the codes of quarantine.csv).
NOT_FEATURIZABLE = "not_featurizable"  # not of the run's kind, or a candidate descriptor fails
MISSING_TARGET = "missing_target"  # an empty cell or NaN
NON_NUMERIC_TARGET = "non_numeric_target"  # text that is not a number, or infinite
DROPPED_COLUMNS = ["row", "input", "reason", "reads_as"]


def read_target(data: Path, input_col: str, target_col: str, kind: str):
    """Inputs, float targets and, per row, why its target is unusable ("" when it is usable,
    else ``missing_target`` or ``non_numeric_target``), with clear errors."""
    from ..data.tables import read_table

    if kind not in MATERIAL_CLASSES:
        raise TransferError(f"unknown --kind {kind!r} (choose from {', '.join(MATERIAL_CLASSES)})")
    try:
        df = read_table(data, input_col)
    except (FileNotFoundError, ValueError) as err:
        raise TransferError(str(err)) from err
    if target_col not in df.columns:
        raise TransferError(f"{data}: no column {target_col!r} (columns: {', '.join(df.columns)})")
    values = df[target_col]
    if values.dtype == object:  # CSV cells are read as text
        text = values.astype(str).str.strip()
        y = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        missing = ((text == "") | (text.str.lower() == "nan")).to_numpy()
    else:
        y = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        missing = values.isna().to_numpy()
    problem = np.where(missing, MISSING_TARGET, np.where(np.isfinite(y), "", NON_NUMERIC_TARGET))
    return df[input_col].astype(str).to_numpy(), y, problem


def load_target(data: Path, input_col: str, target_col: str, kind: str):
    """Inputs and float targets (NaN where unusable) of the target table, with clear errors."""
    inputs, y, _ = read_target(data, input_col, target_col, kind)
    return inputs, y


def target_descriptors(specs: dict, inputs, kind: str):
    """Descriptor matrix per candidate descriptor spec (computed by the descriptor that maps
    ``kind`` inputs into that spec's feature space), names, and the rows featurized by all."""
    from ..descriptors import featurize_inputs, for_kind

    raw, names = {}, {}
    ok_all = np.ones(len(inputs), dtype=bool)
    for key, spec in specs.items():
        d = for_kind(spec, kind)
        X, ok, _, _ = featurize_inputs(list(inputs), d)
        raw[key], names[key] = X, d.name
        ok_all &= ok
    return raw, names, ok_all


@dataclass
class Target:
    """The usable rows of a target: values ``y`` and descriptor matrices ``raw`` by spec key
    (:func:`shotgun.transfer.candidates.spec_key`), with the descriptors' ``names``, and the
    ``dropped`` rows (:data:`DROPPED_COLUMNS`: 1-based data row, input, reason, what the input
    reads as)."""

    y: np.ndarray
    raw: dict[str, np.ndarray]
    names: dict[str, str]
    dropped: pd.DataFrame

    @property
    def n_dropped(self) -> int:
        return len(self.dropped)

    inputs: np.ndarray | None = None  # the inputs of the usable rows, as written

    def features(self, model, depth: int) -> np.ndarray:
        """A library model's float64 neural features of the target at ``depth``."""
        X = self.raw[spec_key(model.card.descriptor)]
        return model.features_descriptors(X, depth).astype(np.float64)


def _dropped_summary(dropped: pd.DataFrame, kind: str) -> str:
    """The dropped rows counted by reason, each with an example."""
    what = {
        NOT_FEATURIZABLE: f"inputs not featurizable as {kind}",
        MISSING_TARGET: "targets missing",
        NON_NUMERIC_TARGET: "targets not numeric",
    }
    parts = []
    for reason, rows in dropped.groupby("reason", sort=False):
        first = rows.iloc[0]
        parts.append(f"{len(rows)} {what[reason]} (e.g. row {first['row']}: {first['input']!r})")
    return "; ".join(parts)


def prepare_target(options: TransferOptions, specs: dict) -> Target:
    """Read, check, featurize (every spec of ``specs``) and subsample the target of
    ``options``. Inputs not of the run's kind (:func:`shotgun.data.check_kinds`: refused when
    none or too few are) and inputs a candidate descriptor cannot featurize are dropped, as are
    rows whose target is missing or not numeric."""
    from ..data.inputs import check_kinds

    o = options
    inputs, y, problem = read_target(Path(o.data), o.input, o.target, o.kind)
    check = check_kinds(inputs, [o.kind], f"{o.data} column {o.input!r} (--kind {o.kind})")
    raw, names, featurized = target_descriptors(specs, inputs, o.kind)
    reason = np.where(check.fits & featurized, problem, NOT_FEATURIZABLE)
    keep = reason == ""
    drop = np.flatnonzero(~keep)
    dropped = pd.DataFrame(
        {
            "row": drop + 1,
            "input": inputs[drop],
            "reason": reason[drop],
            "reads_as": ["/".join(sorted(check.reads_as[i])) for i in drop],
        },
        columns=DROPPED_COLUMNS,
    )
    y, raw, inputs = y[keep], {k: X[keep] for k, X in raw.items()}, inputs[keep]
    if len(y) < o.folds:
        raise TransferError(
            f"{o.data}: {len(y)} usable rows of {len(reason)}, fewer than --folds {o.folds}"
            + (f"; dropped: {_dropped_summary(dropped, o.kind)}" if len(dropped) else "")
        )
    if o.n is not None and o.n < o.folds:
        raise TransferError(f"--n {o.n} rows are fewer than --folds {o.folds}")
    if o.n is not None and o.n < len(y):  # a seeded subsample of the usable rows
        rows = np.sort(np.random.default_rng(o.seed).choice(len(y), size=o.n, replace=False))
        y, raw, inputs = y[rows], {k: X[rows] for k, X in raw.items()}, inputs[rows]
    if np.ptp(y) == 0:
        raise TransferError(f"{o.data}: column {o.target!r} is constant; nothing to learn")
    return Target(y, raw, names, dropped, inputs)
