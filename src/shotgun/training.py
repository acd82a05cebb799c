"""Train one shard: K architectures of one (dataset, property, descriptor) cell, in one process.

A shard job pays the imports of torch, Lightning and MLflow once for all its models, and trains
them together as batched ensembles (:mod:`shotgun.ensemble`). Every model gets a deterministic
identity (``model_id``) from its cell, architecture, training config, seed and data (not from its
shard), its own early stopping and its own best weights. Outputs per model: ``<id>.safetensors``
(network weights plus the input scaler) and ``<id>.json`` (the model card).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


def _standardizer(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = a.astype(np.float64)
    mean, std = a.mean(axis=0), a.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


# Trainer keys that change where or how models are computed, not what they are.
EXECUTION_KEYS = ("accelerator", "ensemble_size", "group_size", "matmul_precision")


def model_id(cell: Cell, arch: dict, cfg: dict, index: int) -> str:
    """Deterministic identity of a model; the accelerator, the float32 matmul precision, the
    shard a model is in and the models it is trained with do not change it."""
    recipe = {k: v for k, v in cfg.items() if k != "trainer"}
    recipe["trainer"] = {k: v for k, v in cfg["trainer"].items() if k not in EXECUTION_KEYS
                         and (k, str(v)) != ("precision", "32")}  # float32: ids as before
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


def finished_card(out_dir: Path, mid: str) -> dict | None:
    """The card of model ``mid`` if its card and weights are complete and agree, else None."""
    card_path, weights = out_dir / f"{mid}.json", out_dir / f"{mid}.safetensors"
    if not (card_path.is_file() and weights.is_file()):
        return None
    try:
        card = json.loads(card_path.read_text())
    except ValueError:
        return None
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return card if card.get("model_id") == mid and card.get("weights_sha256") == digest else None


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete model files of ``out_dir`` that the shard's plan no longer contains."""
    for path in list(out_dir.glob("*.json")) + list(out_dir.glob("*.safetensors")):
        if path.stem not in keep and len(path.stem) == 16:
            path.unlink()


def _chunks(items: list, size: int):
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + size]


def train_shard(cell: Cell, cfg: dict, indices: Sequence[int], out_dir: Path,
                tracker=None, threads: int = 1, log=print) -> list[dict]:
    """Train the models ``indices`` of ``cell`` into ``out_dir``; returns their cards.

    Models whose card and weights are already in ``out_dir`` (a shard interrupted earlier) are
    kept; the others train together, ``trainer.ensemble_size`` at a time, as one batched
    ensemble (:mod:`shotgun.ensemble`). A card is written after its weights, so a card whose
    weights checksum verifies marks a finished model.

    The chunks are cut from the whole plan, not from the unfinished models: a resumed shard
    trains every model in the same company as an uninterrupted one (float32 results depend on
    the stacked groups), so it gives bit-identical weights. A chunk interrupted between its
    cards is trained again whole; its finished models keep their files.
    """
    import lightning  # noqa: F401  (imported before the per-model timing starts)
    import torch
    from safetensors.torch import save_file

    from .ensemble import fit_ensemble, noise_shape

    torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_shard(cell, cfg, indices)
    _remove_stale(out_dir, {mid for _, _, mid in plan})
    cards = {mid: finished_card(out_dir, mid) for _, _, mid in plan}
    todo = [p for p in plan if cards[p[2]] is None]
    if len(todo) < len(plan):
        log(f"{out_dir}: {len(plan) - len(todo)} of {len(plan)} models already trained")
    t = cfg["trainer"]
    seed = stable_seed(cfg["seed"], cell.dataset, cell.property, "split")
    tr, val, te = split_indices(len(cell.y), t, seed)
    x_mean, x_std = _standardizer(cell.X[tr])
    y_mean, y_std = float(cell.y[tr].mean()), float(cell.y[tr].std() or 1.0)
    device = "cuda" if t["accelerator"] == "gpu" else "cpu"

    def tensor(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    Xs = tensor(np.clip((cell.X - x_mean) / x_std, -INPUT_CLIP, INPUT_CLIP))
    ys = tensor((cell.y - y_mean) / y_std)
    on_device = [v.to(device) for v in (Xs[tr], ys[tr], Xs[val], ys[val])]
    # One batch order and one dropout noise per cell: shared by every model of every shard.
    cell_key = (cfg["seed"], cell.dataset, cell.property, cell.descriptor["name"])
    seeds = {"batch_seed": stable_seed(*cell_key, "batches"),
             "noise_seed": stable_seed(*cell_key, "dropout"),
             "noise_shape": noise_shape(cell.X.shape[1], cfg["model"])}
    for chunk in _chunks(plan, int(t.get("ensemble_size") or 1)):
        if all(cards[mid] is not None for _, _, mid in chunk):
            continue
        start = time.perf_counter()
        fitted = fit_ensemble([arch for _, arch, _ in chunk],
                              [stable_seed(cfg["seed"], mid) for _, _, mid in chunk], cfg,
                              *on_device, **seeds)
        seconds = (time.perf_counter() - start) / len(chunk)
        for (index, arch, mid), (state, fit_stats) in zip(chunk, fitted):
            if cards[mid] is not None:  # finished before an interruption
                continue
            net = build_network(arch)
            net.load_state_dict(state)
            net.eval()
            with torch.no_grad():
                pred = net(Xs[te]).numpy().astype(np.float64) * y_std + y_mean
            metrics = {f"test_{k}": v for k, v in regression_metrics(cell.y[te], pred).items()}
            metrics.update(fit_stats)
            metrics["seconds"] = seconds
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
                card["mlflow_run_id"] = tracker.log_run(card, weights)
            (out_dir / f"{mid}.json").write_text(json.dumps(card, indent=1, sort_keys=True))
            cards[mid] = card
    return [cards[mid] for _, _, mid in plan]
