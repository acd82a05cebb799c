"""Fine-tuning of a pretrained library network on a small target of another property.

A copy of the network gets a fresh linear output unit; all but its last ``unfreeze`` hidden
layers are frozen (weights fixed, dropout off, BatchNorm on its stored statistics), and the rest
is trained with Adam on the standardised target. Training folds of at least ``MIN_VAL_ROWS`` rows
hold out a seeded ``VAL_FRACTION`` for early stopping and the best weights are kept; smaller folds
train for a fixed number of epochs. Inputs are descriptor matrices in the model's own descriptor
space, scaled and clipped exactly as :meth:`shotgun.library.Predictor.scaled` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch

from ..nn.mlp import MLP, apply_block
from ..nn.trainer import Batches, adam, make_trainer, quiet_lightning

VAL_FRACTION = 0.2
MIN_VAL_ROWS = 20  # training folds smaller than this train for a fixed number of epochs
FULL_BATCH, MAX_STEPS = 128, 8  # default batches: see _batch_size


class FineTuned:
    """A fine-tuned network with the target's scaler; call it (or ``predict_descriptors``) on a
    descriptor matrix for predictions in the target's unit."""

    def __init__(self, model, net, y_mean: float, y_std: float, stats: dict):
        self.model, self.net, self.y_mean, self.y_std, self.stats = model, net, y_mean, y_std, stats

    def predict_descriptors(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.net(self.model.scaled(np.asarray(X, dtype=np.float64)))
        return out.numpy().astype(np.float64) * self.y_std + self.y_mean

    __call__ = predict_descriptors


class Tail(torch.nn.Module):
    """The trainable end of a network: its last hidden blocks and the output unit, applied to
    the activations of the last frozen block (shares the network's parameters)."""

    def __init__(self, blocks, output):
        super().__init__()
        self.blocks, self.output = torch.nn.ModuleList(blocks), output

    def forward(self, h):
        for block in self.blocks:
            h = apply_block(block, h)
        return self.output(h).squeeze(-1)


class FineTuneModule(L.LightningModule):
    """Trains a :class:`Tail` on the standardised target; early stopping on ``X_val`` (if any)
    keeps the best weights in ``best_state``."""

    def __init__(self, tail, X_val, y_val, lr, weight_decay, patience):
        super().__init__()
        self.tail = tail
        self.X_val, self.y_val = X_val, y_val
        self.lr, self.weight_decay, self.patience = lr, weight_decay, patience
        self.best, self.best_epoch, self.wait, self.epochs = np.inf, -1, 0, 0
        self.best_state = None
        self.automatic_optimization = False  # plain steps: less per-step overhead

    def configure_optimizers(self):
        return adam(self.tail.parameters(), {"lr": self.lr, "weight_decay": self.weight_decay})

    def training_step(self, batch, _):
        h, y = batch
        loss = ((self.tail(h) - y) ** 2).mean()
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()

    def on_train_epoch_end(self):
        self.epochs = self.current_epoch + 1
        if self.X_val is None:
            return
        self.tail.eval()
        with torch.no_grad():
            loss = float(((self.tail(self.X_val) - self.y_val) ** 2).mean())
        self.tail.train()
        if loss < self.best:
            self.best, self.best_epoch, self.wait = loss, self.current_epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.tail.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.trainer.should_stop = True


def _batch_size(n: int, batch_size: int | None) -> int:
    """Full batch up to ``FULL_BATCH`` rows, else at most ``MAX_STEPS`` steps per epoch
    (Lightning's per-step overhead dominates steps on networks this small)."""
    if batch_size is None:
        batch_size = max(FULL_BATCH, -(-n // MAX_STEPS))
    return max(1, min(int(batch_size), n))


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(fit rows, validation rows or None) of a training fold of ``n`` rows."""
    if n < MIN_VAL_ROWS:
        return np.arange(n), None
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(VAL_FRACTION * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _check(model, X: np.ndarray, y: np.ndarray, unfreeze: int, epochs: int) -> None:
    n_hidden = model.n_hidden
    if not 0 <= unfreeze <= n_hidden:
        raise ValueError(f"unfreeze must be in 0..{n_hidden}, got {unfreeze}")
    if X.ndim != 2 or X.shape[0] != len(y) or X.shape[1] != len(model.x_mean):
        raise ValueError(
            f"X must be (n, {len(model.x_mean)}) with n = len(y) = {len(y)}, got {X.shape}"
        )
    if len(y) < 2:
        raise ValueError(f"fine-tuning needs at least 2 rows, got {len(y)}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ValueError("X and y must be finite")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")


def _split_network(model, X: np.ndarray, n_frozen: int):
    """(a copy of the network with a fresh output unit, its trainable :class:`Tail`, the frozen
    layers' activations of ``X``); draws the new unit's weights from torch's global RNG."""
    net = MLP(model.card.architecture)
    net.load_state_dict(model.net.state_dict())  # copies: the source stays untouched
    net.output = torch.nn.Linear(net.output.in_features, 1)  # fresh head, seeded
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    h = model.scaled(X)  # the frozen layers' activations, once
    with torch.no_grad():
        for block in list(net.blocks)[:n_frozen]:
            h = apply_block(block, h)
    tail = Tail(list(net.blocks)[n_frozen:], net.output)
    for p in tail.parameters():
        p.requires_grad_(True)
    return net, tail, h


def fine_tune(
    model,
    X: np.ndarray,
    y: np.ndarray,
    seed: int = 0,
    unfreeze: int = 1,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int | None = None,
    patience: int = 20,
    threads: int | None = 1,
) -> FineTuned:
    """Fine-tune a copy of ``model.net`` (a :class:`shotgun.library.Predictor`) on descriptor
    rows ``X`` and targets ``y``; the model itself is left unchanged.

    The last ``unfreeze`` hidden layers (0 to all) train with the fresh output unit. The frozen
    layers' activations are computed once, so a step costs only the trainable layers. Results
    depend only on the inputs and ``seed``; the global torch RNG is left as it was. ``threads``
    sets torch's thread count during the fit (restored after; None keeps it): these networks are
    too small to gain from more threads, and lose a lot on a busy machine. ``stats`` of the
    result: epochs run, best epoch, its validation MSE (standardised target; None without a
    validation part), rows fitted and the validation rows (indices into ``X``).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    _check(model, X, y, unfreeze, epochs)
    n_hidden = model.n_hidden
    quiet_lightning()
    y_mean, y_std = float(y.mean()), float(y.std())
    y_std = y_std if y_std > 1e-12 else 1.0
    t = torch.as_tensor(((y - y_mean) / y_std).astype(np.float32))
    fit, val = _split(len(y), seed)
    n_frozen = n_hidden - unfreeze
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net, tail, h = _split_network(model, X, n_frozen)
            module = FineTuneModule(
                tail,
                *((h[val], t[val]) if val is not None else (None, None)),
                lr,
                weight_decay,
                patience,
            )
            trainer = make_trainer(
                {"trainer": {"accelerator": "cpu", "max_epochs": int(epochs)}}, []
            )
            trainer.fit(module, Batches(h[fit], t[fit], _batch_size(len(fit), batch_size), seed))
    finally:
        torch.set_num_threads(previous_threads)
    if module.best_state is not None:
        tail.load_state_dict(module.best_state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    stats = {
        "epochs": int(module.epochs),
        "best_epoch": int(module.best_epoch),
        "best_val_mse": float(module.best) if val is not None else None,
        "n_fit": int(len(fit)),
        "val_rows": val,
        "unfreeze": int(unfreeze),
    }
    return FineTuned(model, net, y_mean, y_std, stats)


def fine_tune_cv(
    model,
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    seed: int = 0,
    unfreeze: int = 1,
    epochs: int = 200,
    **kw,
) -> list[np.ndarray]:
    """For each (train, test) split: fine-tune a copy of ``model.net`` on X[train], y[train] and
    return its predictions for X[test] (in y's unit), one array per split."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return [
        fine_tune(model, X[train], y[train], seed=seed, unfreeze=unfreeze, epochs=epochs, **kw)(
            X[test]
        )
        for train, test in splits
    ]


def fine_tune_top(screen, models, target, n: int, seed: int) -> list[dict]:
    """Fine-tune the ``n`` best distinct source networks of ``screen`` on its folds: one row
    ``{"model_id", "cv_mae", "cv_rmse", "cv_r2"}`` per network."""
    from .candidates import spec_key
    from .selection import cv_metrics

    if n <= 0:
        return []
    plan = screen.plan
    splits = [plan.pairs[p] for p in plan.tasks[0].inner]
    rows = np.concatenate([te for _, te in splits])
    out = []
    for i in screen.chosen(0, n):
        mid = screen.pipes[i]["model_id"]
        m = models[mid]
        preds = fine_tune_cv(
            m, target.raw[spec_key(m.card.descriptor)], target.y, splits, seed=seed
        )
        out.append({"model_id": mid, **cv_metrics(target.y, rows, np.concatenate(preds))})
    return out
