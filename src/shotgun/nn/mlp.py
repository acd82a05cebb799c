"""The plain network of a library model: an MLP built from an architecture dict.

Each hidden layer is Linear -> Dropout -> BatchNorm (or identity) -> activation; the output layer
is one linear unit. The state-dict keys (``blocks.<l>.linear.weight``, ``output.bias``, ...) are
the layout of every stored model's weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "tanh": nn.Tanh}


def block(n_in: int, n_out: int, arch: Mapping[str, Any]) -> nn.ModuleDict:
    """One hidden layer: ``linear``, ``dropout``, ``norm``, ``act``."""
    return nn.ModuleDict(
        {
            "linear": nn.Linear(n_in, n_out),
            "dropout": nn.Dropout(arch["dropout"]),
            "norm": nn.BatchNorm1d(n_out) if arch["batch_norm"] else nn.Identity(),
            "act": ACTIVATIONS[arch["activation"]](),
        }
    )


def apply_block(block: nn.ModuleDict, x):
    """The activations of one hidden layer."""
    return block["act"](block["norm"](block["dropout"](block["linear"](x))))


class MLP(nn.Module):
    """The network of an architecture dict (see :mod:`shotgun.nn.architecture`)."""

    def __init__(self, arch: Mapping[str, Any]):
        super().__init__()
        blocks, width = [], arch["n_in"]
        for out in arch["hidden"]:
            blocks.append(block(width, out, arch))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.output = nn.Linear(width, 1)

    def _pre_activations(self, x):
        for b in self.blocks:
            z = b["norm"](b["dropout"](b["linear"](x)))
            yield z
            x = b["act"](z)

    def forward(self, x):
        *_, z = self._pre_activations(x)  # the last hidden layer's pre-activations
        return self.output(self.blocks[-1]["act"](z)).squeeze(-1)

    def hidden_features(self, x, depth: int = 1):
        """Pre-activation outputs of the last ``depth`` hidden layers, concatenated."""
        return self.hidden_features_at(x, [depth])[0]

    def hidden_features_at(self, x, depths: Sequence[int]):
        """``hidden_features`` at each of ``depths``, from one forward pass."""
        for depth in depths:
            if not 1 <= depth <= len(self.blocks):
                raise ValueError(f"depth must be in 1..{len(self.blocks)}, got {depth}")
        outputs = list(self._pre_activations(x))
        return [torch.cat(outputs[-depth:], dim=-1) for depth in depths]


def build_network(arch: Mapping[str, Any]) -> MLP:
    """The torch module for an architecture dict."""
    return MLP(arch)


def initial_network(arch: Mapping[str, Any], seed: int) -> MLP:
    """The network of ``arch`` with the initial weights training gives the model of ``seed``:
    torch's default initialisation drawn after ``torch.manual_seed(seed)`` (which reseeds the
    global generator, as training does)."""
    torch.manual_seed(seed)
    return MLP(arch)
