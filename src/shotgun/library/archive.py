"""Sharing libraries: a library, or the subset a query selects, packed into a .tar.gz and unpacked
with every member checked (no absolute paths, ``..``, links or special files) and every file
verified against the manifest before the library is moved into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .build import write_library
from .card import LibraryError
from .store import Library


def pack(library: Library, archive: Path, *, force: bool = False, **query) -> int:
    """Write ``library`` (or the subset a query selects) to a .tar.gz; returns the model count.
    The archive's packs hold only the selected models (each read alone and verified), in the
    library's weights dtype.

    An existing ``archive`` is refused unless ``force``, and so is a query that selects no
    model; the archive is written to a scratch file beside it and renamed into place.
    """
    import tarfile
    import tempfile

    archive = Path(archive)
    if archive.is_dir():
        raise LibraryError(f"{archive}: is a folder, not an archive file")
    if archive.exists() and not force:
        raise LibraryError(f"{archive}: exists (--force overwrites it)")
    ids = library.query(**query)["model_id"] if query else library.index["model_id"]
    if len(ids) == 0:
        raise LibraryError(f"{library.root}: no model matches the query {query}")
    models = []
    for mid in ids:
        card = library.card(mid)
        models.append((card, library.weights(mid, card)))
    scratch = archive.with_name(f".{archive.name}.packing-{os.getpid()}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "library"
            extra = {"subset_of": library.version, "query": query} if query else {}
            dtype = library.manifest["weights_dtype"]
            write_library(root, models, library.version, weights_dtype=dtype, **extra)
            with tarfile.open(scratch, "w:gz") as tar:
                for path in sorted(root.rglob("*")):
                    tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
        os.replace(scratch, archive)
    finally:
        scratch.unlink(missing_ok=True)
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
