"""Feature tables: a descriptor applied to a column of inputs, written as Parquet.

A feature table keeps the input order: columns ``input``, ``ok`` (False where the input could not
be featurized, its features then NaN), then one float32 column per feature. The descriptor's spec
(name, version, parameters) travels in the Parquet schema metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPEC_KEY = b"shotgun.descriptor"


def write_features(
    path: Path,
    inputs: Sequence[str],
    X: np.ndarray,
    ok: np.ndarray,
    spec: dict,
    names: Sequence[str],
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    X = np.asfortranarray(X, dtype=np.float32)  # each feature's column is then a view
    columns = {"input": pa.array([str(s) for s in inputs]), "ok": pa.array(ok)}
    columns.update({n: pa.array(X[:, j]) for j, n in enumerate(names)})
    table = pa.table(columns)
    table = table.replace_schema_metadata({SPEC_KEY: json.dumps(spec).encode()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Mostly-zero count columns: zstd without dictionaries writes and reads fastest.
    pq.write_table(table, path, use_dictionary=False, compression="zstd")


def read_features(path: Path):
    """(inputs, X float32 in column-major order, ok, descriptor spec) of a feature table."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    spec = json.loads(table.schema.metadata[SPEC_KEY])
    inputs = table.column("input").to_numpy(zero_copy_only=False).astype(str)
    ok = table.column("ok").to_numpy()
    names = table.column_names[2:]
    X = np.empty((table.num_rows, len(names)), dtype=np.float32, order="F")
    for j, n in enumerate(names):
        X[:, j] = table.column(n).to_numpy()
    return inputs, X, ok, spec
