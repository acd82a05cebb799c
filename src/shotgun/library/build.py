"""Building libraries: from trained shards (incremental and atomic) or from the MLflow store.

A build writes a new folder under ``<library>.versions/``, hard-linking unchanged weight packs from
the previous build, and switches the library link to it in one atomic rename: a crash at any point
leaves the previous library intact, and the next build removes what the crash left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .. import __version__
from ..checksums import sha256
from ..progress import progress
from .card import INDEX_COLUMNS, LibraryError, ModelCard
from .packs import DTYPES, WEIGHTS_DTYPE, pack_name, shard_tensors, write_pack
from .store import CARDS, FORMAT, INDEX, MANIFEST, STORAGE_COLUMNS, Library

if TYPE_CHECKING:
    import torch

# A model's weights: its shard's file, or its tensors (from a library); None if it failed.
Weights = Path | Mapping[str, "torch.Tensor"] | None


def shard_models(shard_dirs: Iterable[Path]) -> list[tuple[ModelCard, Path | None]]:
    """(card, weights path) of every model card found in the given shard folders (no weights
    for a model that failed to train)."""
    found = []
    for d in shard_dirs:
        for path in sorted(Path(d).glob("*.json")):
            card = ModelCard.read(path)
            found.append((card, Path(d) / card.weights if card.weights else None))
    return found


def write_library(
    dest: Path,
    models: Sequence[tuple[ModelCard, Weights]],
    version: str,
    reuse: Library | None = None,
    weights_dtype: str = WEIGHTS_DTYPE,
    **extra,
) -> dict:
    """Write a library folder at ``dest`` (which must not exist) from (card, weights) pairs.

    Weights are a shard's weights file (checked against the card's checksum) or, for a model
    taken from another library, its tensors as stored there (:meth:`Library.weights`). Models
    are packed by origin: one pack per shard folder and cell (per source pack for tensors), in
    ``weights_dtype`` (float32, float16 or bfloat16). A pack that ``reuse`` already holds (same
    models, same trained weights, same dtype: the same name) is hard-linked from it instead of
    written. Models that failed to train stay out; the manifest lists them under ``failed``
    (id, cell, reason).
    """
    if weights_dtype not in DTYPES:
        raise LibraryError(f"weights dtype {weights_dtype!r}: one of {', '.join(DTYPES)}")
    dest.mkdir(parents=True)
    old = reuse.manifest["files"] if reuse else {}
    groups: dict[tuple, list] = {}
    seen, failed = set(), []
    for card, weights in models:
        mid = card.model_id
        # A shard's models (or, for tensors, those of one source pack) share a pack.
        origin = str(weights.parent) if isinstance(weights, Path) else card.weights
        if mid in seen:
            raise LibraryError(f"{origin}: model {mid} appears twice")
        seen.add(mid)
        if card.failure is not None:
            failed.append(
                {
                    "model_id": mid,
                    "dataset": card.dataset,
                    "property": card.property,
                    "descriptor": card.descriptor["name"],
                    "failure": card.failure,
                }
            )
            continue
        cell = (card.dataset, card.property, card.descriptor["name"])
        groups.setdefault((*cell, origin), []).append((card, weights))
    files, rows = {}, []
    for members in progress(groups.values(), f"writing library {dest.name}", "packs"):
        members.sort(key=lambda m: (m[0].index, m[0].model_id))
        rel = pack_name([c for c, _ in members], weights_dtype)
        if rel in old:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(reuse.root / rel, dest / rel)
            except OSError:
                shutil.copyfile(reuse.root / rel, dest / rel)
            digests = {
                c.model_id: reuse.storage.at[c.model_id, "tensors_sha256"] for c, _ in members
            }
            files[rel] = old[rel]
        else:
            tensors = [
                (c.model_id, shard_tensors(w, c.weights_sha256) if isinstance(w, Path) else w)
                for c, w in members
            ]
            scaler = members[0][0].input_scaler.tensors
            digests = write_pack(dest / rel, tensors, scaler, weights_dtype)
            files[rel] = sha256(dest / rel)
        for card, _ in members:
            card = card.replace(weights=rel)
            rows.append(
                card.index_row()
                | {
                    "weights": rel,
                    "weights_sha256": card.weights_sha256,
                    "tensors_sha256": digests[card.model_id],
                    "card": card.to_json(indent=None).encode(),
                }
            )
    index = pd.DataFrame(rows, columns=[*INDEX_COLUMNS, *STORAGE_COLUMNS[:3], "card"])
    index = index.sort_values(["material_class", "dataset", "property", "model_id"])
    lengths = index["card"].map(len) + 1  # a line each
    index["card_offset"] = lengths.cumsum() - lengths
    index["card_length"] = lengths - 1
    index["card_sha256"] = [hashlib.sha256(c).hexdigest() for c in index["card"]]
    with open(dest / CARDS, "wb") as f:
        for line in index["card"]:
            f.write(line + b"\n")
    files[CARDS] = sha256(dest / CARDS)
    index.drop(columns="card").to_parquet(dest / INDEX, index=False)
    files[INDEX] = sha256(dest / INDEX)
    manifest = {
        "format": FORMAT,
        "library_version": version,
        "shotgun_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_models": len(rows),
        "weights_dtype": weights_dtype,
        "files": dict(sorted(files.items())),
        **({"failed": failed} if failed else {}),
        **extra,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _tag() -> str:
    """Names this process's scratch entries: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _abandoned(name: str, prefix: str) -> bool:
    """Whether ``name`` (``<prefix><host>-<pid>``) is scratch of a process of this host that is
    gone (a build killed before it could clean up)."""
    host, _, pid = name[len(prefix) :].rpartition("-")
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


