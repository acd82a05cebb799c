"""Batched training of many small MLPs: K networks as one computation, driven by Lightning.

Models of one shard share the training batches (one order per cell) and the dropout noise (one
uniform draw per step and layer, thresholded by each model's own rate), so a model's training
does not depend on which other models it is trained with. Models are grouped by depth, batch
norm and activation family; within a group, hidden widths are padded to the group's largest.
Padded units stay exact zeros without masking: their weights, biases and BatchNorm scale and
shift start at zero, every activation maps 0 to 0, so they never receive a gradient and Adam
(element-wise) never moves them. Weights of a group are stacked: the first layer as (n_in, K, width), so that the
shared input batch meets all K models in one matrix product, later layers as (K, in, out) for
batched products. Each model has its own early stopping and keeps its own best weights; the
best weights are unstacked into the ``state_dict`` of :func:`shotgun.models.build_network`.

:func:`fit_single` trains one plain ``build_network`` module with the same protocol: it is the
reference that a model trained inside an ensemble equals (up to float summation order).
"""

from __future__ import annotations

import logging
import warnings
from typing import Mapping, Sequence

import numpy as np

from .models import build_network, max_width

SLOPES = {"relu": 0.0, "leaky_relu": 0.01}  # nn.LeakyReLU's default slope


def _family(activation: str) -> str:
    return "leaky" if activation in SLOPES else activation


def group_key(arch: Mapping) -> tuple:
    """Architectures with equal keys train in one stacked group."""
    return (len(arch["hidden"]), bool(arch["batch_norm"]), _family(arch["activation"]))


