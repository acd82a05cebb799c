"""The model library: assembled from trained shards, verified by checksum, queried and loaded.

Layout of a library folder::

    index.parquet          one row per model (the query path)
    cards/<id>.json        model card: everything needed to rebuild and use the model
    models/<id>.safetensors network weights and the input scaler
    manifest.json          library version and the sha256 of every other file

Nothing here unpickles: weights are safetensors, metadata JSON and Parquet. Every file is checked
against the manifest before it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import __version__

MANIFEST = "manifest.json"
INDEX = "index.parquet"


class LibraryError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def index_row(card: dict) -> dict:
    from .descriptors import from_spec

    m = card["metrics"]
    return {
        "model_id": card["model_id"],
        "material_class": card["material_class"],
        "dataset": card["dataset"],
        "property": card["property"],
        "unit": card["unit"],
        "descriptor": card["descriptor"]["name"],
        "descriptor_version": card["descriptor"]["version"],
        "input_kinds": ",".join(from_spec(card["descriptor"]).kinds),
        "architecture": card["architecture_name"],
        "n_hidden": len(card["architecture"]["hidden"]),
        "n_train": card["n_train"],
        "n_val": card["n_val"],
        "n_test": card["n_test"],
        "test_mae": m["test_mae"],
        "test_rmse": m["test_rmse"],
        "test_r2": m["test_r2"],
        "mlflow_run_id": card.get("mlflow_run_id", ""),
        "data_hash": card["data_hash"],
    }


def _shard_cards(shard_dirs: Iterable[Path]) -> list[tuple[Path, dict]]:
    found = []
    for d in shard_dirs:
        for path in sorted(Path(d).glob("*.json")):
            card = json.loads(path.read_text())
            if "model_id" in card:
                found.append((Path(d), card))
    return found


def build_library(shard_dirs: Sequence[Path], out: Path, version: str) -> dict:
    """Assemble shards into a library at ``out``; the swap into place is atomic."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "models").mkdir(parents=True)
    (tmp / "cards").mkdir()
    rows, seen = [], set()
    for shard, card in _shard_cards(shard_dirs):
        mid = card["model_id"]
        if mid in seen:
            raise LibraryError(f"{shard}: model {mid} appears in two shards")
        seen.add(mid)
        weights = shard / card["weights"]
        if sha256(weights) != card["weights_sha256"]:
            raise LibraryError(f"{weights}: checksum differs from its card")
        card = dict(card, weights=f"models/{mid}.safetensors")
        shutil.copyfile(weights, tmp / card["weights"])
        (tmp / "cards" / f"{mid}.json").write_text(json.dumps(card, indent=1, sort_keys=True))
        rows.append(index_row(card))
    index = pd.DataFrame(rows).sort_values(["material_class", "dataset", "property", "model_id"])
    index.to_parquet(tmp / INDEX, index=False)
    files = {p.relative_to(tmp).as_posix(): sha256(p)
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {"library_version": version, "shotgun_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "n_models": len(rows), "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


class Library:
    """A library folder: ``Library.open(path)``, then ``query``, ``card``, ``load``."""

    def __init__(self, root: Path, manifest: dict, index: pd.DataFrame):
        self.root, self.manifest, self.index = root, manifest, index

    @classmethod
    def open(cls, path: str | Path) -> "Library":
        root = Path(path)
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise LibraryError(f"{root}: not a library (no {MANIFEST})")
        manifest = json.loads(mpath.read_text())
        lib = cls(root, manifest, pd.DataFrame())
        lib.index = pd.read_parquet(lib._checked(INDEX))
        return lib

    @property
    def version(self) -> str:
        return self.manifest["library_version"]

    def _checked(self, rel: str) -> Path:
        """Path of a library file after checking it against the manifest."""
        expected = self.manifest["files"].get(rel)
        path = self.root / rel
        if expected is None:
            raise LibraryError(f"{path}: not listed in the manifest")
        if not path.is_file():
            raise LibraryError(f"{path}: missing")
        if sha256(path) != expected:
            raise LibraryError(f"{path}: checksum mismatch (file changed since the library was built)")
        return path

    def verify(self) -> list[str]:
        """Problems found (empty when every file matches the manifest and nothing is extra)."""
        problems = []
        for rel in self.manifest["files"]:
            try:
                self._checked(rel)
            except LibraryError as err:
                problems.append(str(err))
        listed = set(self.manifest["files"]) | {MANIFEST}
        for p in self.root.rglob("*"):
            if p.is_file() and p.relative_to(self.root).as_posix() not in listed:
                problems.append(f"{p}: not listed in the manifest")
        return problems

    def query(self, kind: str | None = None, property: str | None = None,
              descriptor: str | None = None, dataset: str | None = None,
              min_r2: float | None = None, top: int | None = None) -> pd.DataFrame:
        """Models filtered by material class, property, descriptor, dataset and test R²,
        best R² first."""
        q = self.index
        for col, val in (("material_class", kind), ("property", property),
                         ("descriptor", descriptor), ("dataset", dataset)):
            if val is not None:
                q = q[q[col] == val]
        if min_r2 is not None:
            q = q[q["test_r2"] >= min_r2]
        q = q.sort_values("test_r2", ascending=False, kind="stable")
        return (q.head(top) if top else q).reset_index(drop=True)

    def applicable(self, kind: str) -> pd.DataFrame:
        """Models whose descriptor accepts inputs of material class ``kind``."""
        return self.index[self.index["input_kinds"].str.split(",").apply(lambda ks: kind in ks)]

    def card(self, model_id: str) -> dict:
        if model_id not in set(self.index["model_id"]):
            raise LibraryError(f"{self.root}: no model {model_id!r}")
        return json.loads(self._checked(f"cards/{model_id}.json").read_text())

    def load(self, model_id: str) -> "Predictor":
        card = self.card(model_id)
        return Predictor(card, self._checked(card["weights"]))


class Predictor:
    """A library model ready to use: descriptor, scalers and network."""

    def __init__(self, card: dict, weights: Path):
        from safetensors.torch import load_file

        from .descriptors import from_spec
        from .models import build_network

        self.card = card
        self.descriptor = from_spec(card["descriptor"])
        tensors = load_file(str(weights))
        self.x_mean = tensors.pop("x_mean").numpy()
        self.x_std = tensors.pop("x_std").numpy()
        self.net = build_network(card["architecture"])
        self.net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()})
        self.net.eval()
        self.y_mean = card["target_scaler"]["mean"]
        self.y_std = card["target_scaler"]["std"]
        self.clip = card["input_scaler"]["clip"]

    @property
    def n_hidden(self) -> int:
        return len(self.card["architecture"]["hidden"])

    def _scaled(self, X: np.ndarray):
        import torch

        Z = np.clip((X - self.x_mean) / self.x_std, -self.clip, self.clip)
        return torch.as_tensor(Z.astype(np.float32))

    def predict_descriptors(self, X: np.ndarray) -> np.ndarray:
        """Predictions in the property's unit from a descriptor matrix."""
        import torch

        with torch.no_grad():
            return self.net(self._scaled(X)).numpy().astype(np.float64) * self.y_std + self.y_mean

    def features_descriptors(self, X: np.ndarray, depth: int = 1) -> np.ndarray:
        """Neural descriptors (pre-activations of the last ``depth`` hidden layers)."""
        import torch

        with torch.no_grad():
            return self.net.hidden_features(self._scaled(X), depth).numpy()

    def _descriptors(self, inputs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        X, ok = self.descriptor.featurize(list(inputs))
        return np.where(ok[:, None], X, 0.0), ok

    def predict(self, inputs: Sequence[str]) -> np.ndarray:
        """Predictions for SMILES or formulas; NaN where an input cannot be featurized."""
        X, ok = self._descriptors(inputs)
        return np.where(ok, self.predict_descriptors(X), np.nan)

    def features(self, inputs: Sequence[str], depth: int = 1) -> np.ndarray:
        X, ok = self._descriptors(inputs)
        return np.where(ok[:, None], self.features_descriptors(X, depth), np.nan)
