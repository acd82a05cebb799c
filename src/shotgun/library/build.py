"""Building libraries: from trained shards (incremental and atomic) or from the MLflow store.

A build writes a new folder under ``<library>.versions/``, hard-linking unchanged weights from the
previous build, and switches the library link to it in one atomic rename: a crash at any point
leaves the previous library intact, and the next build removes what the crash left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from .. import __version__
from ..checksums import sha256
from ..progress import progress
from .card import INDEX_COLUMNS, LibraryError, ModelCard
from .store import INDEX, MANIFEST, Library


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
    models: Sequence[tuple[ModelCard, Path | None]],
    version: str,
    reuse: Library | None = None,
    **extra,
) -> dict:
    """Write a library folder at ``dest`` (which must not exist) from (card, weights) pairs.

    Weights whose checksum matches a file of ``reuse`` are hard-linked from it instead of copied.
    Models that failed to train stay out; the manifest lists them under ``failed`` (id, cell,
    reason).
    """
    (dest / "models").mkdir(parents=True)
    (dest / "cards").mkdir()
    old = reuse.manifest["files"] if reuse else {}
    files, rows, seen, failed = {}, [], set(), []
    for card, weights in progress(models, f"writing library {dest.name}", "models"):
        mid = card.model_id
        if mid in seen:
            raise LibraryError(f"{weights}: model {mid} appears twice")
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
        rel = f"models/{mid}.safetensors"
        if old.get(rel) == card.weights_sha256:
            try:
                os.link(reuse.root / rel, dest / rel)
            except OSError:
                shutil.copyfile(reuse.root / rel, dest / rel)
        else:
            shutil.copyfile(weights, dest / rel)
            if sha256(dest / rel) != card.weights_sha256:
                raise LibraryError(f"{weights}: checksum differs from its card")
        files[rel] = card.weights_sha256
        card = card.replace(weights=rel)
        text = card.to_json()
        (dest / "cards" / f"{mid}.json").write_text(text)
        files[f"cards/{mid}.json"] = hashlib.sha256(text.encode()).hexdigest()
        rows.append(card.index_row())
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS).sort_values(
        ["material_class", "dataset", "property", "model_id"]
    )
    index.to_parquet(dest / INDEX, index=False)
    files[INDEX] = sha256(dest / INDEX)
    manifest = {
        "library_version": version,
        "shotgun_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_models": len(rows),
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


def from_mlflow(uri: str, library_version: str, out: Path) -> dict:
    """Rebuild a library at the new folder ``out`` from the tracking store: the card and weights
    artifacts of every finished run of the version's experiment. A missing store, a version it
    does not hold, a version without a finished run and lost artifacts are refused, and ``out``
    is then not created."""
    import tempfile

    from ..tracking import finished_runs

    out = Path(out)
    if out.exists():
        raise LibraryError(f"{out}: exists")
    with tempfile.TemporaryDirectory() as tmp:
        models = []
        for client, run in finished_runs(uri, library_version, require=True):
            d = Path(tmp) / run.info.run_id
            d.mkdir()
            card = ModelCard.read(_download(client, run, "card.json", d))
            models.append((card, _download(client, run, f"{card.model_id}.safetensors", d)))
        if not models:
            raise LibraryError(f"{uri}: library version {library_version!r} has no finished run")
        return write_library(out, models, library_version, source=uri)


def _download(client, run, name: str, dest: Path) -> Path:
    """One artifact of a run, downloaded to ``dest``; a lost artifact is a one-line error."""
    try:
        return Path(client.download_artifacts(run.info.run_id, name, str(dest)))
    except Exception as err:  # MLflow raises OSError or its own exception, by store
        raise LibraryError(
            f"{run.info.artifact_uri}/{name}: artifact of run {run.info.run_id} "
            f"({run.info.run_name}) cannot be read ({type(err).__name__}); "
            "were the store's artifacts moved or deleted?"
        ) from None