def plan_groups(archs: Sequence[Mapping], group_size: int) -> list[list[int]]:
    """Indices of ``archs`` per stacked group: same :func:`group_key`, then sorted by widths and
    cut into groups of at most ``group_size``, so that padding to a group's widest layers wastes
    little. Grouping changes speed only, never results."""
    keys: dict[tuple, list[int]] = {}
    for i, a in enumerate(archs):
        keys.setdefault(group_key(a), []).append(i)
    groups = []
    for members in keys.values():
        members = sorted(members, key=lambda i: archs[i]["hidden"][1:] + archs[i]["hidden"][:1])
        n = -(-len(members) // max(1, group_size))
        groups += [[int(i) for i in part] for part in np.array_split(members, n)]
    return groups


class Batches:
    """Shuffled mini-batches of tensors already on the training device; one order per seed."""

    def __init__(self, X, y, batch_size: int, seed: int | None):
        import torch

        self.X, self.y, self.batch_size = X, y, batch_size
        self.gen = None if seed is None else torch.Generator().manual_seed(seed)

    def __len__(self):
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        import torch

        n = len(self.y)
        if self.gen is None:  # validation: the whole split, in order
            yield self.X, self.y
            return
        perm = torch.randperm(n, generator=self.gen).to(self.X.device)
        for start in range(0, n, self.batch_size):
            sel = perm[start:start + self.batch_size]
            if len(sel) > 1 or start == 0:  # BatchNorm needs two samples
                yield self.X[sel], self.y[sel]


class DropoutNoise:
    """Uniform noise for every dropout layer of a step, shared by all models of a shard.

    Each step draws (max layers, batch, max width) uniforms from a CPU generator, whatever the
    models trained; a unit is kept where its uniform is >= the model's dropout rate.
    """

    def __init__(self, seed: int, n_layers: int, width: int):
        import torch

        self.gen = torch.Generator().manual_seed(seed)
        self.shape = (n_layers, width)

    def draw(self, batch: int, device):
        import torch

        u = torch.rand(self.shape[0], batch, self.shape[1], generator=self.gen)
        return u.to(device, non_blocking=True)


def _quiet_lightning():
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*configure_optimizers.*")


def _adam(params, optim: Mapping):
    """Adam, fused into one kernel per tensor (CPU and CUDA): element-wise, so K stacked models
    update exactly as K separate optimisers would."""
    import torch

    return torch.optim.Adam(params, lr=optim["lr"], weight_decay=optim["weight_decay"],
                            fused=True)


def _trainer(cfg: Mapping, callbacks):
    import lightning as L

    t = cfg["trainer"]
    return L.Trainer(
        accelerator=t["accelerator"], devices=1, max_epochs=t["max_epochs"], callbacks=callbacks,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic="warn",
    )


def _stacked_module():
    """The stacked K-model module class (built lazily: importing this module skips torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class _Stacked(nn.Module):
        def __init__(self, archs: Sequence[Mapping], seeds: Sequence[int]):
            super().__init__()
            self.archs = [dict(a) for a in archs]
            depth = len(archs[0]["hidden"])
            assert all(group_key(a) == group_key(archs[0]) for a in archs)
            K, n_in = len(archs), archs[0]["n_in"]
            self.K, self.depth, self.n_in = K, depth, n_in
            self.batch_norm = bool(archs[0]["batch_norm"])
            self.family = _family(archs[0]["activation"])
            widths = [max(a["hidden"][l] for a in archs) for l in range(depth)]
            self.widths = widths
            ins = [n_in] + widths[:-1]
            z = torch.zeros
            self.w = nn.ParameterList(
                [nn.Parameter(z(n_in, K, widths[0]))]
                + [nn.Parameter(z(K, ins[l], widths[l])) for l in range(1, depth)])
            self.b = nn.ParameterList([nn.Parameter(z(K, wd)) for wd in widths])
            if self.batch_norm:
                self.gamma = nn.ParameterList([nn.Parameter(z(K, wd)) for wd in widths])
                self.beta = nn.ParameterList([nn.Parameter(z(K, wd)) for wd in widths])
                for l, wd in enumerate(widths):
                    self.register_buffer(f"rm{l}", z(K, wd))
                    self.register_buffer(f"rv{l}", torch.ones(K, wd))
            self.wo = nn.Parameter(z(K, widths[-1]))
            self.bo = nn.Parameter(z(K))
            ps = sorted({float(a["dropout"]) for a in archs})
            self.p_shared = ps[0] if len(ps) == 1 else None
            self.register_buffer("p", torch.tensor([float(a["dropout"]) for a in archs]))
            slopes = [SLOPES.get(a["activation"], 0.0) for a in archs]
            self.slope_shared = slopes[0] if len(set(slopes)) == 1 else None
            self.register_buffer("slope", torch.tensor(slopes))
            self.steps = 0  # BatchNorm's num_batches_tracked, equal for all models
            with torch.no_grad():
                for k, (a, s) in enumerate(zip(archs, seeds)):
                    torch.manual_seed(s)
                    self.load_model(k, build_network(a).state_dict())

        # -- per-model views ---------------------------------------------------------------
        def _views(self, k: int, arch: Mapping):
            """(state_dict key, view into the stacked tensor) of model k."""
            h, ins = arch["hidden"], [arch["n_in"]] + arch["hidden"][:-1]
            out = []
            for l in range(self.depth):
                w = self.w[l][:, k, :h[l]] if l == 0 else self.w[l][k, :ins[l], :h[l]]
                out += [(f"blocks.{l}.linear.weight", w.T), (f"blocks.{l}.linear.bias",
                                                             self.b[l][k, :h[l]])]
                if self.batch_norm:
                    out += [(f"blocks.{l}.norm.weight", self.gamma[l][k, :h[l]]),
                            (f"blocks.{l}.norm.bias", self.beta[l][k, :h[l]]),
                            (f"blocks.{l}.norm.running_mean", getattr(self, f"rm{l}")[k, :h[l]]),
                            (f"blocks.{l}.norm.running_var", getattr(self, f"rv{l}")[k, :h[l]])]
            out += [("output.weight", self.wo[k:k + 1, :h[-1]]), ("output.bias", self.bo[k:k + 1])]
            return out

        def load_model(self, k: int, state: Mapping):
            for key, view in self._views(k, self.archs[k]):
                view.copy_(state[key])

        def model_state(self, k: int) -> dict:
            """State dict of model k in the layout of ``build_network(arch)``."""
            state = {key: v.detach().to("cpu").clone().contiguous()
                     for key, v in self._views(k, self.archs[k])}
            if self.batch_norm:
                for l in range(self.depth):
                    state[f"blocks.{l}.norm.num_batches_tracked"] = torch.tensor(self.steps)
            return state

        # -- forward -----------------------------------------------------------------------
        def forward(self, x, noise=None):
            """Predictions (batch, K); ``noise`` (layers, batch, width) enables training mode."""
            B, K = x.shape[0], self.K
            h = None
            for l in range(self.depth):
                W = self.widths[l]
                if l == 0:
                    z = torch.addmm(self.b[0].reshape(1, -1), x, self.w[0].reshape(self.n_in, -1))
                    z = z.view(B, K, W)
                else:
                    z = torch.baddbmm(self.b[l].unsqueeze(1), h.transpose(0, 1), self.w[l])
                    z = z.transpose(0, 1)
                if noise is not None:
                    u = noise[l, :, None, :W]
                    if self.p_shared is not None:  # one rate: a (batch, 1, width) mask
                        z = z * ((u >= self.p_shared) * (1 / (1 - self.p_shared)))
                    else:
                        z = z * ((u >= self.p[:, None]) / (1 - self.p[:, None]))
                if self.batch_norm:
                    z = F.batch_norm(
                        z.reshape(B, K * W), getattr(self, f"rm{l}").view(-1),
                        getattr(self, f"rv{l}").view(-1), self.gamma[l].reshape(-1),
                        self.beta[l].reshape(-1), training=noise is not None, momentum=0.1,
                        eps=1e-5).view(B, K, W)
                if self.family != "leaky":
                    h = {"elu": F.elu, "tanh": torch.tanh}[self.family](z)
                elif self.slope_shared is not None:
                    h = F.leaky_relu(z, self.slope_shared) if self.slope_shared else F.relu(z)
                else:  # per-model slopes: PReLU with one fixed weight per unit
                    h = F.prelu(z.reshape(B, K * W),
                                self.slope.repeat_interleave(W)).view(B, K, W)
            if noise is not None:
                self.steps += 1
            return (h * self.wo).sum(-1) + self.bo

        def flops_per_sample(self) -> tuple[float, float]:
            """Multiply-adds x 2 of one forward pass: (of the real models, as computed padded)."""
            real = sum(sum(i * o for i, o in zip([a["n_in"]] + a["hidden"], a["hidden"] + [1]))
                       for a in self.archs)
            ws = [self.n_in] + self.widths
            padded = self.K * (sum(i * o for i, o in zip(ws[:-1], ws[1:])) + ws[-1])
            return 2.0 * real, 2.0 * padded

    return _Stacked


def _ensemble_module(groups, cfg: Mapping, noise: DropoutNoise):
    """The LightningModule holding every group of a chunk; losses of all models are summed,
    so each model gets exactly its own gradient."""
    import lightning as L
    import torch

    optim = cfg["optim"]

    class Ensemble(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.groups = torch.nn.ModuleList(groups)
            self.val_losses = None

        def configure_optimizers(self):
            return _adam(self.parameters(), optim)

        def training_step(self, batch, _):
            x, y = batch
            u = noise.draw(len(y), x.device)
            loss = sum(((g(x, u) - y[:, None]) ** 2).mean(0).sum() for g in self.groups)
            opt = self.optimizers()
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt.step()

        def validation_step(self, batch, _):
            x, y = batch
            self.val_losses = torch.cat([((g(x) - y[:, None]) ** 2).mean(0) for g in self.groups])

    return Ensemble()


def _keep_best_callback(models, patience: int):
    """Per-model early stopping: snapshot of each model's best weights; stop when all stopped."""
    from lightning.pytorch.callbacks import Callback

    class KeepBest(Callback):
        def __init__(self):
            n = len(models)
            self.best = np.full(n, np.inf)
            self.best_epoch = np.full(n, -1)
            self.epochs = np.zeros(n, dtype=int)
            self.wait = np.zeros(n, dtype=int)
            self.active = np.ones(n, dtype=bool)
            self.states: list[dict | None] = [None] * n

        def on_validation_epoch_end(self, trainer, module):
            losses = module.val_losses.detach().double().cpu().numpy()
            epoch = trainer.current_epoch
            for i in np.flatnonzero(self.active):
                group, k = models[i]
                self.epochs[i] = epoch + 1
                if losses[i] < self.best[i]:
                    self.best[i], self.best_epoch[i], self.wait[i] = losses[i], epoch, 0
                    self.states[i] = group.model_state(k)
                else:
                    self.wait[i] += 1
                    if self.wait[i] >= patience:
                        self.active[i] = False
            if not self.active.any():
                trainer.should_stop = True

    return KeepBest()


def fit_ensemble(archs: Sequence[Mapping], seeds: Sequence[int], cfg: Mapping,
                 X_tr, y_tr, X_val, y_val, batch_seed: int, noise_seed: int,
                 noise_shape: tuple[int, int]) -> list[tuple[dict, dict]]:
    """Train K models together; returns (best state_dict, fit stats) per model, in input order.

    ``X_*``/``y_*`` are float32 tensors on the training device; ``noise_shape`` is
    (max layers, max width) of the architecture space (see :func:`noise_shape`).
    """
    _quiet_lightning()
    Stacked = _stacked_module()
    groups, where = [], [None] * len(archs)
    buckets = plan_groups(archs, int(cfg["trainer"].get("group_size") or len(archs)))
    for members in buckets:
        g = Stacked([archs[i] for i in members], [seeds[i] for i in members])
        for k, i in enumerate(members):
            where[i] = (g, k)
        groups.append(g)
    order = [i for members in buckets for i in members]  # validation loss order
    t = cfg["trainer"]
    noise = DropoutNoise(noise_seed, *noise_shape)
    keep = _keep_best_callback([where[i] for i in order], t["patience"])
    trainer = _trainer(cfg, [keep])
    trainer.fit(_ensemble_module(groups, cfg, noise), Batches(X_tr, y_tr, t["batch_size"], batch_seed),
                Batches(X_val, y_val, len(y_val), None))
    results = [None] * len(archs)
    for j, i in enumerate(order):
        results[i] = (keep.states[j], {"best_val_mse": float(keep.best[j]),
                                       "best_epoch": int(keep.best_epoch[j]),
                                       "epochs": int(keep.epochs[j])})
    return results


def noise_shape(n_in: int, space: Mapping) -> tuple[int, int]:
    """(max hidden layers, max hidden width) of an architecture space for ``n_in`` inputs."""
    return int(space["n_layers"][1]), max_width(n_in, space)


def fit_single(arch: Mapping, seed: int, cfg: Mapping, X_tr, y_tr, X_val, y_val,
               batch_seed: int, noise_seed: int, noise_shape: tuple[int, int]):
    """Train one plain ``build_network`` module with the ensemble's protocol (the reference).

    Returns (best state_dict, fit stats)."""
    import lightning as L
    import torch

    _quiet_lightning()
    torch.manual_seed(seed)
    net = build_network(arch)
    noise = DropoutNoise(noise_seed, *noise_shape)
    optim = cfg["optim"]

    class SharedNoiseDropout(torch.nn.Module):
        def __init__(self, layer: int):
            super().__init__()
            self.layer, self.u = layer, None

        def forward(self, z):
            if not self.training:
                return z
            p = float(arch["dropout"])
            return z * (self.u[self.layer, :, :z.shape[1]] >= p) / (1 - p)

    drops = [SharedNoiseDropout(l) for l in range(len(net.blocks))]
    for block, d in zip(net.blocks, drops):
        block["dropout"] = d

    class Single(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.val_losses = None

        def configure_optimizers(self):
            return _adam(self.parameters(), optim)

        def training_step(self, batch, _):
            x, y = batch
            u = noise.draw(len(y), x.device)
            for d in drops:
                d.u = u
            return ((self.net(x) - y) ** 2).mean()

        def validation_step(self, batch, _):
            x, y = batch
            self.val_losses = ((self.net(x) - y) ** 2).mean().reshape(1)

    class _View:  # what the early-stopping callback needs from a group
        @staticmethod
        def model_state(_):
            return {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}

    t = cfg["trainer"]
    keep = _keep_best_callback([(_View, 0)], t["patience"])
    trainer = _trainer(cfg, [keep])
    trainer.fit(Single(), Batches(X_tr, y_tr, t["batch_size"], batch_seed),
                Batches(X_val, y_val, len(y_val), None))
    return keep.states[0], {"best_val_mse": float(keep.best[0]),
                            "best_epoch": int(keep.best_epoch[0]), "epochs": int(keep.epochs[0])}
