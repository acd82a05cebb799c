"""Shared training helpers: mini-batches, dropout noise, Adam, the Lightning trainer, precision.

The batched ensemble (:mod:`.ensemble`), the single-model reference (:mod:`.reference`) and
fine-tuning (:mod:`shotgun.transfer.finetune`) train through these: :func:`make_trainer` for a
quiet Lightning ``Trainer`` (no logger, checkpoints, progress bar or sanity steps),
:func:`adam` for the fused optimiser, :class:`Batches` for tensors already on the device.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Mapping
from contextlib import contextmanager

import torch


class Batches:
    """Shuffled mini-batches of tensors already on the training device; one order per seed."""

    def __init__(self, X, y, batch_size: int, seed: int | None):
        self.X, self.y, self.batch_size = X, y, batch_size
        self.gen = None if seed is None else torch.Generator().manual_seed(seed)

    def __len__(self):
        """The batches an epoch yields. Lightning validates after the last of them: a count
        that includes a batch never yielded would skip every validation, so no model would
        ever record a best state."""
        n, size = len(self.y), self.batch_size
        full, rest = divmod(n, size)
        if self.gen is None:
            return 1
        return full + (rest > 1 or (rest == 1 and full == 0))

    def __iter__(self):
        n = len(self.y)
        if self.gen is None:  # validation: the whole split, in order
            yield self.X, self.y
            return
        perm = torch.randperm(n, generator=self.gen).to(self.X.device)
        for start in range(0, n, self.batch_size):
            sel = perm[start : start + self.batch_size]
            if len(sel) > 1 or start == 0:  # BatchNorm needs two samples
                yield self.X[sel], self.y[sel]


class DropoutNoise:
    """Uniform noise for every dropout layer of a step, shared by all models of a shard.

    Each step draws (max layers, batch, max width) uniforms from a CPU generator, whatever the
    models trained; a unit is kept where its uniform is >= the model's dropout rate.
    """

    def __init__(self, seed: int, n_layers: int, width: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.shape = (n_layers, width)

    def draw(self, batch: int, device):
        u = torch.rand(self.shape[0], batch, self.shape[1], generator=self.gen)
        return u.to(device, non_blocking=True)


class EpochLoss:
    """Training losses summed over an epoch's batches, row-weighted, per key (a model or a
    group of models): ``add`` stays on the device (no synchronisation per step), ``mean`` at
    the epoch's end."""

    def __init__(self):
        self.sums, self.rows = {}, {}

    def add(self, key, loss, rows: int) -> None:
        s = loss.detach().double() * rows
        self.sums[key] = self.sums[key] + s if key in self.sums else s
        self.rows[key] = self.rows.get(key, 0) + rows

    def keys(self):
        return self.sums.keys()

    def mean(self, key):
        """The epoch's mean loss of ``key`` (a numpy array of the loss's shape)."""
        return (self.sums[key] / self.rows[key]).cpu().numpy()


def quiet_lightning():
    """Silence Lightning's informational logs and warnings (one line per model otherwise)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*configure_optimizers.*")


def adam(params, optim: Mapping):
    """Adam, fused into one kernel per tensor (CPU and CUDA): element-wise, so K stacked models
    update exactly as K separate optimisers would."""
    return torch.optim.Adam(params, lr=optim["lr"], weight_decay=optim["weight_decay"], fused=True)


PRECISIONS = {"32": None, "bf16": "bfloat16"}


def mm_dtype(cfg: Mapping):
    """The torch dtype of the hidden layers' matrix products for ``trainer.precision``: None
    for ``32`` (the tensors' own dtype throughout), bfloat16 for ``bf16`` (bfloat16 operands
    and results, accumulated in float32 inside the product; weights, Adam, BatchNorm,
    activations and loss stay float32)."""
    precision = str(cfg["trainer"].get("precision", 32))
    if precision not in PRECISIONS:
        raise ValueError(
            f"trainer.precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
        )
    return PRECISIONS[precision] and getattr(torch, PRECISIONS[precision])


MATMUL_PRECISIONS = ("auto", "highest", "high", "medium")


@functools.cache
def float32_exact(precision: str, device: str) -> bool:
    """Whether float32 products under torch's matmul ``precision`` stay float32 on ``device``.

    A product with the identity returns its operand exactly only in float32: bfloat16 inside
    (oneDNN on CPUs with AMX) or TF32 (CUDA) round it. The shapes are those of a training step,
    large enough to reach the kernels training uses."""
    x = torch.randn(128, 512, generator=torch.Generator().manual_seed(0)).to(device)
    eye = torch.eye(512, device=device)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        return bool(torch.equal(x @ eye, x))
    finally:
        torch.set_float32_matmul_precision(before)


def resolve_matmul_precision(cfg: Mapping) -> str:
    """``trainer.matmul_precision`` of ``cfg``, with ``auto`` resolved on this machine:
    ``medium`` where it computes true float32 (oneDNN's float32 kernels on AVX-512 CPUs without
    AMX, faster than MKL's: ``benchmarks/README.md``), else ``highest``. The choice depends on
    the hardware only, never on timing, so a resumed shard trains exactly as before."""
    t = cfg["trainer"]
    value = str(t.get("matmul_precision", "highest"))
    if value not in MATMUL_PRECISIONS:
        raise ValueError(
            f"trainer.matmul_precision must be one of {list(MATMUL_PRECISIONS)}, got {value!r}"
        )
    if value != "auto":
        return value
    device = "cuda" if t.get("accelerator") == "gpu" else "cpu"
    return "medium" if float32_exact("medium", device) else "highest"


@contextmanager
def matmul_precision(cfg: Mapping):
    """torch's float32 matmul precision set to ``trainer.matmul_precision`` (default
    ``highest``; ``auto``: :func:`resolve_matmul_precision`) for the duration, then restored.
    ``medium`` lets oneDNN take float32 products on CPUs with AVX-512: bfloat16 inside where it
    has fast kernels for it (AMX), float32 kernels elsewhere; on CUDA, ``high`` and ``medium``
    allow TF32."""
    value = resolve_matmul_precision(cfg)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def make_trainer(cfg: Mapping, callbacks):
    """A quiet Lightning Trainer for ``cfg['trainer']`` (accelerator, max_epochs)."""
    import lightning as L

    t = cfg["trainer"]
    return L.Trainer(
        accelerator=t["accelerator"],
        devices=1,
        max_epochs=t["max_epochs"],
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic="warn",
    )


def fit(cfg: Mapping, module, callbacks, X_tr, y_tr, X_val, y_val, batch_seed: int) -> None:
    """Train ``module`` with one Lightning Trainer: shuffled batches of the training split, the
    whole validation split after each epoch."""
    t = cfg["trainer"]
    trainer = make_trainer(cfg, callbacks)
    with matmul_precision(cfg):
        trainer.fit(
            module,
            Batches(X_tr, y_tr, t["batch_size"], batch_seed),
            Batches(X_val, y_val, len(y_val), None),
        )
