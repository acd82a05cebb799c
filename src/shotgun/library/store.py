"""An assembled model library: opened, verified by checksum, queried and loaded.

Layout of a library folder (``FORMAT``)::

    index.parquet          one row per model (the query path) and where its card and weights are
    cards.jsonl            one model card per line: everything needed to rebuild and use a model
    weights/<dataset>/<property>/<descriptor>/<first>-<last>-<digest>.safetensors
                           the weights of one shard's models, their input scaler and the sorted
                           hashes of each model's training inputs (``packs``)
    manifest.json          library version, format, weights dtype and the sha256 of every file

The index is checked against the manifest when the library is opened; it records the sha256 of
each model's card line and of each model's tensors, which are checked when that model is read, so
one model is read and verified without its neighbours. ``verify`` checks every file whole.
Nothing here unpickles: weights are safetensors, metadata JSON and Parquet.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..checksums import sha256
from ..parallel import available_cpus
from .card import LibraryError, ModelCard

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .predictor import Predictor

MANIFEST = "manifest.json"
INDEX = "index.parquet"
CARDS = "cards.jsonl"
FORMAT = "shotgun-library/2"
# Index columns beyond the card's row (INDEX_COLUMNS): where a model's card and weights are and
# their checksums (weights_sha256: the trained weights file; tensors_sha256: as packed).
STORAGE_COLUMNS = [
    "weights",
    "weights_sha256",
    "tensors_sha256",
    "card_offset",
    "card_length",
    "card_sha256",
]


class Library:
    """A library folder: ``Library.open(path)``, then ``query``, ``card``, ``load``."""

    def __init__(self, root: Path, manifest: dict, index: pd.DataFrame, storage: pd.DataFrame):
        self.root, self.manifest, self.index = root, manifest, index
        self.storage = storage  # STORAGE_COLUMNS by model id

    @classmethod
    def open(cls, path: str | Path) -> Library:
        root = Path(path).resolve()  # pin one build even if the link moves on
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise LibraryError(f"{root}: not a library (no {MANIFEST})")
        manifest = json.loads(mpath.read_text())
        found = manifest.get("format", "1 (a file per model)")
        if found != FORMAT:
            raise LibraryError(
                f"{root}: library format {found}; this shotgun reads {FORMAT}: build it again "
                "from its shards (shotgun library build) or from the tracking store (shotgun "
                "library from-mlflow)"
            )
        lib = cls(root, manifest, pd.DataFrame(), pd.DataFrame())
        table = pd.read_parquet(lib.verified(INDEX))
        lib.index = table.drop(columns=STORAGE_COLUMNS)
        lib.storage = table.set_index("model_id")[STORAGE_COLUMNS]
        return lib

    @property
    def version(self) -> str:
        return self.manifest["library_version"]

    def verified(self, rel: str) -> Path:
        """Path of a library file after checking it against the manifest."""
        path = self.listed(rel)
        if sha256(path) != self.manifest["files"][rel]:
            raise LibraryError(
                f"{path}: checksum mismatch (file changed since the library was built)"
            )
        return path

    def listed(self, rel: str) -> Path:
        """Path of a library file listed in the manifest (not checksummed: for files read in
        parts, each part checked against its own digest)."""
        path = self.root / rel
        if rel not in self.manifest["files"]:
            raise LibraryError(f"{path}: not listed in the manifest")
        if not path.is_file():
            raise LibraryError(f"{path}: missing")
        return path

    def verify(self) -> list[str]:
        """Problems found (empty when every file matches the manifest and nothing is extra).
        Files are checksummed in parallel threads (hashing releases the GIL)."""

        def problem(rel: str) -> str | None:
            try:
                self.verified(rel)
            except LibraryError as err:
                return str(err)
            return None

        with ThreadPoolExecutor(available_cpus()) as pool:
            problems = [p for p in pool.map(problem, self.manifest["files"]) if p]
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

    def _stored(self, model_id: str) -> pd.Series:
        try:
            return self.storage.loc[model_id]
        except KeyError:
            raise LibraryError(f"{self.root}: no model {model_id!r}") from None

    def card(self, model_id: str) -> ModelCard:
        """A model's card (its line of ``cards.jsonl``, checked against its digest)."""
        row = self._stored(model_id)
        path = self.listed(CARDS)
        with open(path, "rb") as f:
            f.seek(int(row["card_offset"]))
            line = f.read(int(row["card_length"]))
        if hashlib.sha256(line).hexdigest() != row["card_sha256"]:
            raise LibraryError(
                f"{path}: checksum mismatch in the card of {model_id} (file changed since the "
                "library was built)"
            )
        return ModelCard.from_dict(json.loads(line), f"{path}: card of {model_id}")

    def weights(self, model_id: str, card: ModelCard | None = None) -> dict[str, torch.Tensor]:
        """A model's tensors as stored, under the names of a shard's weights file (network
        ``net.*`` and input scaler), checked against their digest; its neighbours in the pack
        are not read (``card``: the model's, when already read)."""
        from .packs import read_model, tensors_digest

        row = self._stored(model_id)
        path = self.listed(row["weights"])
        scaler = (card or self.card(model_id)).input_scaler.tensors
        tensors = read_model(path, model_id, scaler)
        if tensors_digest(tensors) != row["tensors_sha256"]:
            raise LibraryError(
                f"{path}: checksum mismatch in the weights of {model_id} (file changed since "
                "the library was built)"
            )
        return tensors

    def train_inputs(self, model_id: str) -> np.ndarray | None:
        """The sorted 64-bit hashes of a model's canonical training and validation inputs
        (:func:`shotgun.data.input_hashes`; the leakage guard's), read alone from its pack: not
        checked here (the model's digest covers its network too), but with every other tensor
        of the model when it is loaded; None for libraries built before they were recorded."""
        from .packs import read_tensor

        seen = read_tensor(self.listed(self._stored(model_id)["weights"]), model_id, "train_inputs")
        return None if seen is None else seen.numpy()

    def load(self, model_id: str) -> Predictor:
        """The model, ready to predict (its card and weights verified first)."""
        from .predictor import Predictor

        card = self.card(model_id)
        return Predictor(card, self.weights(model_id, card))


def diff_libraries(a: Library, b: Library) -> dict:
    """Models added, removed, changed (same id, other weights or metrics) and unchanged."""
    ia, ib = a.index.set_index("model_id"), b.index.set_index("model_id")
    common = ia.index.intersection(ib.index)
    changed = [
        m
        for m in common
        if a.storage.at[m, "weights_sha256"] != b.storage.at[m, "weights_sha256"]
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
