"""Fully connected architectures as JSON-able dicts, and their seeded XenonPy-style sampler.

An architecture is a JSON-able dict::

    {"n_in": 290, "hidden": [187, 151, 110], "activation": "leaky_relu",
     "dropout": 0.1, "batch_norm": true}

Each hidden layer is Linear -> Dropout -> BatchNorm -> activation (as in XenonPy.MDL); the output
layer is a single Linear unit (:class:`shotgun.nn.mlp.MLP` builds the network). Hidden widths are
sorted-descending fractions of the input width (or of ``base_width_cap`` when the input is wider,
e.g. 2,048-bit fingerprints).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any JSON-able parts, identical across processes and platforms."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_architecture(n_in: int, space: Mapping[str, Any], seed: int) -> dict:
    """Draw one architecture from ``space`` (the Hydra ``model`` group) with its own RNG."""
    rng = np.random.default_rng(seed)
    lo, hi = space["n_layers"]
    n_layers = int(rng.integers(lo, hi + 1))
    f_lo, f_hi = space["width_fraction"]
    fractions = np.sort(rng.uniform(f_lo, f_hi, size=n_layers))[::-1]
    base = _base_width(n_in, space)
    hidden = [max(int(space.get("min_width", 8)), int(round(f * base))) for f in fractions]
    activations = list(space["activations"])
    activation = activations[int(rng.integers(len(activations)))]
    # A list samples uniformly (drawn after the fixed draws above, so scalar spaces are unchanged).
    dropout, batch_norm = space["dropout"], space["batch_norm"]
    if isinstance(dropout, (list, tuple)):
        dropout = dropout[int(rng.integers(len(dropout)))]
    if isinstance(batch_norm, (list, tuple)):
        batch_norm = batch_norm[int(rng.integers(len(batch_norm)))]
    return {
        "n_in": int(n_in),
        "hidden": hidden,
        "activation": activation,
        "dropout": float(dropout),
        "batch_norm": bool(batch_norm),
    }


def _base_width(n_in: int, space: Mapping[str, Any]) -> int:
    return min(n_in, int(space.get("base_width_cap") or n_in))


def max_width(n_in: int, space: Mapping[str, Any]) -> int:
    """The widest hidden layer ``sample_architecture`` can draw for ``n_in`` inputs."""
    return max(
        int(space.get("min_width", 8)),
        int(round(float(space["width_fraction"][1]) * _base_width(n_in, space))),
    )


def architecture_name(arch: Mapping[str, Any]) -> str:
    """Compact label such as ``290-187-151-110-1:leaky_relu``."""
    widths = [arch["n_in"], *arch["hidden"], 1]
    return "-".join(map(str, widths)) + f":{arch['activation']}"


def noise_shape(n_in: int, space: Mapping[str, Any]) -> tuple[int, int]:
    """(max hidden layers, max hidden width) of an architecture space for ``n_in`` inputs: the
    shape of the dropout noise shared by every model of a cell."""
    return int(space["n_layers"][1]), max_width(n_in, space)
