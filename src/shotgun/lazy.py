"""Lazy re-exports for package ``__init__`` modules.

A stage package names its whole public API in its ``__init__``, but a name that lives in a heavy
module (pandas, torch, Lightning, MLflow) is imported on first use only, so the Snakefile and every
``--help`` stay fast: importing ``shotgun.training.grid`` must not import torch.

>>> __getattr__, __dir__ = lazy_exports(__name__, {"clean": ".cleaning"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable, Callable]:
    """Module ``__getattr__`` and ``__dir__`` (PEP 562) for ``package``: ``names`` maps an
    exported name to the (relative) module defining it, imported when the name is first used."""

    def __getattr__(name: str):
        try:
            module = names[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later uses skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
