"""The single-model reference trainer: one plain MLP with the batched ensemble's protocol.

A model trained inside a batched ensemble (:func:`shotgun.nn.ensemble.fit_ensemble`) equals the
model trained alone here, up to float summation order: same initialisation (its own seed), same
batches, same dropout noise (thresholded at the model's rate), same Adam, same early stopping.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import numpy as np
import torch

from .ensemble import Fitted, KeepBest
from .mlp import MLP, initial_network
from .trainer import DropoutNoise, EpochLoss, adam, fit, mm_dtype, quiet_lightning


class MixedLinear(torch.nn.Linear):
    """A linear layer whose product takes ``mm`` operands (bf16 training), output in the input's
    dtype."""

    def __init__(self, in_features: int, out_features: int, mm):
        super().__init__(in_features, out_features)
        self.mm = mm

    def forward(self, x):
        mm = self.mm
        return torch.nn.functional.linear(x.to(mm), self.weight.to(mm), self.bias.to(mm)).to(
            x.dtype
        )


class SharedNoiseDropout(torch.nn.Module):
    """Dropout of one layer from the step's shared uniforms ``u`` (see ``DropoutNoise``)."""

    def __init__(self, layer: int, p: float):
        super().__init__()
        self.layer, self.p, self.u = layer, p, None

    def forward(self, z):
        if not self.training:
            return z
        return z * (self.u[self.layer, :, : z.shape[1]] >= self.p) / (1 - self.p)


class SingleModule(L.LightningModule):
    """One network trained on the shared noise, with its validation loss for :class:`KeepBest`."""

    def __init__(self, net: MLP, optim: Mapping, noise: DropoutNoise, drops):
        super().__init__()
        self.net, self.optim, self.noise, self.drops = net, optim, noise, drops
        self.val_losses = None
        self.epoch_loss = EpochLoss()

    def configure_optimizers(self):
        return adam(self.parameters(), self.optim)

    def on_train_epoch_start(self):
        self.epoch_loss = EpochLoss()

    def training_step(self, batch, _):
        x, y = batch
        u = self.noise.draw(len(y), x.device)
        for d in self.drops:
            d.u = u
        loss = ((self.net(x) - y) ** 2).mean()
        self.epoch_loss.add(0, loss, len(y))
        return loss

    def train_losses(self) -> np.ndarray:
        return np.atleast_1d(self.epoch_loss.mean(0))

    def validation_step(self, batch, _):
        x, y = batch
        self.val_losses = ((self.net(x) - y) ** 2).mean().reshape(1)

    def model_state(self, _=0) -> dict:
        """The network's state dict on the CPU (what :class:`KeepBest` snapshots)."""
        return {k: v.detach().to("cpu").clone() for k, v in self.net.state_dict().items()}


def fit_single(
    arch: Mapping,
    seed: int,
    cfg: Mapping,
    X_tr,
    y_tr,
    X_val,
    y_val,
    batch_seed: int,
    noise_seed: int,
    noise_shape: tuple[int, int],
) -> Fitted:
    """Train one plain MLP with the ensemble's protocol (the reference)."""
    quiet_lightning()
    net = initial_network(arch, seed)
    mm = mm_dtype(cfg)
    if mm is not None:  # hidden layers' products on mm operands, as in the ensemble
        for block in net.blocks:
            with torch.device("meta"):
                mixed = MixedLinear(block["linear"].in_features, block["linear"].out_features, mm)
            mixed.load_state_dict(block["linear"].state_dict(), assign=True)
            block["linear"] = mixed
    drops = [SharedNoiseDropout(layer, float(arch["dropout"])) for layer in range(len(net.blocks))]
    for block, d in zip(net.blocks, drops):
        block["dropout"] = d
    module = SingleModule(net, cfg["optim"], DropoutNoise(noise_seed, *noise_shape), drops)
    keep = KeepBest([(module, 0)], cfg["trainer"]["patience"])
    fit(cfg, module, [keep], X_tr, y_tr, X_val, y_val, batch_seed)
    return keep.fitted(0)
