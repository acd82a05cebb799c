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
import socket
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import __version__
from .checksums import sha256

MANIFEST = "manifest.json"
INDEX = "index.parquet"


INDEX_COLUMNS = ["model_id", "material_class", "dataset", "property", "unit", "descriptor",
                 "descriptor_version", "input_kinds", "architecture", "n_hidden", "n_train",
                 "n_val", "n_test", "test_mae", "test_rmse", "test_r2", "mlflow_run_id",
                 "data_hash"]


class LibraryError(RuntimeError):
    pass


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


def shard_models(shard_dirs: Iterable[Path]) -> list[tuple[dict, Path]]:
    """(card, weights path) of every model card found in the given shard folders."""
    found = []
    for d in shard_dirs:
        for path in sorted(Path(d).glob("*.json")):
            card = json.loads(path.read_text())
            if "model_id" in card:
                found.append((card, Path(d) / card["weights"]))
    return found


def write_library(dest: Path, models: Sequence[tuple[dict, Path]], version: str,
                  reuse: "Library | None" = None, **extra) -> dict:
    """Write a library folder at ``dest`` (which must not exist) from (card, weights) pairs.

    Weights whose checksum matches a file of ``reuse`` are hard-linked from it instead of copied.
    """
    (dest / "models").mkdir(parents=True)
    (dest / "cards").mkdir()
    old = reuse.manifest["files"] if reuse else {}
    files, rows, seen = {}, [], set()
    for card, weights in models:
        mid = card["model_id"]
        if mid in seen:
            raise LibraryError(f"{weights}: model {mid} appears twice")
        seen.add(mid)
        rel = f"models/{mid}.safetensors"
        if old.get(rel) == card["weights_sha256"]:
            try:
                os.link(reuse.root / rel, dest / rel)
            except OSError:
                shutil.copyfile(reuse.root / rel, dest / rel)
        else:
            shutil.copyfile(weights, dest / rel)
            if sha256(dest / rel) != card["weights_sha256"]:
                raise LibraryError(f"{weights}: checksum differs from its card")
        files[rel] = card["weights_sha256"]
        card = dict(card, weights=rel)
        text = json.dumps(card, indent=1, sort_keys=True)
        (dest / "cards" / f"{mid}.json").write_text(text)
        files[f"cards/{mid}.json"] = hashlib.sha256(text.encode()).hexdigest()
        rows.append(index_row(card))
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS).sort_values(
        ["material_class", "dataset", "property", "model_id"])
    index.to_parquet(dest / INDEX, index=False)
    files[INDEX] = sha256(dest / INDEX)
    manifest = {"library_version": version, "shotgun_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "n_models": len(rows), "files": dict(sorted(files.items())), **extra}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _tag() -> str:
    """Names this process's scratch entries: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _abandoned(name: str, prefix: str) -> bool:
    """Whether ``name`` (``<prefix><host>-<pid>``) is scratch of a process of this host that is
    gone (a build killed before it could clean up)."""
    host, _, pid = name[len(prefix):].rpartition("-")
    if not name.startswith(prefix) or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False


def _retire(build: Path, versions: Path) -> None:
    """Delete a build: renamed first (atomic), so that a deletion cut short leaves no
    half-deleted build that a later build of the same content would take as complete."""
    doomed = versions / f".deleting-{_tag()}-{build.name}"
    try:
        build.rename(doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _clean_scratch(out: Path, versions: Path) -> None:
    """Remove what killed builds left: half-written and half-deleted builds, unused links."""
    for p in versions.iterdir():
        if p.name.startswith(".deleting-") or _abandoned(p.name, ".building-"):
            shutil.rmtree(p, ignore_errors=True)
    for p in out.parent.glob(f".{out.name}.link-*"):
        if _abandoned(p.name, f".{out.name}.link-"):
            p.unlink(missing_ok=True)


def build_library(shard_dirs: Sequence[Path], out: Path, version: str, keep: int = 2) -> dict:
    """Assemble shards into the library at ``out``, incrementally and atomically.

    Each build is a folder under ``<out>.versions/`` named by version and content; ``out`` is a
    symbolic link switched to the new folder in one atomic rename, so a crash at any point leaves
    the previous library intact (a later build removes what the crash left). Unchanged weights
    are hard-linked from the previous build; the new build, the previous one and the newest
    others up to ``keep`` builds in all are kept.
    """
    out = Path(out)
    versions = out.parent / f"{out.name}.versions"
    versions.mkdir(parents=True, exist_ok=True)
    _clean_scratch(out, versions)
    if out.is_dir() and not out.is_symlink():  # a plain folder: keep it as a past build, linked
        past = versions / f"previous-{os.getpid()}"
        out.rename(past)
        os.symlink(os.path.relpath(past, out.parent), out)
    previous = None
    if out.exists():
        try:
            previous = Library.open(out)
        except LibraryError:
            pass
    tmp = versions / f".building-{_tag()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = write_library(tmp, shard_models(shard_dirs), version, reuse=previous)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    content = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()
    final = versions / f"{version}-{content[:12]}"
    if final.exists():  # identical content already built: keep that one
        shutil.rmtree(tmp)
        manifest = json.loads((final / MANIFEST).read_text())
    else:
        tmp.rename(final)
    link = out.parent / f".{out.name}.link-{_tag()}"
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(final, out.parent), link)
    os.replace(link, out)
    # Kept first: the new build, then the one it replaced (readers may still hold it, and a
    # killed build can leave a newer one that was never linked), then the newest others.
    current, replaced = final.resolve(), previous.root if previous else None
    builds = sorted((p.resolve() for p in versions.iterdir()
                     if p.is_dir() and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    ranked = ([current] + [b for b in builds if b == replaced and b != current]
              + [b for b in builds if b not in (current, replaced)])
    for stale in ranked[max(keep, 1):]:
        _retire(stale, versions)
    return manifest


class Library:
    """A library folder: ``Library.open(path)``, then ``query``, ``card``, ``load``."""

    def __init__(self, root: Path, manifest: dict, index: pd.DataFrame):
        self.root, self.manifest, self.index = root, manifest, index

    @classmethod
    def open(cls, path: str | Path) -> "Library":
        root = Path(path).resolve()  # pin one build even if the link moves on
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
        """Models that accept inputs of material class ``kind``: through their own descriptor or
        through one featurizing ``kind`` into the same feature space (e.g. organic_composition
        for composition models: the cross-class bridges)."""
        from .descriptors import for_kind

        if self.index.empty:
            return self.index
        keys = list(zip(self.index["descriptor"], self.index["descriptor_version"]))
        first = dict(zip(keys, self.index["model_id"]))  # one card per descriptor and version
        usable = {key: for_kind(self.card(mid)["descriptor"], kind) is not None
                  for key, mid in first.items()}
        return self.index[[usable[k] for k in keys]]

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
        import torch
        from safetensors.torch import load_file

        from .descriptors import from_spec
        from .models import build_network

        self.card = card
        self.descriptor = from_spec(card["descriptor"])
        tensors = load_file(str(weights))
        self.x_mean = tensors.pop("x_mean").numpy()
        self.x_std = tensors.pop("x_std").numpy()
        with torch.device("meta"):  # no random initialisation: the weights replace it
            self.net = build_network(card["architecture"])
        self.net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()},
                                 assign=True)
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
        return self.features_at(X, [depth])[0]

    def features_at(self, X: np.ndarray, depths: Sequence[int]) -> list[np.ndarray]:
        """``features_descriptors`` at each of ``depths``, from one forward pass."""
        import torch

        with torch.no_grad():
            return [F.numpy() for F in self.net.hidden_features_at(self._scaled(X), depths)]

    def _descriptors(self, inputs: Sequence[str], kind: str | None = None):
        """Descriptor matrix and ok mask; ``kind`` names the inputs' material class when it is
        not the model's own (e.g. molecules for a composition model: organic_composition)."""
        from .descriptors import for_kind

        d = self.descriptor
        if kind is not None and kind not in d.kinds:
            d = for_kind(self.card["descriptor"], kind)
            if d is None:
                raise LibraryError(f"model {self.card['model_id']} ({self.descriptor.name}) "
                                   f"cannot take {kind} inputs")
        X, ok = d.featurize(list(inputs))
        return np.where(ok[:, None], X, 0.0), ok

    def predict(self, inputs: Sequence[str], kind: str | None = None) -> np.ndarray:
        """Predictions for SMILES or formulas; NaN where an input cannot be featurized."""
        X, ok = self._descriptors(inputs, kind)
        return np.where(ok, self.predict_descriptors(X), np.nan)

    def features(self, inputs: Sequence[str], depth: int = 1, kind: str | None = None):
        X, ok = self._descriptors(inputs, kind)
        return np.where(ok[:, None], self.features_descriptors(X, depth), np.nan)


def features_many(library: Library, model_ids: Sequence[str], inputs: Sequence[str],
                  depth: int = 1, kind: str | None = None) -> dict[str, np.ndarray]:
    """Neural descriptors of many models for one set of inputs (of material class ``kind``,
    bridged into each model's feature space when needed), each descriptor computed once.

    Rows whose input a model's descriptor cannot featurize are NaN for that model.
    """
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out = {}
    for mid in model_ids:
        model = library.load(mid)
        key = json.dumps(model.card["descriptor"], sort_keys=True)
        if key not in cache:
            cache[key] = model._descriptors(inputs, kind)
        X, ok = cache[key]
        out[mid] = np.where(ok[:, None], model.features_descriptors(X, depth), np.nan)
    return out


def diff_libraries(a: Library, b: Library) -> dict:
    """Models added, removed, changed (same id, other weights or metrics) and unchanged."""
    ia, ib = a.index.set_index("model_id"), b.index.set_index("model_id")
    common = ia.index.intersection(ib.index)
    changed = [m for m in common
               if a.manifest["files"][f"models/{m}.safetensors"]
               != b.manifest["files"][f"models/{m}.safetensors"]
               or not ia.loc[m, ["test_mae", "test_r2"]].equals(ib.loc[m, ["test_mae", "test_r2"]])]
    return {"a": {"path": str(a.root), "version": a.version, "n_models": len(ia)},
            "b": {"path": str(b.root), "version": b.version, "n_models": len(ib)},
            "added": sorted(ib.index.difference(ia.index)),
            "removed": sorted(ia.index.difference(ib.index)),
            "changed": sorted(changed),
            "unchanged": len(common) - len(changed)}


def pack(library: Library, archive: Path, **query) -> int:
    """Write ``library`` (or the subset a query selects) to a .tar.gz; returns the model count."""
    import tarfile
    import tempfile

    ids = library.query(**query)["model_id"] if query else library.index["model_id"]
    models = []
    for mid in ids:
        card = library.card(mid)
        models.append((card, library._checked(card["weights"])))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "library"
        extra = {"subset_of": library.version, "query": query} if query else {}
        write_library(root, models, library.version, **extra)
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(root.rglob("*")):
                tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return len(models)


def unpack(archive: Path, dest: Path) -> Library:
    """Extract a packed library into the new folder ``dest`` after checking every member.

    Absolute paths, ``..``, links and special files are refused; every file must match the
    manifest before the library is moved into place.
    """
    import tarfile

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise LibraryError(f"{dest}: exists and is not empty")
    tmp = dest.parent / f".{dest.name}.unpacking-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    ok = False
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if m.name.startswith(("/", "\\")) or Path(m.name).is_absolute() or ".." in parts:
                    raise LibraryError(f"{archive}: unsafe path {m.name!r} in archive")
                if not (m.isfile() or m.isdir()):
                    raise LibraryError(f"{archive}: {m.name!r} is a link or special file")
            tar.extractall(tmp, filter="data")
        problems = Library.open(tmp).verify()
        if problems:
            raise LibraryError(f"{archive}: " + "; ".join(problems[:5]))
        ok = True
    except (tarfile.TarError, OSError) as err:
        raise LibraryError(f"{archive}: cannot unpack: {err}") from err
    finally:
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    return Library.open(dest)


def from_mlflow(uri: str, library_version: str, out: Path) -> dict:
    """Rebuild a library at the new folder ``out`` from the tracking store: the card and weights
    artifacts of every finished run of the version's experiment."""
    import tempfile

    from .tracking import finished_runs

    out = Path(out)
    if out.exists():
        raise LibraryError(f"{out}: exists")
    with tempfile.TemporaryDirectory() as tmp:
        models = []
        for client, run in finished_runs(uri, library_version):
            rid, d = run.info.run_id, Path(tmp) / run.info.run_id
            d.mkdir()
            card = json.loads(Path(client.download_artifacts(rid, "card.json", str(d))).read_text())
            name = f"{card['model_id']}.safetensors"
            models.append((card, Path(client.download_artifacts(rid, name, str(d)))))
        return write_library(out, models, library_version, source=uri)
