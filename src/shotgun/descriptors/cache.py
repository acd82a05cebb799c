"""Content-addressed cache of featurized inputs (``featurize_inputs(..., cache_dir=DIR)``,
``shotgun featurize --cache DIR``): an input is featurized once per descriptor spec.

``DIR/<name>-<h>/`` holds the results of one spec, ``h = sha256(canonical JSON of the spec)[:16]``
(a new version or parameter gives a new folder), with ``spec.json`` and *segments*
``<sha256(spec, inputs)>.npz``: ``keys`` (16-byte sha256 digest of each input), ``ok`` and the
features, dense float32 ``X`` or, when at most a quarter of the values are non-zero, CSR arrays
``data``/``indices``/``indptr``. A call reads every segment of its spec, featurizes only the
unique inputs found in none of them and writes those as one new segment (written to a temporary
name, then renamed: safe with concurrent jobs). Plain ``.npz`` arrays, read with
``allow_pickle=False``: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class FeatureCache:
    """Content-addressed store of featurized inputs for one descriptor spec (see module doc)."""

    def __init__(self, root: Path, spec: dict):
        self.spec_json = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(self.spec_json.encode()).hexdigest()[:16]
        self.dir = Path(root) / f"{spec['name']}-{digest}"

    @staticmethod
    def key(s: str) -> bytes:
        return hashlib.sha256(s.encode("utf-8", "surrogatepass")).digest()[:16]

    def lookup(self, keys: Sequence[bytes], n_features: int):
        """(X, ok, found) for ``keys``; rows not ``found`` in any segment are left NaN."""
        X = np.full((len(keys), n_features), np.nan, dtype=np.float32)
        ok = np.zeros(len(keys), dtype=bool)
        found = np.zeros(len(keys), dtype=bool)
        if not self.dir.is_dir():
            return X, ok, found
        where = {k: i for i, k in enumerate(keys)}
        for path in sorted(self.dir.glob("*.npz")):
            with np.load(path, allow_pickle=False) as z:
                seg_keys = z["keys"]
                pos = [
                    (where[k], j)
                    for j, k in enumerate(seg_keys.tolist())
                    if k in where and not found[where[k]]
                ]
                if not pos:
                    continue
                rows, seg_rows = map(np.array, zip(*pos))
                ok[rows] = z["ok"][seg_rows]
                X[rows] = _dense_rows(z, seg_rows, n_features)
                found[rows] = True
        return X, ok, found

    def store(self, keys: Sequence[bytes], X: np.ndarray, ok: np.ndarray) -> Path | None:
        if not len(keys):
            return None
        karr = np.array(keys, dtype="S16")
        h = hashlib.sha256(self.spec_json.encode())
        h.update(karr.tobytes())
        path = self.dir / f"{h.hexdigest()}.npz"
        if path.exists():
            return path
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_path = self.dir / "spec.json"
        if not spec_path.exists():
            _atomic_write(spec_path, lambda f: f.write(self.spec_json.encode()))
        arrays = {"keys": karr, "ok": ok, **_compact(X, ok)}
        _atomic_write(path, lambda f: np.savez(f, **arrays))
        return path


def _compact(X: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
    """``X`` (zeros where not ok) as CSR arrays when at most a quarter of it is non-zero, else
    dense. A column-major matrix is scanned in its own order, then sorted by row."""
    if np.count_nonzero(X) - np.count_nonzero(X[~ok]) > X.size / 4:
        return {"X": np.where(ok[:, None], X, 0).astype(np.float32)}
    if X.flags.f_contiguous and not X.flags.c_contiguous:
        cols, rows = np.nonzero(X.T)
        by_row = np.argsort(rows, kind="stable")  # columns stay ascending within a row
        rows, cols = rows[by_row], cols[by_row]
    else:
        rows, cols = np.nonzero(X)
    keep = ok[rows]
    rows, cols = rows[keep], cols[keep]
    return {
        "data": X[rows, cols].astype(np.float32),
        "indices": cols.astype(np.int32),
        "indptr": np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(X)))]),
    }


def _dense_rows(z, rows: np.ndarray, n_features: int) -> np.ndarray:
    """Rows ``rows`` of a segment as dense float32, NaN where not ok."""
    if "X" in z.files:
        out = z["X"][rows].astype(np.float32)
    else:
        data, indices, indptr = z["data"], z["indices"], z["indptr"]
        lo, lens = indptr[rows], indptr[rows + 1] - indptr[rows]
        starts = np.cumsum(lens) - lens
        take = np.arange(lens.sum()) - np.repeat(starts - lo, lens)
        out = np.zeros((len(rows), n_features), dtype=np.float32)
        out[np.repeat(np.arange(len(rows)), lens), indices[take]] = data[take]
    out[~z["ok"][rows]] = np.nan
    return out


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)
