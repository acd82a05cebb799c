"""The abstract descriptor, the registry of descriptors by name, and rebuilding from a spec.

Implementing a descriptor (see ``composition.py`` or ``fingerprints.py``):

1. Subclass :class:`Descriptor`; set ``name`` (the registry key, also the feature-table and
   model-card name), ``version`` (bump it whenever the output for some input changes: models and
   cached features of the old version are then not reused), ``kinds`` (the input kinds accepted:
   ``molecule``, ``polymer``, ``inorganic``, ``structure``) and, in ``__init__``, ``params`` (a
   JSON-able dict of the constructor's arguments, so that ``get_descriptor(name, **params)``
   rebuilds the same descriptor).
2. Implement :meth:`Descriptor.feature_names` and :meth:`Descriptor.featurize`, which returns
   ``(X, ok)``: float32 ``X`` of shape (n, n_features) and a boolean ``ok`` per input; rows that
   are not ok are NaN. Parse inputs with the parsers of :mod:`shotgun.data.inputs`, import RDKit
   or pymatgen inside methods (workers and the Snakefile import this package), and never raise
   for one bad input.
3. Decorate the class with :func:`register` and import its module in ``descriptors/__init__``.

Two descriptors whose :meth:`Descriptor.feature_space` strings are equal give vectors of the same
layout and meaning, whatever their names and input kinds (``composition`` and
``organic_composition`` with the same ``stats``); :func:`for_kind` uses this to bring inputs of
another material class into a model's feature space.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "DESCRIPTORS",
    "Descriptor",
    "canonical_json",
    "for_kind",
    "from_spec",
    "get_descriptor",
    "register",
]

# Below this many inputs, featurization stays in-process (slow descriptors set a lower
# ``parallel_min_inputs``).
PARALLEL_MIN_INPUTS = 2000

# name -> class, in registration order (the order of ``descriptors: applicable`` in the grid).
DESCRIPTORS: dict[str, type[Descriptor]] = {}


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys: equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class Descriptor(ABC):
    """A map from material strings to fixed-length float vectors (see the module docstring)."""

    name: str
    version: str
    kinds: tuple[str, ...]
    params: dict[str, Any]
    parallel_min_inputs = PARALLEL_MIN_INPUTS

    def spec(self) -> dict[str, Any]:
        """``{"name", "version", "params"}``: stored with every feature table and model."""
        return {"name": self.name, "version": self.version, "params": dict(self.params)}

    def feature_space(self) -> str:
        """Identifies the layout and meaning of the feature vector (see the module docstring)."""
        return f"{self.name}:{self.version}:{canonical_json(self.params)}"

    @abstractmethod
    def feature_names(self) -> list[str]:
        """One name per feature column."""

    @property
    def n_features(self) -> int:
        return len(self.feature_names())

    @abstractmethod
    def featurize(self, inputs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(float32 X of shape (n, n_features), bool ok of shape (n,)); NaN rows where not ok."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Descriptor) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return (
            f"get_descriptor({self.name!r}, {args})" if args else f"get_descriptor({self.name!r})"
        )


def register(cls: type[Descriptor]) -> type[Descriptor]:
    """Class decorator: make ``cls`` available by its ``name``."""
    if cls.name in DESCRIPTORS:
        raise ValueError(f"descriptor {cls.name!r} is registered twice")
    DESCRIPTORS[cls.name] = cls
    return cls


def get_descriptor(name: str, **params: Any) -> Descriptor:
    """Instantiate a registered descriptor by name with constructor params."""
    try:
        cls = DESCRIPTORS[name]
    except KeyError:
        raise ValueError(f"unknown descriptor {name!r}; known: {sorted(DESCRIPTORS)}") from None
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"descriptor {name!r} has no parameter {', '.join(unknown)}; "
            f"parameters: {', '.join(sorted(known)) or 'none'}"
        )
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
