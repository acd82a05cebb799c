"""Descriptors: map material strings (SMILES, polymer SMILES, formulas) to feature arrays.

>>> d = get_descriptor("ecfp", radius=2)
>>> X, ok = featurize(d, ["CCO", "not a smiles"])

Every descriptor exposes ``name``, ``version``, ``kinds``, ``params``,
``spec()``, ``feature_names()`` and ``featurize(strings) -> (X, ok)`` where
``X`` is float32 of shape (n, n_features) and ``ok`` flags the rows that could
be featurized (other rows are NaN). Heavy libraries (RDKit, pymatgen, Dask)
are imported only when featurizing.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["DESCRIPTORS", "Descriptor", "featurize", "from_spec", "get_descriptor"]

# Below this many inputs, featurize() stays in-process.
PARALLEL_MIN_INPUTS = 2000


class Descriptor:
    """Base class; subclasses set ``name``, ``version``, ``kinds`` and ``params``."""

    name: str
    version: str
    kinds: tuple[str, ...]
    params: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": dict(self.params)}

    def feature_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def n_features(self) -> int:
        return len(self.feature_names())

    def featurize(self, inputs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descriptor) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"get_descriptor({self.name!r}, {args})" if args else f"get_descriptor({self.name!r})"


from .composition import CompositionDescriptor  # noqa: E402
from .fingerprints import ECFPDescriptor  # noqa: E402

DESCRIPTORS: dict[str, type[Descriptor]] = {
    CompositionDescriptor.name: CompositionDescriptor,
    ECFPDescriptor.name: ECFPDescriptor,
}


def get_descriptor(name: str, **params: Any) -> Descriptor:
    """Instantiate a registered descriptor by name with constructor params."""
    try:
        cls = DESCRIPTORS[name]
    except KeyError:
        raise ValueError(f"unknown descriptor {name!r}; known: {sorted(DESCRIPTORS)}") from None
    return cls(**params)


def from_spec(spec: dict[str, Any]) -> Descriptor:
    """Rebuild a descriptor from ``Descriptor.spec()``; the version must match the code."""
    d = get_descriptor(spec["name"], **spec.get("params", {}))
    if str(spec.get("version")) != d.version:
        raise ValueError(
            f"descriptor {spec['name']!r} version {spec.get('version')!r} does not match "
            f"the installed version {d.version!r}"
        )
    return d


def _featurize_chunk(spec: dict[str, Any], chunk: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return from_spec(spec).featurize(chunk)


def featurize(
    descriptor: Descriptor,
    inputs: Sequence[str],
    n_workers: int = 1,
    scheduler_address: str | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Featurize ``inputs``, in parallel over chunks with Dask when worthwhile.

    With ``scheduler_address`` the chunks go to that dask.distributed scheduler;
    otherwise, if ``n_workers > 1`` and there are at least
    ``PARALLEL_MIN_INPUTS`` inputs, Dask's multiprocessing scheduler is used.
    Only the descriptor spec and strings are sent to workers; numpy arrays come
    back. The result equals ``descriptor.featurize(inputs)``.
    """
    inputs = [s if isinstance(s, str) else "" for s in inputs]
    n = len(inputs)
    if scheduler_address is None and (n_workers <= 1 or n < PARALLEL_MIN_INPUTS):
        return descriptor.featurize(inputs)

    if chunk_size is None:
        chunk_size = max(500, math.ceil(n / (4 * max(n_workers, 1))))
    chunks = [inputs[i : i + chunk_size] for i in range(0, n, chunk_size)]
    spec = descriptor.spec()

    if scheduler_address is not None:
        from dask.distributed import Client

        with Client(scheduler_address, set_as_default=False) as client:
            futures = client.map(_featurize_chunk, [spec] * len(chunks), chunks, pure=False)
            results = client.gather(futures)
    else:
        import dask

        tasks = [dask.delayed(_featurize_chunk)(spec, c) for c in chunks]
        results = dask.compute(*tasks, scheduler="processes", num_workers=n_workers)

    if not results:
        return descriptor.featurize(inputs)
    X = np.concatenate([r[0] for r in results], axis=0)
    ok = np.concatenate([r[1] for r in results], axis=0)
    return X, ok
