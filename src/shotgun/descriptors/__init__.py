"""Descriptors: map material strings (SMILES, polymer SMILES, formulas, structures) to arrays.

>>> d = get_descriptor("ecfp", radius=2)
>>> X, ok = featurize(d, ["CCO", "not a smiles"])

Every descriptor exposes ``name``, ``version``, ``kinds`` (the input kinds it
accepts: molecule, polymer, inorganic, structure), ``params``, ``spec()``,
``feature_space()``, ``feature_names()`` and ``featurize(strings) -> (X, ok)``
where ``X`` is float32 of shape (n, n_features) and ``ok`` flags the rows that
could be featurized (other rows are NaN). Heavy libraries (RDKit, pymatgen,
Dask) are imported only when featurizing.

=======================  ==========================  ================================
name                     kinds                       features (default params)
=======================  ==========================  ================================
``composition``          inorganic                   58 element features x stats (290)
``organic_composition``  molecule, polymer           same layout as ``composition``
``ecfp``, ``fcfp``       molecule, polymer           2,048 (Morgan counts, radius 3)
``atom_pair``            molecule, polymer           2,048 counts
``torsion``              molecule, polymer           2,048 counts
``rdkit_fp``             molecule, polymer           2,048 bits
``maccs``                molecule, polymer           167 bits
``rdkit_2d``             molecule, polymer           217 RDKit descriptors
``rdf``                  structure                   200 (0-20 Å, 0.1 Å bins)
``ofm``                  structure                   1,024 (32 x 32)
=======================  ==========================  ================================

Two descriptors whose ``feature_space()`` strings are equal give vectors of the
same layout and meaning, whatever their names and input kinds (``composition``
and ``organic_composition`` with the same ``stats``); ``for_kind(spec, kind)``
returns the descriptor that brings inputs of ``kind`` into the feature space of
``spec``.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Sequence

import numpy as np

__all__ = ["DESCRIPTORS", "Descriptor", "featurize", "for_kind", "from_spec", "get_descriptor"]

# Below this many inputs, featurize() stays in-process (slow descriptors set a lower
# ``parallel_min_inputs``); chunks hold at least a quarter of it.
PARALLEL_MIN_INPUTS = 2000
# Chunks hold at most this many inputs (unless the threshold's quarter is larger), so a
# cluster whose batch jobs are still queued at submission still gets many tasks.
MAX_CHUNK_INPUTS = 20_000


class Descriptor:
    """Base class; subclasses set ``name``, ``version``, ``kinds`` and ``params``."""

    name: str
    version: str
    kinds: tuple[str, ...]
    params: dict[str, Any]
    parallel_min_inputs = PARALLEL_MIN_INPUTS

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "params": dict(self.params)}

    def feature_space(self) -> str:
        """Identifies the layout and meaning of the feature vector (see the module docstring)."""
        return f"{self.name}:{self.version}:{_canonical(self.params)}"

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


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


from .composition import CompositionDescriptor  # noqa: E402
from .fingerprints import (  # noqa: E402
    AtomPairDescriptor,
    ECFPDescriptor,
    FCFPDescriptor,
    MACCSDescriptor,
    RDKitFPDescriptor,
    TorsionDescriptor,
)
from .organic import OrganicCompositionDescriptor  # noqa: E402
from .rdkit_2d import RDKit2DDescriptor  # noqa: E402
from .structure import OFMDescriptor, RDFDescriptor  # noqa: E402

DESCRIPTORS: dict[str, type[Descriptor]] = {
    cls.name: cls
    for cls in (
        CompositionDescriptor, OrganicCompositionDescriptor, ECFPDescriptor, FCFPDescriptor,
        AtomPairDescriptor, TorsionDescriptor, RDKitFPDescriptor, MACCSDescriptor,
        RDKit2DDescriptor, RDFDescriptor, OFMDescriptor,
    )
}


def get_descriptor(name: str, **params: Any) -> Descriptor:
    """Instantiate a registered descriptor by name with constructor params."""
    import inspect

    try:
        cls = DESCRIPTORS[name]
    except KeyError:
        raise ValueError(f"unknown descriptor {name!r}; known: {sorted(DESCRIPTORS)}") from None
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"descriptor {name!r} has no parameter {', '.join(unknown)}; "
                         f"parameters: {', '.join(sorted(known)) or 'none'}")
    return cls(**params)


def from_spec(spec: dict[str, Any]) -> Descriptor:
    """Rebuild a descriptor from ``Descriptor.spec()``; the version must match the code."""
    d = get_descriptor(spec["name"], **spec.get("params", {}))
    if str(spec.get("version")) != d.version:
        raise ValueError(
            f"descriptor {spec['name']!r} version {spec.get('version')!r} does not match "
            f"the installed version {d.version!r}"
        )
    given = spec.get("params", {})
    if any(d.params.get(k) != v for k, v in given.items()):  # e.g. rdkit_2d on another RDKit
        raise ValueError(f"descriptor {spec['name']!r} params {given} rebuild as {d.params}")
    return d


def for_kind(spec: dict[str, Any], kind: str) -> Descriptor | None:
    """The descriptor that featurizes ``kind`` inputs into the feature space of ``spec``.

    ``from_spec(spec)`` itself if it accepts ``kind``; otherwise a registered
    descriptor with the same ``params`` and an equal ``feature_space()`` (e.g.
    ``organic_composition`` for a ``composition`` spec and molecules); else None.
    """
    d = from_spec(spec)
    if kind in d.kinds:
        return d
    for cls in DESCRIPTORS.values():
        if kind not in cls.kinds or cls is type(d):
            continue
        try:
            other = cls(**d.params)
        except (TypeError, ValueError):
            continue
        if other.feature_space() == d.feature_space():
            return other
    return None


def _featurize_chunk(spec: dict[str, Any], chunk: list[str]) -> tuple[np.ndarray, ...]:
    """Featurize one chunk in a worker; fingerprints travel back sparse (their nonzeros)."""
    d = from_spec(spec)
    return d.featurize_sparse(chunk) if hasattr(d, "featurize_sparse") else d.featurize(chunk)


def _progress(done: int, total: int, enabled: bool) -> None:
    if enabled:
        print(f"featurize: {done}/{total} chunks", file=sys.stderr, flush=True)


def _chunks(inputs: list[str], threshold: int, workers: int, size: int | None) -> list[list[str]]:
    """Chunks of ``size`` inputs; by default about four per worker, of at least a quarter of
    ``threshold`` and at most ``MAX_CHUNK_INPUTS`` inputs."""
    if size is None:
        size = max(threshold // 4, 1, math.ceil(len(inputs) / (4 * max(workers, 1))))
        size = min(size, max(MAX_CHUNK_INPUTS, threshold // 4))
    return [inputs[i : i + size] for i in range(0, len(inputs), size)]


def featurize(
    descriptor: Descriptor,
    inputs: Sequence[str],
    n_workers: int = 1,
    scheduler_address: str | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Featurize ``inputs``, in parallel over chunks with Dask when worthwhile.

    With ``scheduler_address`` the chunks, sized to its worker threads, go to that
    dask.distributed scheduler; otherwise, if ``n_workers > 1`` and there are at
    least ``descriptor.parallel_min_inputs`` inputs, to a LocalCluster of up to
    ``n_workers`` processes (``shotgun.parallel.dask_client``); else it runs
    in-process. Only the descriptor spec and strings are sent to workers; numpy
    arrays come back (fingerprints as their nonzeros, made dense here). With
    ``progress`` the number of finished chunks is printed to stderr. The result
    equals ``descriptor.featurize(inputs)``.
    """
    inputs = [s if isinstance(s, str) else "" for s in inputs]
    n = len(inputs)
    threshold = descriptor.parallel_min_inputs
    if n == 0 or (scheduler_address is None and (n_workers <= 1 or n < threshold)):
        return descriptor.featurize(inputs)
    chunks = _chunks(inputs, threshold, n_workers, chunk_size)
    if scheduler_address is None and len(chunks) == 1:
        return descriptor.featurize(inputs)

    from dask.distributed import as_completed

    from ..parallel import dask_client

    spec = descriptor.spec()
    with dask_client(scheduler_address, min(n_workers, len(chunks))) as client:
        if scheduler_address is not None:
            threads = sum(client.nthreads().values())  # 0 while batch jobs still queue
            chunks = _chunks(inputs, threshold, max(n_workers, threads), chunk_size)
        futures = client.map(_featurize_chunk, [spec] * len(chunks), chunks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(chunks)
        finished = as_completed(futures, client.loop, with_results=True)
        for done, (fut, res) in enumerate(finished, 1):
            results[index[fut.key]] = res
            _progress(done, len(chunks), progress)

    if hasattr(descriptor, "featurize_sparse"):
        from .fingerprints import densify

        return densify(descriptor.n_features, *(np.concatenate(part) for part in zip(*results)))
    return (np.concatenate([r[0] for r in results], axis=0),
            np.concatenate([r[1] for r in results], axis=0))
