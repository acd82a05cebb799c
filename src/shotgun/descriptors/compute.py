"""Featurizing many inputs: in parallel over chunks with Dask, through the feature cache.

:func:`featurize` applies one descriptor to a list of inputs, in-process or on Dask workers;
:func:`featurize_inputs` adds the content-addressed cache (:mod:`.cache`) and featurizes each
distinct input once.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Descriptor, from_spec, get_descriptor

# Chunks hold at least a quarter of a descriptor's ``parallel_min_inputs`` and at most this many
# inputs (unless that quarter is larger), so a cluster whose batch jobs are still queued at
# submission still gets many tasks.
MAX_CHUNK_INPUTS = 20_000


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

        parts = (np.concatenate(part) for part in zip(*results))
        return densify(descriptor.n_features, *parts, order="F")  # as feature tables store it
    return (
        np.concatenate([r[0] for r in results], axis=0),
        np.concatenate([r[1] for r in results], axis=0),
    )


def make_descriptor(descriptor, params: dict | None = None):
    """A descriptor from a name (with ``params``), a spec dict or a Descriptor."""
    if isinstance(descriptor, Descriptor):
        return descriptor
    if isinstance(descriptor, dict):
        return from_spec(descriptor)
    return get_descriptor(descriptor, **(params or {}))


def featurize_inputs(
    inputs: Sequence[str],
    descriptor,
    n_workers: int = 1,
    cache_dir: Path | None = None,
    progress: bool = False,
    params: dict | None = None,
    scheduler_address: str | None = None,
):
    """(X, ok, spec, feature names) for ``inputs``, in input order.

    ``descriptor`` is a name (built with ``params``), a spec or a Descriptor. Each distinct input
    is featurized once; with ``cache_dir``, only those not already in the cache. Parallelism as
    in :func:`featurize`: a Dask scheduler at ``scheduler_address``, else a local
    cluster of ``n_workers`` processes for large inputs.
    """
    from .cache import FeatureCache

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
        if not found.any():  # nothing cached: no copy into the lookup's matrix
            Xu, oku = featurize(d, unique, **run)
            cache.store(keys, Xu, oku)
        elif len(todo):
            Xn, okn = featurize(d, [unique[i] for i in todo], **run)
            Xu[todo], oku[todo] = Xn, okn
            cache.store([keys[i] for i in todo], Xn, okn)
    if len(unique) == len(inputs):
        return Xu, oku, d.spec(), d.feature_names()
    pos = {s: i for i, s in enumerate(unique)}
    rows = np.fromiter((pos[s] for s in inputs), dtype=np.intp, count=len(inputs))
    return Xu[rows], oku[rows], d.spec(), d.feature_names()
