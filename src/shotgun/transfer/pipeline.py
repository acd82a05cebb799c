"""The saved model of a transfer run (``OUT/model/``): the winner refitted on all target rows,
stored without pickle and loaded for ``shotgun predict --model``.

The winner is one of five methods (``method`` in ``model.json``), each a list of *members*
whose predictions are averaged with the members' weights: ``transfer`` (one learner on a
source network's neural features), ``stack`` (the K transferred models of the stack),
``baseline`` (one learner from scratch on a raw descriptor), ``properties`` (one learner on the
predictions of many library models) or ``blend`` (the members of the baseline, the stack and
properties, each method weighted equally). The folder holds each member's training matrix and
the target's values (``train.safetensors``), each source network's card and weights
(``source-<i>.json``, ``source-<i>.safetensors``), and each member's learner, weight and
descriptor spec (``model.json``);
loading refits the deterministic learners. Every file is checksummed in ``manifest.json`` and
checked when loaded. A ``properties`` member names its source models (``source_model_ids``)
instead of copying them: they are loaded, and verified, from the library the run used (its
path and version in ``model.json``, or another copy of that version).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checksums import sha256
from ..library.card import LibraryError, ModelCard
from .learners import fit_learner

MODEL_FORMAT = "shotgun-transfer/2"
METHODS = ("transfer", "stack", "baseline", "properties", "blend")


@dataclass
class Member:
    """One learner of a saved model, fitted on ``features`` of all target rows: the neural
    features of ``source`` (a library model) at ``depth``, the raw ``descriptor`` (a spec), or
    the predictions of the library models ``sources`` (ids)."""

    learner: str
    features: np.ndarray
    source: object = None
    depth: int | None = None
    descriptor: dict | None = None
    sources: list[str] | None = None
    weight: float = 1.0  # in the weighted mean of the members' predictions


def save_model(
    dest: Path,
    method: str,
    name: str,
    members: Sequence[Member],
    seed: int,
    y: np.ndarray,
    target: dict,
    metrics: dict,
    library,
) -> Path:
    """The winner ``method`` (described by ``name``) refitted on all target rows: its members'
    training matrices, the target's values, the source networks (card + weights) and each
    learner's name and seed. Loading refits the (deterministic) learners on them; files are
    checksummed in manifest.json; no pickle."""
    from safetensors.numpy import save_file

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    tensors = {"y": np.asarray(y, dtype=np.float64)}
    described, files = [], []
    for i, m in enumerate(members):
        tensors[f"features/{i}"] = np.asarray(m.features, dtype=np.float64)
        if m.sources is not None:
            described.append(
                {"learner": m.learner, "weight": m.weight, "source_model_ids": list(m.sources)}
            )
            continue
        if m.source is None:
            described.append({"learner": m.learner, "weight": m.weight, "descriptor": m.descriptor})
            continue
        card = m.source.card
        stem = f"source-{i}"
        (dest / f"{stem}.json").write_text(card.to_json())
        m.source.save_weights(dest / f"{stem}.safetensors")
        files += [f"{stem}.json", f"{stem}.safetensors"]
        described.append(
            {
                "learner": m.learner,
                "weight": m.weight,
                "source_model_id": card.model_id,
                "source": stem,
                "depth": int(m.depth),
                "descriptor": card.descriptor,
            }
        )
    save_file(tensors, str(dest / "train.safetensors"))
    meta = {
        "format": MODEL_FORMAT,
        "method": method,
        "name": name,
        "members": described,
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
    files += ["train.safetensors", "model.json"]
    (dest / "manifest.json").write_text(
        json.dumps({"files": {f: sha256(dest / f) for f in files}}, indent=2)
    )
    return dest


class TransferModel:
    """A saved transfer run's winner: ``predict(inputs)`` in the target's unit, the weighted mean
    of its members (NaN where an input cannot be featurized)."""

    def __init__(self, path: Path):
        from safetensors.numpy import load_file

        from ..library.predictor import Predictor

        path = self.path = Path(path)
        manifest = json.loads((path / "manifest.json").read_text())
        for name, digest in manifest["files"].items():
            if sha256(path / name) != digest:
                raise LibraryError(f"{path / name}: checksum mismatch (tampered or corrupt)")
        self.meta = json.loads((path / "model.json").read_text())
        found = self.meta.get("format")
        if found != MODEL_FORMAT:
            raise LibraryError(
                f"{path}: saved model format {found!r}, this release reads {MODEL_FORMAT} "
                "(run shotgun transfer again to save it in this format)"
            )
        train = load_file(str(path / "train.safetensors"))
        seed = self.meta["seed"]
        self.members = []
        for i, m in enumerate(self.meta["members"]):
            source = None
            if "source_model_ids" in m:
                source = self._library_models(m["source_model_ids"])
            elif "source" in m:
                card = ModelCard.read(path / f"{m['source']}.json")
                source = Predictor(card, path / f"{m['source']}.safetensors")
            fitted = fit_learner(m["learner"], seed, train[f"features/{i}"], train["y"])
            self.members.append((m, source, fitted))

    def _library_models(self, model_ids: list[str]) -> list:
        """The source models of a ``properties`` member, loaded and verified from the library
        the run used."""
        from ..library import Library

        root, version = self.meta["library"], self.meta["library_version"]
        try:
            lib = Library.open(root)
            if lib.version != version:
                raise LibraryError(f"{root}: version {lib.version}, not {version}")
            return [lib.load(mid) for mid in model_ids]
        except (LibraryError, KeyError, OSError) as err:
            raise LibraryError(
                f"{self.path}: its method (properties) uses {len(model_ids)} models of the "
                f"library {root} (version {version}), which cannot be loaded: {err}"
            ) from None

    def predict(self, inputs: str | Sequence[str]) -> np.ndarray:
        """Predictions in the target's unit (the members' weighted mean); a single string is one
        input, inputs not of the target's kind are refused (or, when some, warned about and
        NaN)."""
        from ..data.inputs import KIND_NOUNS, check_kinds, input_list
        from ..descriptors import for_kind
        from .candidates import source_prediction, spec_key

        inputs, kind = [str(s) for s in input_list(inputs)], self.meta["kind"]
        fits = check_kinds(inputs, (kind,), f"saved model {self.path} ({KIND_NOUNS[kind]})").fits
        raw: dict[str, tuple] = {}  # each descriptor computed once for all members
        preds = []

        def descriptor(spec: dict):
            key = spec_key(spec)
            if key not in raw:
                d = for_kind(spec, kind)
                if d is None:
                    raise LibraryError(f"descriptor {spec['name']} cannot take {kind}")
                X, ok = d.featurize(inputs)
                ok &= fits
                raw[key] = np.where(ok[:, None], X, 0.0), ok
            return raw[key]

        for m, source, fitted in self.members:
            if "source_model_ids" in m:  # properties as features
                columns = [descriptor(s.card.descriptor) for s in source]
                ok = np.logical_and.reduce([c[1] for c in columns])
                F = np.column_stack(
                    [
                        source_prediction(s, {spec_key(s.card.descriptor): X})
                        for s, (X, _) in zip(source, columns)
                    ]
                )
            else:
                X, ok = descriptor(m["descriptor"])
                F = X if source is None else source.features_descriptors(X, m["depth"])
            ok = ok & np.isfinite(F).all(axis=1)
            pred = np.full(len(F), np.nan)
            if ok.any():
                pred[ok] = fitted.predict(F[ok].astype(np.float64))
            preds.append(pred)
        weights = [m.get("weight", 1.0) for m, _, _ in self.members]
        return np.average(preds, axis=0, weights=weights)
