"""Fully connected architectures: a seeded XenonPy-style sampler and the torch network.

An architecture is a JSON-able dict::

    {"n_in": 290, "hidden": [187, 151, 110], "activation": "leaky_relu",
     "dropout": 0.1, "batch_norm": true}

Each hidden layer is Linear -> Dropout -> BatchNorm -> activation (as in XenonPy.MDL); the output
layer is a single Linear unit. Hidden widths are sorted-descending fractions of the input width
(or of ``base_width_cap`` when the input is wider, e.g. 2,048-bit fingerprints).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

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
    return max(int(space.get("min_width", 8)),
               int(round(float(space["width_fraction"][1]) * _base_width(n_in, space))))


def architecture_name(arch: Mapping[str, Any]) -> str:
    """Compact label such as ``290-187-151-110-1:leaky_relu``."""
    widths = [arch["n_in"], *arch["hidden"], 1]
    return "-".join(map(str, widths)) + f":{arch['activation']}"


def build_network(arch: Mapping[str, Any]):
    """The torch module for an architecture dict (see the module docstring)."""
    import torch
    from torch import nn

    activations = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "tanh": nn.Tanh}

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            blocks, width = [], arch["n_in"]
            for out in arch["hidden"]:
                blocks.append(
                    nn.ModuleDict(
                        {
                            "linear": nn.Linear(width, out),
                            "dropout": nn.Dropout(arch["dropout"]),
                            "norm": nn.BatchNorm1d(out) if arch["batch_norm"] else nn.Identity(),
                            "act": activations[arch["activation"]](),
                        }
                    )
                )
                width = out
            self.blocks = nn.ModuleList(blocks)
            self.output = nn.Linear(width, 1)

        def _pre_activations(self, x):
            for block in self.blocks:
                z = block["norm"](block["dropout"](block["linear"](x)))
                yield z
                x = block["act"](z)

        def forward(self, x):
            for z in self._pre_activations(x):
                pass
            return self.output(self.blocks[-1]["act"](z)).squeeze(-1)

        def hidden_features(self, x, depth: int = 1):
            """Pre-activation outputs of the last ``depth`` hidden layers, concatenated."""
            return self.hidden_features_at(x, [depth])[0]

        def hidden_features_at(self, x, depths):
            """``hidden_features`` at each of ``depths``, from one forward pass."""
            for depth in depths:
                if not 1 <= depth <= len(self.blocks):
                    raise ValueError(f"depth must be in 1..{len(self.blocks)}, got {depth}")
            outputs = list(self._pre_activations(x))
            return [torch.cat(outputs[-depth:], dim=-1) for depth in depths]

    return MLP()
