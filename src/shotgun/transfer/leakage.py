"""The leakage guard: the share of a target's inputs that each candidate's source model was
trained on.

A library model stores the sorted 64-bit hashes of its canonical training and validation inputs
(:func:`shotgun.data.input_hashes`, tensor ``train_inputs`` of its weights file, checksummed with
them in the manifest). The target's inputs are canonicalised as cleaning canonicalises source
inputs (RDKit canonical SMILES, reduced formulas: :func:`shotgun.data.canonical_hashes`) and
looked up. A source that saw the target's rows has features that may have memorised them, which
makes transfer look good for the wrong reason: candidates above ``--max-overlap`` are left out.
Models of libraries built before the hashes were stored have an unknown share (None) and stay in.
"""

from __future__ import annotations

import numpy as np


def train_overlap(model, target_hashes: np.ndarray) -> float | None:
    """The share of the target's rows (by their input hashes) that ``model`` was trained on;
    None when its library does not record its training inputs."""
    seen = model.train_inputs
    if seen is None:
        return None
    return float(np.isin(target_hashes, seen).mean()) if len(target_hashes) else 0.0
