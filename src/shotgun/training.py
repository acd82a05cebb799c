"""Train one shard: K architectures of one (dataset, property, descriptor) cell, in one process.

A shard job pays the imports of torch, Lightning and MLflow once for all its models. Every model
gets a deterministic identity (``model_id``) from its cell, architecture, training config, seed and
data, its own early stopping and its own best weights. Outputs per model: ``<id>.safetensors``
(network weights plus the input scaler) and ``<id>.json`` (the model card).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import __version__
from .models import architecture_name, build_network, sample_architecture, stable_seed

CARD_SCHEMA = 1
N_REFERENCE = 5  # test predictions stored in each card to check a loaded model
# Standardised inputs are clipped to +-INPUT_CLIP: a feature almost constant in training (say the
# minimum magnetic moment, zero for nearly all compounds) must not send unseen inputs to 1e4 sigma.
INPUT_CLIP = 10.0


def compose_train_config(config_dir: Path, overrides: Sequence[str] = ()) -> dict:
    """Compose the training config from the Hydra groups in ``config_dir``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


@dataclass
class Cell:
    """The training data of one (dataset, property, descriptor) cell."""

    dataset: str
    material_class: str
    property: str
    unit: str
    descriptor: dict  # descriptor spec: name, version, params
    inputs: np.ndarray
    X: np.ndarray
    y: np.ndarray
    n_unfeaturized: int

    @property
    def data_hash(self) -> str:
        h = hashlib.sha256()
        h.update("\n".join(self.inputs).encode())
        h.update(np.ascontiguousarray(self.y, dtype=np.float64).tobytes())
        h.update(json.dumps(self.descriptor, sort_keys=True).encode())
        return h.hexdigest()


def load_cell(prepared: Path, features: Path, dataset: str, material_class: str,
              prop: str, unit: str) -> Cell:
    """Join a prepared property table with its dataset's feature table."""
    from .featurize import read_features

    targets = pd.read_parquet(prepared)
    inputs, X, ok, spec = read_features(features)
    row = pd.Series(np.arange(len(inputs)), index=inputs)
    idx = row.reindex(targets["input"]).to_numpy()
    if np.isnan(idx).any():
        missing = targets["input"][np.isnan(idx)].iloc[0]
        raise ValueError(f"{features}: no features for input {missing!r} of {prepared}")
    idx = idx.astype(int)
    good = ok[idx]
    return Cell(dataset, material_class, prop, unit, spec,
                targets["input"].to_numpy()[good].astype(str), X[idx[good]],
                targets["target"].to_numpy(dtype=np.float64)[good], int((~good).sum()))


def split_indices(n: int, cfg: dict, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation/test indices; the same for every model of a cell."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(cfg["test_fraction"] * n)))
    n_val = max(1, int(round(cfg["val_fraction"] * (n - n_test))))
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    err = pred - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err ** 2).mean())),
        "r2": float(1.0 - (err ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
    }


class _Batches:
    """Shuffled mini-batches of in-memory tensors (cheaper than a DataLoader for tiny models)."""

    def __init__(self, X, y, batch_size: int, seed: int):
        import torch

        self.X, self.y, self.batch_size = X, y, batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self):
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        import torch

        perm = torch.randperm(len(self.y), generator=self.gen)
        for start in range(0, len(perm), self.batch_size):
            sel = perm[start:start + self.batch_size]
            if len(sel) > 1 or start == 0:  # BatchNorm needs two samples
                yield self.X[sel], self.y[sel]


def _fit(arch: dict, cfg: dict, X_tr, y_tr, X_val, y_val, seed: int):
    """Train one network with Lightning; returns the network holding its best weights."""
    import logging
    import warnings

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback, EarlyStopping

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    torch.manual_seed(seed)
    net = build_network(arch)
    optim = cfg["optim"]

    class Regressor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=optim["lr"],
                                    weight_decay=optim["weight_decay"])

    class KeepBest(Callback):
        best, state, epoch = float("inf"), None, -1

        def on_validation_epoch_end(self, trainer, module):
            loss = float(trainer.callback_metrics["val_loss"])
            if loss < self.best:
                self.best, self.epoch = loss, trainer.current_epoch
                self.state = copy.deepcopy(module.net.state_dict())

    t = cfg["trainer"]
    keep = KeepBest()
    trainer = L.Trainer(
        accelerator=t["accelerator"], devices=1, max_epochs=t["max_epochs"],
        callbacks=[EarlyStopping("val_loss", patience=t["patience"]), keep],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=True,
    )
    trainer.fit(Regressor(), _Batches(X_tr, y_tr, t["batch_size"], seed),
                _Batches(X_val, y_val, len(y_val), seed))
    net.load_state_dict(keep.state)
    net.eval()
    return net, {"best_val_mse": keep.best, "best_epoch": keep.epoch,
                 "epochs": trainer.current_epoch + 1}