def build_library(
    shard_dirs: Sequence[Path],
    out: Path,
    version: str,
    keep: int = 2,
    weights_dtype: str = WEIGHTS_DTYPE,
) -> dict:
    """Assemble shards into the library at ``out``, incrementally and atomically.

    Each build is a folder under ``<out>.versions/`` named by version and content; ``out`` is a
    symbolic link switched to the new folder in one atomic rename, so a crash at any point leaves
    the previous library intact (a later build removes what the crash left). Unchanged packs
    (a shard's models, :func:`write_library`) are hard-linked from the previous build; the new
    build, the previous one and the newest others up to ``keep`` builds in all are kept.
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
        models = shard_models(shard_dirs)
        manifest = write_library(tmp, models, version, previous, weights_dtype)
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
    builds = sorted(
        (p.resolve() for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    ranked = (
        [current]
        + [b for b in builds if b == replaced and b != current]
        + [b for b in builds if b not in (current, replaced)]
    )
    for stale in ranked[max(keep, 1) :]:
        _retire(stale, versions)
    return manifest


def from_mlflow(uri: str, library_version: str, out: Path, jobs: int = 1) -> dict:
    """Rebuild a library at the new folder ``out`` from the tracking store: the card and weights
    artifacts of every finished run of the version's experiment, listed and downloaded by
    ``jobs`` processes (each a share of the runs, by start time). A missing store, a version it
    does not hold, a version without a finished run and lost artifacts are refused, and ``out``
    is then not created."""
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from ..tracking import start_spans

    out = Path(out)
    if out.exists():
        raise LibraryError(f"{out}: exists")
    spans = start_spans(uri, library_version, 4 * jobs if jobs > 1 else 1)
    with tempfile.TemporaryDirectory() as tmp:
        fetch = partial(_fetch, uri, library_version, Path(tmp))
        if jobs > 1 and len(spans) > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
                fetched = list(pool.map(fetch, spans))
        else:
            fetched = list(map(fetch, spans))
        models = [m for part in fetched for m in part]
        if not models:
            raise LibraryError(f"{uri}: library version {library_version!r} has no finished run")
        return write_library(out, models, library_version, source=uri)


def _fetch(uri: str, library_version: str, tmp: Path, span) -> list[tuple[ModelCard, Path]]:
    """(card, weights file) of the finished runs started in ``span``, downloaded under ``tmp``:
    each card in its run's folder, weights in one folder per cell (its models share a pack, as
    a shard's do)."""
    from ..tracking import finished_runs

    found = []
    for _, run in finished_runs(uri, library_version, span=span):
        d = tmp / "runs" / run.info.run_id
        d.mkdir(parents=True)
        card = ModelCard.read(_download(uri, run, "card.json", d))
        cell = tmp / "cells" / card.dataset / card.property / card.descriptor["name"]
        cell.mkdir(parents=True, exist_ok=True)
        found.append((card, _download(uri, run, f"{card.model_id}.safetensors", cell)))
    return found


def _download(uri: str, run, name: str, dest: Path) -> Path:
    """One artifact of a run, downloaded to ``dest`` from the run's artifact location (not
    through ``runs:/``, which looks the run up again); a lost artifact is a one-line error."""
    from mlflow.artifacts import download_artifacts

    try:
        return Path(
            download_artifacts(
                artifact_uri=f"{run.info.artifact_uri}/{name}", dst_path=str(dest), tracking_uri=uri
            )
        )
    except Exception as err:  # MLflow raises OSError or its own exception, by store
        raise LibraryError(
            f"{run.info.artifact_uri}/{name}: artifact of run {run.info.run_id} "
            f"({run.info.run_name}) cannot be read ({type(err).__name__}); "
            "were the store's artifacts moved or deleted?"
        ) from None
