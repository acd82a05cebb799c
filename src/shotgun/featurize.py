"""Feature tables: a descriptor applied to a column of inputs, written as Parquet.

A feature table keeps the input order: columns ``input``, ``ok`` (False where the input could not
be featurized, its features then NaN), then one float32 column per feature. The descriptor's spec
(name, version, parameters) travels in the Parquet schema metadata.

Cache (``featurize_inputs(..., cache_dir=DIR)``, ``shotgun featurize --cache DIR``): content
addressed, so an input is featurized once per descriptor spec. ``DIR/<name>-<h>/`` holds the
results of one spec, ``h = sha256(canonical JSON of the spec)[:16]`` (a new version or parameter
gives a new folder), with ``spec.json`` and *segments* ``<sha256(spec, inputs)>.npz``: ``keys``
(16-byte sha256 digest of each input), ``ok`` and the features, dense float32 ``X`` or, when at
most a quarter of the values are non-zero, CSR arrays ``data``/``indices``/``indptr``. A call
reads every segment of its spec, featurizes only the unique inputs found in none of them and
writes those as one new segment (written to a temporary name, then renamed: safe with
concurrent jobs). Plain ``.npz`` arrays, read with ``allow_pickle=False``: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

SPEC_KEY = b"shotgun.descriptor"


def read_table(path: Path, column: str):
    """Read a CSV or Parquet file and check that ``column`` is there."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{path}: cannot read as a table: {err}") from err
    if column not in df.columns:
        raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(map(str, df.columns))})")
    return df


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
                pos = [(where[k], j) for j, k in enumerate(seg_keys.tolist())
                       if k in where and not found[where[k]]]
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
        arrays = {"keys": karr, "ok": ok}
        Xz = np.where(ok[:, None], X, 0).astype(np.float32)
        nnz = np.count_nonzero(Xz)
        if nnz <= Xz.size / 4:
            rows, cols = np.nonzero(Xz)
            arrays.update(data=Xz[rows, cols], indices=cols.astype(np.int32),
                          indptr=np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(Xz)))]))
        else:
            arrays["X"] = Xz
        _atomic_write(path, lambda f: np.savez(f, **arrays))
        return path


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


def make_descriptor(descriptor, params: dict | None = None):
    """A descriptor from a name (with ``params``), a spec dict or a Descriptor."""
    from .descriptors import Descriptor, from_spec, get_descriptor

    if isinstance(descriptor, Descriptor):
        return descriptor
    if isinstance(descriptor, dict):
        return from_spec(descriptor)
    return get_descriptor(descriptor, **(params or {}))


def featurize_inputs(inputs: Sequence[str], descriptor, n_workers: int = 1,
                     cache_dir: Path | None = None, progress: bool = False,
                     params: dict | None = None, scheduler_address: str | None = None):
    """(X, ok, spec, feature names) for ``inputs``, in input order.

    ``descriptor`` is a name (built with ``params``), a spec or a Descriptor. Each distinct input
    is featurized once; with ``cache_dir``, only those not already in the cache. Parallelism as
    in ``shotgun.descriptors.featurize``: a Dask scheduler at ``scheduler_address``, else a local
    cluster of ``n_workers`` processes for large inputs.
    """
    from .descriptors import featurize

    d = make_descriptor(descriptor, params)
    inputs = [str(s) for s in inputs]
    unique = list(dict.fromkeys(inputs))
    run = dict(n_workers=n_workers, scheduler_address=scheduler_address, progress=progress)
    if cache_dir is None:
        Xu, oku = featurize(d, unique, **run)
    else:
        cache = FeatureCache(Path(cache_dir), d.spec())
        keys = [cache.key(s) for s in unique]
        Xu, oku, found = cache.lookup(keys, d.n_features)
        todo = np.flatnonzero(~found)
        if len(todo):
            Xn, okn = featurize(d, [unique[i] for i in todo], **run)
            Xu[todo], oku[todo] = Xn, okn
            cache.store([keys[i] for i in todo], Xn, okn)
    if len(unique) == len(inputs):
        return Xu, oku, d.spec(), d.feature_names()
    pos = {s: i for i, s in enumerate(unique)}
    rows = np.fromiter((pos[s] for s in inputs), dtype=np.intp, count=len(inputs))
    return Xu[rows], oku[rows], d.spec(), d.feature_names()


def write_features(path: Path, inputs: Sequence[str], X: np.ndarray, ok: np.ndarray,
                   spec: dict, names: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"input": pa.array([str(s) for s in inputs]), "ok": pa.array(ok)}
    columns.update({n: pa.array(X[:, j]) for j, n in enumerate(names)})
    table = pa.table(columns)
    table = table.replace_schema_metadata({SPEC_KEY: json.dumps(spec).encode()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_features(path: Path):
    """(inputs, X float32, ok, descriptor spec) of a feature table."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    spec = json.loads(table.schema.metadata[SPEC_KEY])
    inputs = table.column("input").to_numpy(zero_copy_only=False).astype(str)
    ok = table.column("ok").to_numpy()
    names = table.column_names[2:]
    X = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, n in enumerate(names):
        X[:, j] = table.column(n).to_numpy()
    return inputs, X, ok, spec
