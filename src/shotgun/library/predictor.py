"""A library model ready to use: its descriptor, input and target scalers, and network.

``predict`` gives values in the property's unit; ``features`` gives neural descriptors, the
pre-activation outputs of the last ``depth`` hidden layers (what transfer learning screens).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import INPUT_KINDS
from ..data.inputs import KIND_NOUNS, InputKindError, check_kinds, input_list
from ..descriptors import for_kind, from_spec
from ..nn.mlp import MLP, initial_network
from .card import LibraryError, ModelCard
from .store import Library


class Predictor:
    """A library model ready to use: descriptor, scalers and network (float32, whatever the
    dtype its weights were stored in)."""

    def __init__(self, card: ModelCard, weights: Path | Mapping[str, torch.Tensor]):
        """``weights``: a weights file as training writes it, or its tensors by the same names
        (:meth:`Library.weights`)."""
        self.card = card
        self.descriptor = from_spec(card.descriptor)
        tensors = dict(load_file(str(weights)) if isinstance(weights, Path) else weights)
        self.x_mean = tensors.pop("x_mean").float().numpy()
        self.x_std = tensors.pop("x_std").float().numpy()
        # Sorted hashes of the training inputs (the leakage guard); None in older libraries.
        seen = tensors.pop("train_inputs", None)
        self.train_inputs = None if seen is None else seen.numpy()
        with torch.device("meta"):  # no random initialisation: the weights replace it
            self.net = MLP(card.architecture)
        self.net.load_state_dict(
            {
                k.removeprefix("net."): v.float() if v.is_floating_point() else v
                for k, v in tensors.items()
            },
            assign=True,
        )
        self.net.eval()
        self.y_mean = card.target_scaler.mean
        self.y_std = card.target_scaler.std
        self.clip = card.input_scaler.clip

    @property
    def n_hidden(self) -> int:
        return self.card.n_hidden

    def with_random_weights(self, seed: int) -> Predictor:
        """This model (descriptor, input and target scalers, architecture) with its network's
        weights drawn afresh as training initialises them from ``seed``: a random-feature
        control. The global torch generator is left as it was."""
        twin = copy.copy(self)
        with torch.random.fork_rng(devices=[]):
            twin.net = initial_network(self.card.architecture, seed).eval()
        return twin

    def save_weights(self, path: Path) -> Path:
        """Write the network and input scaler as a weights file of training's layout (float32)."""
        tensors = {f"net.{k}": v.contiguous() for k, v in self.net.state_dict().items()}
        tensors["x_mean"] = torch.from_numpy(self.x_mean)
        tensors["x_std"] = torch.from_numpy(self.x_std)
        save_file(tensors, str(path))
        return path

    def scaled(self, X: np.ndarray):
        """The network's input tensor for a descriptor matrix: standardised, clipped, float32."""
        Z = np.clip((X - self.x_mean) / self.x_std, -self.clip, self.clip)
        return torch.as_tensor(Z.astype(np.float32))

    def predict_descriptors(self, X: np.ndarray) -> np.ndarray:
        """Predictions in the property's unit from a descriptor matrix."""
        with torch.no_grad():
            return self.net(self.scaled(X)).numpy().astype(np.float64) * self.y_std + self.y_mean

    def features_descriptors(self, X: np.ndarray, depth: int = 1) -> np.ndarray:
        """Neural descriptors (pre-activations of the last ``depth`` hidden layers)."""
        return self.features_at(X, [depth])[0]

    def features_at(self, X: np.ndarray, depths: Sequence[int]) -> list[np.ndarray]:
        """``features_descriptors`` at each of ``depths``, from one forward pass."""
        with torch.no_grad():
            return [F.numpy() for F in self.net.hidden_features_at(self.scaled(X), depths)]

    def descriptors(self, inputs: str | Sequence[str], kind: str | None = None):
        """Descriptor matrix (zeros where not ok) and ok mask; ``kind`` names the inputs'
        material class when it is not the model's own (e.g. molecules for a composition model:
        organic_composition). A single string is one input. Inputs are checked against the
        kinds the model takes (:func:`shotgun.data.check_kinds`): an error when they are not of
        those kinds, a warning when some are not (those are not ok)."""
        inputs, d = input_list(inputs), self.descriptor
        if kind is not None and kind not in d.kinds:
            d = for_kind(self.card.descriptor, kind)
            if d is None:
                raise LibraryError(
                    f"model {self.card.model_id} ({self.descriptor.name}) cannot take {kind} inputs"
                )
        kinds = d.kinds if kind is None else (kind,)
        source = f"model {self.card.model_id} ({self.descriptor.name}, {KIND_NOUNS[kinds[0]]})"
        try:
            fits = check_kinds(inputs, kinds, source).fits
        except InputKindError as err:
            bridges = [  # the kinds the model takes through a bridge (SMILES: molecule)
                k
                for k in INPUT_KINDS
                if kind is None and k not in kinds and for_kind(self.card.descriptor, k)
            ]
            if "molecule" in bridges and "polymer" in bridges:
                bridges.remove("polymer")
            hint = "".join(
                f"; it takes {KIND_NOUNS[k]} with kind={k!r} (--kind {k})" for k in bridges
            )
            raise InputKindError(f"{err}{hint}") from None
        X, ok = d.featurize(inputs)
        ok &= fits
        return np.where(ok[:, None], X, 0.0), ok

    def predict(self, inputs: str | Sequence[str], kind: str | None = None) -> np.ndarray:
        """Predictions for SMILES or formulas; NaN where an input cannot be featurized."""
        X, ok = self.descriptors(inputs, kind)
        return np.where(ok, self.predict_descriptors(X), np.nan)

    def features(self, inputs: str | Sequence[str], depth: int = 1, kind: str | None = None):
        X, ok = self.descriptors(inputs, kind)
        return np.where(ok[:, None], self.features_descriptors(X, depth), np.nan)


def features_many(
    library: Library,
    model_ids: Sequence[str],
    inputs: str | Sequence[str],
    depth: int = 1,
    kind: str | None = None,
) -> dict[str, np.ndarray]:
    """Neural descriptors of many models for one set of inputs (of material class ``kind``,
    bridged into each model's feature space when needed), each descriptor computed once.

    Rows whose input a model's descriptor cannot featurize are NaN for that model.
    """
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    out = {}
    for mid in model_ids:
        model = library.load(mid)
        key = json.dumps(model.card.descriptor, sort_keys=True)
        if key not in cache:
            cache[key] = model.descriptors(inputs, kind)
        X, ok = cache[key]
        out[mid] = np.where(ok[:, None], model.features_descriptors(X, depth), np.nan)
    return out