def _standardizer(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = a.astype(np.float64)
    mean, std = a.mean(axis=0), a.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def model_id(cell: Cell, arch: dict, cfg: dict, index: int) -> str:
    """Deterministic identity of a model; the accelerator does not change it."""
    recipe = {k: v for k, v in cfg.items() if k != "trainer"}
    recipe["trainer"] = {k: v for k, v in cfg["trainer"].items() if k != "accelerator"}
    key = [cell.dataset, cell.property, cell.descriptor, arch, recipe, index, cell.data_hash]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def plan_shard(cell: Cell, cfg: dict, indices: Sequence[int]) -> list[tuple[int, dict, str]]:
    """(index, architecture, model id) for each model index of a shard."""
    space = cfg["model"]
    plan = []
    for i in indices:
        arch = sample_architecture(
            cell.X.shape[1], space,
            stable_seed(cfg["seed"], cell.dataset, cell.property, cell.descriptor["name"], i))
        plan.append((i, arch, model_id(cell, arch, cfg, i)))
    return plan


def train_shard(cell: Cell, cfg: dict, indices: Sequence[int], out_dir: Path,
                tracker=None, threads: int = 1) -> list[dict]:
    """Train the models ``indices`` of ``cell`` into ``out_dir``; returns their cards."""
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = stable_seed(cfg["seed"], cell.dataset, cell.property, "split")
    tr, val, te = split_indices(len(cell.y), cfg["trainer"], seed)
    x_mean, x_std = _standardizer(cell.X[tr])
    y_mean, y_std = float(cell.y[tr].mean()), float(cell.y[tr].std() or 1.0)
    device = "cuda" if cfg["trainer"]["accelerator"] == "gpu" else "cpu"

    def tensor(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    Xs = tensor(np.clip((cell.X - x_mean) / x_std, -INPUT_CLIP, INPUT_CLIP))
    ys = tensor((cell.y - y_mean) / y_std)
    cards = []
    for index, arch, mid in plan_shard(cell, cfg, indices):
        start = time.perf_counter()
        net, fit_stats = _fit(arch, cfg, Xs[tr], ys[tr], Xs[val], ys[val],
                              stable_seed(cfg["seed"], mid))
        net = net.to("cpu")
        with torch.no_grad():
            pred = net(Xs[te]).numpy().astype(np.float64) * y_std + y_mean
        metrics = {f"test_{k}": v for k, v in regression_metrics(cell.y[te], pred).items()}
        metrics.update(fit_stats)
        metrics["seconds"] = time.perf_counter() - start
        tensors = {f"net.{k}": v.contiguous() for k, v in net.state_dict().items()}
        tensors["x_mean"], tensors["x_std"] = tensor(x_mean), tensor(x_std)
        weights = out_dir / f"{mid}.safetensors"
        save_file(tensors, str(weights))
        card = {
            "card_schema": CARD_SCHEMA,
            "model_id": mid,
            "material_class": cell.material_class,
            "dataset": cell.dataset,
            "property": cell.property,
            "unit": cell.unit,
            "descriptor": cell.descriptor,
            "architecture": arch,
            "architecture_name": architecture_name(arch),
            "index": int(index),
            "target_scaler": {"mean": y_mean, "std": y_std},
            "input_scaler": {"tensors": ["x_mean", "x_std"], "clip": INPUT_CLIP},
            "metrics": metrics,
            "n_train": len(tr), "n_val": len(val), "n_test": len(te),
            "n_unfeaturized": cell.n_unfeaturized,
            "data_hash": cell.data_hash,
            "train_config": cfg,
            "reference": {"inputs": cell.inputs[te[:N_REFERENCE]].tolist(),
                          "predictions": pred[:N_REFERENCE].tolist()},
            "weights": weights.name,
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "shotgun_version": __version__,
            "device": device,
        }
        if tracker is not None:
            card["mlflow_run_id"] = tracker.log_model(card, weights)
        (out_dir / f"{mid}.json").write_text(json.dumps(card, indent=1, sort_keys=True))
        cards.append(card)
    return cards
