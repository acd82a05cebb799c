"""Candidates of a transfer run: the library models whose descriptor accepts the target's inputs
(directly or through a cross-class bridge), loaded and verified when reached, and their neural
features (the pre-activation outputs of their last hidden layers).

Each candidate has a *control*: the same descriptor, input scaler and architecture with fresh
random weights, initialised as training initialises a network and seeded from the run's seed and
the model id. Screened like the candidates, the controls tell pretraining from a random
projection of the descriptors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .options import TransferError


def spec_key(spec: dict) -> str:
    """A descriptor spec as a dictionary key."""
    return json.dumps(spec, sort_keys=True)


CELL = ["dataset", "property", "descriptor"]  # the index columns naming a model's cell


def candidates(library, kind: str, model_ids=None, keep_weak: bool = False) -> pd.DataFrame:
    """Index rows of the models applicable to ``kind`` inputs (among ``model_ids`` if given),
    best source test R² first. Weak models (test R² below zero,
    :func:`shotgun.library.card.is_weak`) are left out unless ``keep_weak``."""
    cands = library.applicable(kind).sort_values(["test_r2", "model_id"], ascending=[False, True])
    if model_ids is not None:
        cands = cands[cands["model_id"].isin(set(model_ids))]
    n_weak = int(cands["weak"].sum())
    if not keep_weak:
        cands = cands[~cands["weak"]]
    if cands.empty:
        weak = f" ({n_weak} weak models left out: --keep-weak keeps them)" if n_weak else ""
        raise TransferError(f"{library.root}: no model in the library accepts {kind} inputs{weak}")
    return cands.reset_index(drop=True)


def first_pass(cands: pd.DataFrame, max_models: int | None) -> tuple[pd.DataFrame, dict]:
    """At most ``max_models`` of the candidates ``cands`` (all if None), chosen in turns over
    the library's cells: the best model of every cell by source test R², then the second best
    of every cell, and so on (within a turn, best R² first), so that a large library keeps its
    breadth of properties and descriptors. Returns the kept rows (best R² first) and the
    pass's counts for the summary. The target's values play no part: choosing before the
    nested loop keeps the nested estimate honest."""
    kept = cands
    if max_models is not None and len(cands) > max_models:
        turn = cands.groupby(CELL, sort=False).cumcount()  # cands come best R² first
        order = cands.assign(turn=turn.to_numpy()).sort_values(
            ["turn", "test_r2", "model_id"], ascending=[True, False, True], kind="stable"
        )
        kept = cands.loc[sorted(order.index[:max_models])]
    record = {
        "max_models": max_models,
        "n_applicable": len(cands),
        "n_cells": int(cands.groupby(CELL).ngroups),
        "n_kept": len(kept),
        "n_cells_kept": int(kept.groupby(CELL).ngroups),
    }
    return kept.reset_index(drop=True), record


def candidate_specs(library, model_ids) -> dict:
    """The distinct descriptor specs of the candidates, from their cards."""
    return {spec_key(c.descriptor): c.descriptor for c in map(library.card, model_ids)}


def loaded(library, model_ids):
    """(model id, model) pairs, each model loaded (and its files verified) when reached."""
    return ((m, library.load(m)) for m in model_ids)


def control_seed(seed: int, model_id: str) -> int:
    """The seed of the control network of candidate ``model_id`` in a run of seed ``seed``."""
    from ..nn.architecture import stable_seed

    return stable_seed("control", seed, model_id)


def control_of(model, seed: int):
    """The control of a loaded candidate ``model`` in a run of seed ``seed``."""
    return model.with_random_weights(control_seed(seed, model.card.model_id))


class ModelCache(dict):
    """Library models, each loaded (and its files verified) on first use; with ``control_seed``
    set, their controls (:func:`control_of`) in a run of that seed."""

    def __init__(self, library, control_seed: int | None = None):
        super().__init__()
        self.library, self.control_seed = library, control_seed

    def __missing__(self, model_id: str):
        model = self.library.load(model_id)
        if self.control_seed is not None:
            model = control_of(model, self.control_seed)
        self[model_id] = model
        return model


def neural_features(model, raw: dict, max_depth: int) -> list[tuple[int, np.ndarray]]:
    """(depth, float64 features) of ``model`` on the target's descriptors ``raw`` (by spec key)
    for depths 1 .. min(max_depth, its hidden layers), from one forward pass."""
    depths = range(1, min(max_depth, model.n_hidden) + 1)
    X = raw[spec_key(model.card.descriptor)]
    return [(d, F.astype(np.float64)) for d, F in zip(depths, model.features_at(X, depths))]


def source_prediction(model, raw: dict) -> np.ndarray:
    """``model``'s prediction (standardised target, float64) on the target's descriptors ``raw``:
    one column of the properties-as-features descriptor."""
    X = raw[spec_key(model.card.descriptor)]
    return (model.predict_descriptors(X) - model.y_mean) / model.y_std
