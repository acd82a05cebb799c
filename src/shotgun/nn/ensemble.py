"""Batched training of many small MLPs: K networks as one computation, driven by Lightning.

Models of one shard share the training batches (one order per cell) and the dropout noise (one
uniform draw per step and layer, thresholded by each model's own rate), so a model's training
does not depend on which other models it is trained with. Models are grouped by depth, batch
norm and activation family into stacked groups (:mod:`.stacked`).

Each model has its own early stopping and keeps its own best weights (:class:`KeepBest`); the
best weights are unstacked into the ``state_dict`` of :class:`shotgun.nn.mlp.MLP`. A model that
stops is removed from its group (with its optimizer state) at the end of that epoch and the
group's padding narrows to the remaining models, so stopped models cost no more compute.

On CPU, the groups of a step are shared among one thread per core, each running whole groups
(forward, backward, the group's own Adam step) with one intra-op thread, which costs less CPU
time than every operation split over the cores (``benchmarks/README.md``). With
``trainer.precision: bf16`` the hidden layers' matrix products take bfloat16 operands and give
bfloat16 results (accumulated in float32); weights, Adam, BatchNorm, activations and loss stay
float32, and :func:`shotgun.nn.reference.fit_single` rounds the same operands.
``trainer.matmul_precision`` chooses how torch computes float32 products
(:func:`shotgun.nn.trainer.matmul_precision`).

:func:`shotgun.nn.reference.fit_single` trains one plain MLP with the same protocol: it is the
reference that a model trained inside an ensemble equals (up to float summation order).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from .stacked import Masks, StackedGroup, plan_groups
from .trainer import DropoutNoise, EpochLoss, adam, fit, mm_dtype, quiet_lightning


class EnsembleModule(L.LightningModule):
    """The LightningModule holding every group of a chunk. Each group has its own loss and its
    own Adam (element-wise, so the same as one per model): each model gets exactly its own
    gradient and update.

    With ``workers`` > 1 (CPU), the groups of a step are shared among that many threads (the
    caller's and ``pool``'s), each running its groups' forward, backward and Adam step with one
    intra-op thread: the cores work on whole groups instead of meeting at a fork-join barrier
    after every operation, which also keeps a shared machine's load from stalling them.
    """

    def __init__(
        self,
        groups: Sequence[StackedGroup],
        optim: Mapping,
        noise: DropoutNoise,
        n_models: int,
        workers: int = 1,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.groups = torch.nn.ModuleList(groups)
        self.optim, self.noise, self.n_models, self.workers = optim, noise, n_models, workers
        self.val_losses = None
        self.epoch_loss = EpochLoss()
        self.opts: list = []
        self.pool = None

    def active_groups(self):
        return [g for g in self.groups if g.K]

    def configure_optimizers(self):
        self.opts = [adam(g.parameters(), self.optim) for g in self.groups]
        return self.opts

    def _parts(self) -> list[list[int]]:
        """Indices of the active groups per worker, balanced by stacked weights."""
        active = [i for i, g in enumerate(self.groups) if g.K]
        cost = {i: sum(w.numel() for w in self.groups[i].w) for i in active}
        parts = [[] for _ in range(max(1, min(self.workers, len(active))))]
        load = [0] * len(parts)
        for i in sorted(active, key=cost.get, reverse=True):
            j = load.index(min(load))
            parts[j].append(i)
            load[j] += cost[i]
        return parts

    def _run(self, fn) -> dict:
        """{group index: fn(group index)} over the active groups, shared among the workers
        (which take the caller's gradient and inference modes)."""
        modes = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def run(part):
            with torch.inference_mode(modes[1]), torch.set_grad_enabled(modes[0]):
                return {i: fn(i) for i in part}

        parts = self._parts()
        futures = [self.pool.submit(run, part) for part in parts[1:]]
        try:
            out = run(parts[0])
        finally:  # wait for the workers whatever happened here
            done = [f.result() for f in futures]
        for d in done:
            out.update(d)
        return out

    def on_train_epoch_start(self):
        self.epoch_loss = EpochLoss()

    def training_step(self, batch, _):
        x, y = batch
        masks = Masks(self.noise.draw(len(y), x.device))

        def train(i):
            opt = self.opts[i]
            opt.zero_grad(set_to_none=True)
            loss = ((self.groups[i](x, masks) - y) ** 2).mean(1)
            # a plain backward: the Trainer has no precision plugin to apply
            loss.sum().backward()
            opt.step()
            return loss

        for i, loss in self._run(train).items():
            self.epoch_loss.add(i, loss, len(y))

    def train_losses(self) -> np.ndarray:
        """Each model's training MSE over the epoch (NaN for a model that has stopped). A
        group keeps its models through an epoch: models are dropped only at its end."""
        out = np.full(self.n_models, np.nan)
        for i in self.epoch_loss.keys():
            out[self.groups[i].ids] = self.epoch_loss.mean(i)
        return out

    def validation_step(self, batch, _):
        x, y = batch
        losses = torch.full((self.n_models,), float("nan"), dtype=torch.float64)
        for i, loss in self._run(lambda i: ((self.groups[i](x) - y) ** 2).mean(1)).items():
            losses[self.groups[i].ids] = loss.double().cpu()
        self.val_losses = losses

    def drop(self, stopped: set[int]):
        """Remove stopped models from the batched computation."""
        for g, opt in zip(self.groups, self.opts):
            keep = [k for k, i in enumerate(g.ids) if i not in stopped]
            if len(keep) < g.K:
                g.select(keep, opt)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class History:
    """One model's training epoch by epoch, in the standardised target: the training MSE
    (row-weighted over the epoch's batches, dropout on), the validation MSE, and when each epoch
    ended; times are milliseconds since the Unix epoch, ``start_ms`` when training began."""

    start_ms: int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    epoch_end_ms: list[int] = field(default_factory=list)

    @property
    def end_ms(self) -> int:
        """When the model stopped training (its last epoch ended)."""
        return self.epoch_end_ms[-1] if self.epoch_end_ms else self.start_ms


@dataclass(frozen=True)
class Fitted:
    """What training one model gives: its best ``state_dict`` (None when its validation loss
    was never finite), its fit statistics (``best_val_mse``, ``best_epoch``, ``epochs``) and
    its per-epoch history."""

    state: dict | None
    stats: dict
    history: History


class KeepBest(Callback):
    """Per-model early stopping: snapshot of each model's best weights; stop when all stopped.
    Records each model's per-epoch history (the module's ``train_losses()`` and
    ``val_losses``).

    ``models()`` gives {model: (group, position)}, or ``models`` is a list of them; a group has
    ``model_state(position)``. Models that stop are dropped from the computation when the module
    has ``drop``."""

    def __init__(self, models, patience: int):
        self.models, self.patience = models, patience
        n = len(models()) if callable(models) else len(models)
        self.best = np.full(n, np.inf)
        self.best_epoch = np.full(n, -1)
        self.epochs = np.zeros(n, dtype=int)
        self.wait = np.zeros(n, dtype=int)
        self.active = np.ones(n, dtype=bool)
        self.states: list[dict | None] = [None] * n
        self.history = [History(_now_ms()) for _ in range(n)]

    def on_train_start(self, trainer, module):
        for h in self.history:
            h.start_ms = _now_ms()

    def on_validation_epoch_end(self, trainer, module):
        losses = module.val_losses.detach().double().cpu().numpy()
        train = module.train_losses()
        now = _now_ms()
        epoch = trainer.current_epoch
        where = self.models() if callable(self.models) else self.models
        stopped = set()
        for i in np.flatnonzero(self.active):
            group, k = where[i]
            self.epochs[i] = epoch + 1
            h = self.history[i]
            h.train_loss.append(float(train[i]))
            h.val_loss.append(float(losses[i]))
            h.epoch_end_ms.append(now)
            if losses[i] < self.best[i]:
                self.best[i], self.best_epoch[i], self.wait[i] = losses[i], epoch, 0
                self.states[i] = group.model_state(k)
            else:
                self.wait[i] += 1
                if self.wait[i] >= self.patience:
                    self.active[i] = False
                    stopped.add(int(i))
        if not self.active.any():
            trainer.should_stop = True
        elif stopped and hasattr(module, "drop"):
            module.drop(stopped)

    def stats(self, i: int) -> dict:
        """Fit statistics of model ``i``: its best validation MSE, best epoch and epochs run."""
        return {
            "best_val_mse": float(self.best[i]),
            "best_epoch": int(self.best_epoch[i]),
            "epochs": int(self.epochs[i]),
        }

    def fitted(self, i: int) -> Fitted:
        return Fitted(self.states[i], self.stats(i), self.history[i])


def fit_ensemble(
    archs: Sequence[Mapping],
    seeds: Sequence[int],
    cfg: Mapping,
    X_tr,
    y_tr,
    X_val,
    y_val,
    batch_seed: int,
    noise_seed: int,
    noise_shape: tuple[int, int],
) -> list[Fitted]:
    """Train K models together; returns each model's :class:`Fitted`, in input order.

    ``X_*``/``y_*`` are float32 tensors on the training device; ``noise_shape`` is
    (max layers, max width) of the architecture space
    (:func:`shotgun.nn.architecture.noise_shape`).
    """
    quiet_lightning()
    t = cfg["trainer"]
    mm = mm_dtype(cfg)
    groups = [
        StackedGroup([archs[i] for i in members], [seeds[i] for i in members], members, mm)
        for members in plan_groups(archs, int(t.get("group_size") or len(archs)))
    ]
    threads = torch.get_num_threads()
    workers = threads if X_tr.device.type == "cpu" else 1
    module = EnsembleModule(
        groups, cfg["optim"], DropoutNoise(noise_seed, *noise_shape), len(archs), workers
    )

    def where():
        return {i: (g, k) for g in module.active_groups() for k, i in enumerate(g.ids)}

    keep = KeepBest(where, t["patience"])
    if workers > 1:
        module.pool = ThreadPoolExecutor(
            workers - 1, initializer=torch.set_num_threads, initargs=(1,)
        )
        torch.set_num_threads(1)
    try:
        fit(cfg, module, [keep], X_tr, y_tr, X_val, y_val, batch_seed)
    finally:
        if module.pool is not None:
            module.pool.shutdown()
            module.pool = None
            torch.set_num_threads(threads)
    return [keep.fitted(i) for i in range(len(archs))]
