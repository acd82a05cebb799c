"""Networks and how they are trained: the plain MLP of a library model, stacked groups of many
MLPs, the batched fit loop with per-model early stopping, the single-model reference trainer and
the shared Lightning helpers that fine-tuning also uses.

``architecture`` needs numpy only (model ids and grids are planned without torch); the other
modules import torch and Lightning, loaded when one of their names is first used.
"""

from ..lazy import lazy_exports
from .architecture import (
    architecture_name,
    max_width,
    noise_shape,
    sample_architecture,
    stable_seed,
)

__all__ = [
    "MLP",
    "Batches",
    "DropoutNoise",
    "Fitted",
    "History",
    "KeepBest",
    "StackedGroup",
    "adam",
    "architecture_name",
    "build_network",
    "fit_ensemble",
    "fit_single",
    "initial_network",
    "make_trainer",
    "matmul_precision",
    "max_width",
    "mm_dtype",
    "noise_shape",
    "quiet_lightning",
    "sample_architecture",
    "stable_seed",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "MLP": ".mlp",
        "build_network": ".mlp",
        "initial_network": ".mlp",
        "StackedGroup": ".stacked",
        "Fitted": ".ensemble",
        "History": ".ensemble",
        "KeepBest": ".ensemble",
        "fit_ensemble": ".ensemble",
        "fit_single": ".reference",
        "Batches": ".trainer",
        "DropoutNoise": ".trainer",
        "adam": ".trainer",
        "make_trainer": ".trainer",
        "matmul_precision": ".trainer",
        "mm_dtype": ".trainer",
        "quiet_lightning": ".trainer",
    },
)
