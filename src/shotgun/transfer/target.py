"""The target of a transfer run: its table read, its inputs featurized in every candidate
descriptor space, unusable rows dropped and counted, an optional seeded subsample."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import MATERIAL_CLASSES
from .candidates import spec_key
from .options import TransferError, TransferOptions


def load_target(data: Path, input_col: str, target_col: str, kind: str):
    """Inputs and float targets of the target table, with clear errors."""
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
        values = values.astype(str).str.strip()
    y = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    return df[input_col].astype(str).to_numpy(), y


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
    (:func:`shotgun.transfer.candidates.spec_key`), with the descriptors' ``names``."""

    y: np.ndarray
    raw: dict[str, np.ndarray]
    names: dict[str, str]
    n_dropped: int
    inputs: np.ndarray | None = None  # the inputs of the usable rows, as written

    def features(self, model, depth: int) -> np.ndarray:
        """A library model's float64 neural features of the target at ``depth``."""
        X = self.raw[spec_key(model.card.descriptor)]
        return model.features_descriptors(X, depth).astype(np.float64)


def prepare_target(options: TransferOptions, specs: dict) -> Target:
    """Read, featurize (every spec of ``specs``) and subsample the target of ``options``."""
    o = options
    inputs, y = load_target(Path(o.data), o.input, o.target, o.kind)
    raw, names, keep = target_descriptors(specs, inputs, o.kind)
    keep &= np.isfinite(y)
    n_dropped = int((~keep).sum())
    y, raw, inputs = y[keep], {k: X[keep] for k, X in raw.items()}, inputs[keep]
    if o.n is not None and o.n < len(y):  # a seeded subsample of the usable rows
        rows = np.sort(np.random.default_rng(o.seed).choice(len(y), size=o.n, replace=False))
        y, raw, inputs = y[rows], {k: X[rows] for k, X in raw.items()}, inputs[rows]
    if len(y) < o.folds:
        raise TransferError(f"{o.data}: {len(y)} usable rows, fewer than --folds {o.folds}")
    if np.ptp(y) == 0:
        raise TransferError(f"{o.data}: column {o.target!r} is constant; nothing to learn")
    return Target(y, raw, names, n_dropped, inputs)
