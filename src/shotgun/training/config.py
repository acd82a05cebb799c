"""A shard job's training config (composed by Hydra from ``config/train/``) and model ids.

A model's id is a hash of what determines it: its cell, architecture, training recipe, index and
data. Settings that change only where or how fast it is computed (``EXECUTION_KEYS``) are left
out, so the same model trained on a GPU or in another shard keeps its id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cell import Cell

# Trainer keys that change where or how models are computed, not what they are.
EXECUTION_KEYS = ("accelerator", "ensemble_size", "group_size", "matmul_precision")


def compose_train_config(config_dir: Path, overrides: Sequence[str] = ()) -> dict:
    """Compose the training config from the Hydra groups in ``config_dir``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def model_id(cell: Cell, arch: dict, cfg: dict, index: int) -> str:
    """Deterministic identity of a model; the accelerator, the float32 matmul precision, the
    shard a model is in and the models it is trained with do not change it."""
    recipe = {k: v for k, v in cfg.items() if k != "trainer"}
    recipe["trainer"] = {
        k: v
        for k, v in cfg["trainer"].items()
        if k not in EXECUTION_KEYS and (k, str(v)) != ("precision", "32")
    }  # float32: ids as before
    key = [cell.dataset, cell.property, cell.descriptor, arch, recipe, index, cell.data_hash]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
