"""The saved transfer pipeline (``OUT/model/``): the chosen pipeline refitted on all target rows,
stored without pickle and loaded for ``shotgun predict --model``.

The folder holds the source network (its card and weights), the target's neural features and
values, and the learner's name and seed; loading refits the deterministic learner. Every file is
checksummed in ``manifest.json`` and checked when loaded.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..checksums import sha256
from ..library.card import LibraryError, ModelCard
from .learners import make_learner

MODEL_FORMAT = "shotgun-transfer/1"


def save_model(
    dest: Path,
    model,
    depth: int,
    learner: str,
    seed: int,
    F: np.ndarray,
    y: np.ndarray,
    target: dict,
    metrics: dict,
    library,
) -> Path:
    """The chosen pipeline refitted on all target rows: the source network (card + weights),
    the target's neural features and values, and the learner's name and seed. Loading refits the
    (deterministic) learner on them; files are checksummed in manifest.json; no pickle."""
    from safetensors.numpy import save_file

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    mid = model.card.model_id
    (dest / "source.json").write_text(json.dumps(model.card.to_dict(), indent=2, sort_keys=True))
    model.save_weights(dest / "source.safetensors")
    save_file(
        {"features": F.astype(np.float64), "y": y.astype(np.float64)},
        str(dest / "train.safetensors"),
    )
    meta = {
        "format": MODEL_FORMAT,
        "source_model_id": mid,
        "depth": depth,
        "learner": learner,
        "seed": seed,
        "kind": target["kind"],
        "input": target["input"],
        "target": target["target"],
        "unit": target.get("unit"),
        "n_train": int(len(y)),
        "cv": metrics,
        "library": str(library.root),
        "library_version": library.version,
    }
    (dest / "model.json").write_text(json.dumps(meta, indent=2))
    files = ["source.json", "source.safetensors", "train.safetensors", "model.json"]
    (dest / "manifest.json").write_text(
        json.dumps({"files": {f: sha256(dest / f) for f in files}}, indent=2)
    )
    return dest


class TransferModel:
    """A saved transfer pipeline: ``predict(inputs)`` in the target's unit (NaN where an input
    cannot be featurized)."""

    def __init__(self, path: Path):
        from safetensors.numpy import load_file

        from ..library.predictor import Predictor

        path = Path(path)
        manifest = json.loads((path / "manifest.json").read_text())
        for name, digest in manifest["files"].items():
            if sha256(path / name) != digest:
                raise LibraryError(f"{path / name}: checksum mismatch (tampered or corrupt)")
        self.meta = json.loads((path / "model.json").read_text())
        if self.meta.get("format") != MODEL_FORMAT:
            raise LibraryError(f"{path}: not a saved transfer model ({MODEL_FORMAT})")
        card = ModelCard.read(path / "source.json")
        self.source = Predictor(card, path / "source.safetensors")
        train = load_file(str(path / "train.safetensors"))
        self.learner = make_learner(self.meta["learner"], self.meta["seed"]).fit(
            train["features"], train["y"]
        )

    def predict(self, inputs: Sequence[str]) -> np.ndarray:
        F = self.source.features(inputs, self.meta["depth"], kind=self.meta["kind"])
        ok = np.isfinite(F).all(axis=1)
        out = np.full(len(F), np.nan)
        if ok.any():
            out[ok] = self.learner.predict(F[ok].astype(np.float64))
        return out
