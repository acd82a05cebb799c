"""Transfer learning from the library to a small target, honestly measured.

Modules by stage: ``options`` (what a run does, shared by target YAMLs, the CLI and the
workflow), ``target`` (the target's rows and descriptors), ``candidates`` (applicable library
models and their neural features), ``plans`` (cross-validation, nested CV and learning-curve
plans), ``learners``, ``screen`` (ridge screen of every candidate, refinement, baselines),
``selection`` (chosen pipelines, stack, nested estimate, learning curve), ``finetune``,
``pipeline`` (the saved winner), ``plots``, ``summary`` (``summary.json``), ``report``, ``run``
(the whole run) and ``map`` (the transferability map of a library).

Options and plans load without pandas or torch (``shotgun --help``); the rest load when first used.
"""

from ..lazy import lazy_exports
from .options import TransferError, TransferOptions

__all__ = [
    "TransferError",
    "TransferModel",
    "TransferOptions",
    "TransferSummary",
    "run_transfer",
    "screen_quick",
    "write_report",
    "write_transfer_map",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TransferModel": ".pipeline",
        "TransferSummary": ".summary",
        "run_transfer": ".run",
        "screen_quick": ".screen",
        "write_report": ".report",
        "write_transfer_map": ".map",
    },
)
