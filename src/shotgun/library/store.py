"""An assembled model library: opened, verified by checksum, queried and loaded.

Layout of a library folder::

    index.parquet          one row per model (the query path)
    cards/<id>.json        model card: everything needed to rebuild and use the model
    models/<id>.safetensors network weights, the input scaler and the sorted hashes of the
                           training inputs (``train_inputs``; absent in older libraries)
    manifest.json          library version and the sha256 of every other file

Nothing here unpickles: weights are safetensors, metadata JSON and Parquet. Every file is checked
against the manifest before it is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..checksums import sha256
from .card import LibraryError, ModelCard, is_weak

if TYPE_CHECKING:
    from .predictor import Predictor

MANIFEST = "manifest.json"
INDEX = "index.parquet"


class Library:
    """A library folder: ``Library.open(path)``, then ``query``, ``card``, ``load``."""

    def __init__(self, root: Path, manifest: dict, index: pd.DataFrame):
        self.root, self.manifest, self.index = root, manifest, index

    @classmethod
    def open(cls, path: str | Path) -> Library:
        root = Path(path).resolve()  # pin one build even if the link moves on
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise LibraryError(f"{root}: not a library (no {MANIFEST})")
        manifest = json.loads(mpath.read_text())
        lib = cls(root, manifest, pd.DataFrame())
        lib.index = pd.read_parquet(lib.verified(INDEX))
        if "weak" not in lib.index:  # libraries built before the flag
            lib.index["weak"] = [is_weak(r2) for r2 in lib.index["test_r2"]]
        return lib

    @property
    def version(self) -> str:
        return self.manifest["library_version"]

    def verified(self, rel: str) -> Path:
        """Path of a library file after checking it against the manifest."""
        expected = self.manifest["files"].get(rel)
        path = self.root / rel
        if expected is None:
            raise LibraryError(f"{path}: not listed in the manifest")
        if not path.is_file():
            raise LibraryError(f"{path}: missing")
        if sha256(path) != expected:
            raise LibraryError(
                f"{path}: checksum mismatch (file changed since the library was built)"
            )
        return path

    def verify(self) -> list[str]:
        """Problems found (empty when every file matches the manifest and nothing is extra)."""
        problems = []
        for rel in self.manifest["files"]:
            try:
                self.verified(rel)
            except LibraryError as err:
                problems.append(str(err))
        listed = set(self.manifest["files"]) | {MANIFEST}
        for p in self.root.rglob("*"):
            if p.is_file() and p.relative_to(self.root).as_posix() not in listed:
                problems.append(f"{p}: not listed in the manifest")
        return problems

    def query(
        self,
        kind: str | None = None,
        property: str | None = None,
        descriptor: str | None = None,
        dataset: str | None = None,
        min_r2: float | None = None,
        top: int | None = None,
    ) -> pd.DataFrame:
        """Models filtered by material class, property, descriptor, dataset and test R²,
        best R² first. An unknown kind or descriptor, or ``top`` below 1, is an error."""
        from .. import INPUT_KINDS
        from ..descriptors import DESCRIPTORS

        if kind is not None and kind not in INPUT_KINDS:
            raise LibraryError(f"unknown kind {kind!r}; choose from {', '.join(INPUT_KINDS)}")
        if descriptor is not None and descriptor not in DESCRIPTORS:
            raise LibraryError(
                f"unknown descriptor {descriptor!r}; choose from {', '.join(DESCRIPTORS)}"
            )
        if top is not None and top < 1:
            raise LibraryError(f"top must be at least 1, got {top}")
        q = self.index
        for col, val in (
            ("material_class", kind),
            ("property", property),
            ("descriptor", descriptor),
            ("dataset", dataset),
        ):
            if val is not None:
                q = q[q[col] == val]
        if min_r2 is not None:
            q = q[q["test_r2"] >= min_r2]
        q = q.sort_values("test_r2", ascending=False, kind="stable")
        return (q.head(top) if top else q).reset_index(drop=True)

    def applicable(self, kind: str) -> pd.DataFrame:
        """Models that accept inputs of material class ``kind``: through their own descriptor or
        through one featurizing ``kind`` into the same feature space (e.g. organic_composition
        for composition models: the cross-class bridges)."""
        from ..descriptors import for_kind

        if self.index.empty:
            return self.index
        keys = list(zip(self.index["descriptor"], self.index["descriptor_version"]))
        first = dict(zip(keys, self.index["model_id"]))  # one card per descriptor and version
        usable = {
            key: for_kind(self.card(mid).descriptor, kind) is not None for key, mid in first.items()
        }
        return self.index[[usable[k] for k in keys]]

    def card(self, model_id: str) -> ModelCard:
        if model_id not in set(self.index["model_id"]):
            raise LibraryError(f"{self.root}: no model {model_id!r}")
        return ModelCard.read(self.verified(f"cards/{model_id}.json"))

    def load(self, model_id: str) -> Predictor:
        """The model, ready to predict (its card and weights verified first)."""
        from .predictor import Predictor

        card = self.card(model_id)
        return Predictor(card, self.verified(card.weights))


def diff_libraries(a: Library, b: Library) -> dict:
    """Models added, removed, changed (same id, other weights or metrics) and unchanged."""
    ia, ib = a.index.set_index("model_id"), b.index.set_index("model_id")
    common = ia.index.intersection(ib.index)
    changed = [
        m
        for m in common
        if a.manifest["files"][f"models/{m}.safetensors"]
        != b.manifest["files"][f"models/{m}.safetensors"]
        or not ia.loc[m, ["test_mae", "test_r2"]].equals(ib.loc[m, ["test_mae", "test_r2"]])
    ]
    return {
        "a": {"path": str(a.root), "version": a.version, "n_models": len(ia)},
        "b": {"path": str(b.root), "version": b.version, "n_models": len(ib)},
        "added": sorted(ib.index.difference(ia.index)),
        "removed": sorted(ia.index.difference(ib.index)),
        "changed": sorted(changed),
        "unchanged": len(common) - len(changed),
    }
