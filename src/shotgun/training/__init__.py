"""Training the library: the grid of shards a workflow config plans, the training config
composed by Hydra and model ids, the cells' data, and the shard job that trains K models.

``grid`` and ``config`` load without pandas or torch (the Snakefile imports the grid); the cell
and shard modules are loaded when one of their names is first used.
"""

from ..lazy import lazy_exports
from .config import EXECUTION_KEYS, compose_train_config, model_id
from .grid import CONFIG_SCHEMA, GridError, Shard, load_config, resolve_sources, shards

__all__ = [
    "CONFIG_SCHEMA",
    "Cell",
    "EXECUTION_KEYS",
    "GridError",
    "Shard",
    "compose_train_config",
    "finished_card",
    "load_cell",
    "load_config",
    "model_id",
    "plan_shard",
    "resolve_sources",
    "shards",
    "split_indices",
    "standardizer",
    "train_shard",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Cell": ".cell",
        "load_cell": ".cell",
        "split_indices": ".cell",
        "standardizer": ".cell",
        "finished_card": ".shard",
        "plan_shard": ".shard",
        "train_shard": ".shard",
    },
)
