"""The training data of one (dataset, property, descriptor) cell and its fixed splits.

A cell joins a prepared property table (``input``, ``target``) with its dataset's feature table.
Every model of a cell sees the same train/validation/test split, and its inputs are standardised
on the training split and clipped (``INPUT_CLIP``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Standardised inputs are clipped to +-INPUT_CLIP: a feature almost constant in training (say the
# minimum magnetic moment, zero for nearly all compounds) must not send unseen inputs to 1e4 sigma.
INPUT_CLIP = 10.0


@dataclass
class Cell:
    """The training data of one (dataset, property, descriptor) cell."""

    dataset: str
    material_class: str
    property: str
    unit: str
    descriptor: dict  # descriptor spec: name, version, params
    inputs: np.ndarray
    X: np.ndarray
    y: np.ndarray
    n_unfeaturized: int

    @property
    def data_hash(self) -> str:
        h = hashlib.sha256()
        h.update("\n".join(self.inputs).encode())
        h.update(np.ascontiguousarray(self.y, dtype=np.float64).tobytes())
        h.update(json.dumps(self.descriptor, sort_keys=True).encode())
        return h.hexdigest()


def load_cell(
    prepared: Path, features: Path, dataset: str, material_class: str, prop: str, unit: str
) -> Cell:
    """Join a prepared property table with its dataset's feature table."""
    from ..descriptors import read_features

    targets = pd.read_parquet(prepared)
    inputs, X, ok, spec = read_features(features)
    row = pd.Series(np.arange(len(inputs)), index=inputs)
    idx = row.reindex(targets["input"]).to_numpy()
    if np.isnan(idx).any():
        missing = targets["input"][np.isnan(idx)].iloc[0]
        raise ValueError(f"{features}: no features for input {missing!r} of {prepared}")
    idx = idx.astype(int)
    good = ok[idx]
    return Cell(
        dataset,
        material_class,
        prop,
        unit,
        spec,
        targets["input"].to_numpy()[good].astype(str),
        X[idx[good]],
        targets["target"].to_numpy(dtype=np.float64)[good],
        int((~good).sum()),
    )


def split_indices(n: int, cfg: dict, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation/test indices; the same for every model of a cell."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(cfg["test_fraction"] * n)))
    n_val = max(1, int(round(cfg["val_fraction"] * (n - n_test))))
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def standardizer(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of each column; constant columns get std 1."""
    a = a.astype(np.float64)
    mean, std = a.mean(axis=0), a.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)
