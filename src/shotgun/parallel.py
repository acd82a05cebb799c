"""Dask client for featurization and screening.

>>> with dask_client("tcp://head:8786") as client:      # an existing scheduler
...     futures = client.map(f, chunks)
>>> with dask_client(n_workers=4) as client:            # a LocalCluster of 4 processes
...     ...
>>> with dask_client() as client:                       # client is None: run in-process
...     ...

A given scheduler address wins (a dask-jobqueue cluster on SLURM, ``dask scheduler``
with ``dask worker``s); ``n_workers`` then only sizes the work, not the cluster.
Otherwise a LocalCluster sized to the job is started and shut down on exit:
``n_workers`` single-threaded worker processes (featurizers hold the GIL), on free
ports of 127.0.0.1, without dashboard, so concurrent jobs on a node do not collide. The client is
not made Dask's default scheduler: submit with ``client.map``/``client.submit`` or
``dask.compute(..., scheduler=client)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dask.distributed import Client

__all__ = ["available_cpus", "dask_client"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a SLURM or container limit counts)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def dask_client(scheduler: str | None = None, n_workers: int = 1) -> Iterator[Client | None]:
    """A ``dask.distributed.Client`` on ``scheduler`` or on a local cluster of ``n_workers``.

    Yields None when no scheduler is given and ``n_workers <= 1``. Raises
    ConnectionError when ``scheduler`` does not answer. On exit the client is closed;
    a LocalCluster it started is shut down, a given scheduler is left running.
    """
    if scheduler is None and n_workers <= 1:
        yield None
        return
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, set_as_default=False)
        except OSError as err:  # refused or timed out (distributed.comm.timeouts.connect)
            raise ConnectionError(f"no Dask scheduler answers at {scheduler}: {err}") from err
        with client:
            yield client
        return
    # No dashboard; the scheduler's HTTP server (health, metrics) on a free local port, not 8787.
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client
