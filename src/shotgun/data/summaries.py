"""Cleaning summaries of every declared dataset, cached by content.

:func:`summarize` runs a full cleaning pass (no subsampling) and caches its report per
(declaration, data file, cleaning code) hash, so ``shotgun datasets list`` is fast after the
first run; :func:`list_records` gives one record per declared source property.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..checksums import sha256
from .cleaning import clean
from .declarations import Dataset, DatasetError, load_datasets

# Bump when cleaning changes what a report counts: invalidates cached summaries.
CLEANING_VERSION = 2
LIST_KEYS = ("dataset", "property", "material_class", "unit", "rows", "quarantined")


def default_cache_dir() -> Path:
    """``$SHOTGUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/shotgun`` (``~/.cache/shotgun``)."""
    if os.environ.get("SHOTGUN_CACHE_DIR"):
        return Path(os.environ["SHOTGUN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shotgun"


def summary_key(dataset: Dataset, root: Path) -> str:
    """Hash of what a full cleaning report depends on: the declaration, the data, the code."""
    h = hashlib.sha256(f"cleaning {CLEANING_VERSION}\n".encode())
    h.update(dataset.path.read_bytes())
    h.update(sha256(dataset.resolve(root)).encode())
    return h.hexdigest()


def summarize(
    dataset: Dataset, root: Path, cache_dir: Path | None = None, compute: bool = True
) -> dict | None:
    """The full (no subsampling) cleaning report of ``dataset``, cached by content hash.

    The cache holds ``<cache_dir>/datasets/<name>/<key>.json``; older entries of the same
    dataset are removed when a new one is written. With ``compute=False`` a missing entry
    gives ``None``.
    """
    folder = Path(cache_dir or default_cache_dir()) / "datasets" / dataset.name
    key = summary_key(dataset, root)
    cached = folder / f"{key}.json"
    if cached.is_file():
        try:
            return json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # unreadable cache entry: recompute
    if not compute:
        return None
    _, _, report = clean(dataset, root)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink(missing_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(cached)
    return report


def _summaries(datasets: dict, root: Path, cache_dir: Path | None, jobs: int) -> dict:
    """name -> report, or the error message; uncached datasets are cleaned in ``jobs`` processes."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from ..progress import progress

    out: dict[str, dict | str] = {}
    todo = []
    for name, ds in datasets.items():
        try:
            report = summarize(ds, root, cache_dir, compute=False)
        except (DatasetError, OSError) as err:
            out[name] = str(err)
            continue
        if report is None:
            todo.append(name)
        else:
            out[name] = report
    desc = "cleaning uncached datasets (counts are cached afterwards)"
    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo))) as pool:
            futures = {pool.submit(summarize, datasets[n], root, cache_dir): n for n in todo}
            for fut in progress(as_completed(futures), desc, "datasets", len(todo)):
                try:
                    out[futures[fut]] = fut.result()
                except DatasetError as err:
                    out[futures[fut]] = str(err)
    else:
        for name in progress(todo, desc, "datasets"):
            try:
                out[name] = summarize(datasets[name], root, cache_dir)
            except DatasetError as err:
                out[name] = str(err)
    return out


def list_records(
    directory: Path, root: Path, cache_dir: Path | None = None, counts: bool = True, jobs: int = 1
) -> tuple[list[dict], list[str]]:
    """One record per declared source property (``LIST_KEYS``) and the problems met."""
    datasets = load_datasets(directory)
    reports = _summaries(datasets, root, cache_dir, jobs) if counts else {}
    records, problems = [], []
    for name, ds in datasets.items():
        report = reports.get(name)
        if isinstance(report, str):
            problems.append(report)
            report = None
        for prop in ds.properties.values():
            entry = report["properties"].get(prop.name) if report else None
            records.append(
                {
                    "dataset": name,
                    "property": prop.name,
                    "material_class": ds.material_class,
                    "unit": prop.unit,
                    "rows": entry["kept"] if entry else None,
                    "quarantined": sum(entry["quarantined"].values()) if entry else None,
                }
            )
    return records, problems
