"""The leakage guard: which of a target's rows each candidate's source model was trained on.

A library model stores the sorted 64-bit hashes of its canonical training and validation inputs
(:func:`shotgun.data.input_hashes`, tensor ``train_inputs`` of its weights, checksummed with them;
:meth:`shotgun.library.Library.train_inputs`). The target's inputs are canonicalised as cleaning
canonicalises source inputs (RDKit canonical SMILES, reduced formulas:
:func:`shotgun.data.canonical_hashes`) and looked up. A source that saw the target's rows has
features that may have memorised them, which makes transfer look good for the wrong reason, so

- candidates trained on more than ``--max-overlap`` of the target's inputs are left out, and
- the rows that a kept candidate's source saw are never scored: every cross-validation split of
  the run puts them in its training rows, none in its test rows (:func:`shotgun.transfer.plans.
  build_plan`), so every reported error is measured on inputs no kept source saw.

Models of libraries built before the hashes were stored have an unknown share (None) and stay in.
"""

from __future__ import annotations

import numpy as np


def rows_seen(train_inputs: np.ndarray | None, target_hashes: np.ndarray) -> np.ndarray | None:
    """Which of the target's rows (by their input hashes) are among a model's ``train_inputs``
    (a boolean mask); None when its library does not record them."""
    return None if train_inputs is None else np.isin(target_hashes, train_inputs)


def seen_rows(library, model_ids, target_hashes: np.ndarray) -> dict[str, np.ndarray | None]:
    """:func:`rows_seen` of each of ``model_ids``, by model id."""
    return {m: rows_seen(library.train_inputs(m), target_hashes) for m in model_ids}


def share(mask: np.ndarray | None) -> float | None:
    """The share of the target's rows a mask of :func:`seen_rows` covers (None: unknown)."""
    if mask is None:
        return None
    return float(mask.mean()) if len(mask) else 0.0
