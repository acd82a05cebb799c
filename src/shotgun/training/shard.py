"""Train one shard: K architectures of one (dataset, property, descriptor) cell, in one process.

A shard job pays the imports of torch, Lightning and MLflow once for all its models, and trains
them together as batched ensembles (:mod:`shotgun.nn.ensemble`). Every model gets a deterministic
identity (:func:`shotgun.training.config.model_id`) from its cell, architecture, training config,
seed and data (not from its shard), its own early stopping and its own best weights. Outputs per
model: ``<id>.safetensors`` (network weights, the input scaler and the sorted hashes of the
training and validation inputs, for the leakage guard) and ``<id>.json`` (the model
card, :class:`shotgun.library.card.ModelCard`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.inputs import input_hashes
from ..library.card import (
    CARD_SCHEMA,
    CardError,
    InputScaler,
    Metrics,
    ModelCard,
    Reference,
    TargetScaler,
)
from ..metrics import regression_metrics
from ..nn.architecture import architecture_name, noise_shape, sample_architecture, stable_seed
from .cell import INPUT_CLIP, Cell, split_indices, standardizer
from .config import model_id

N_REFERENCE = 5  # test predictions stored in each card to check a loaded model


def plan_shard(cell: Cell, cfg: dict, indices: Sequence[int]) -> list[tuple[int, dict, str]]:
    """(index, architecture, model id) for each model index of a shard."""
    space = cfg["model"]
    plan = []
    for i in indices:
        arch = sample_architecture(
            cell.X.shape[1],
            space,
            stable_seed(cfg["seed"], cell.dataset, cell.property, cell.descriptor["name"], i),
        )
        plan.append((i, arch, model_id(cell, arch, cfg, i)))
    return plan


def finished_card(out_dir: Path, mid: str) -> ModelCard | None:
    """The card of model ``mid`` if its card and weights are complete and agree (or its card
    records that it failed to train), else None."""
    card_path, weights = out_dir / f"{mid}.json", out_dir / f"{mid}.safetensors"
    if not card_path.is_file():
        return None
    try:
        card = ModelCard.read(card_path)
    except CardError:  # a card cut short by a kill
        return None
    if card.model_id != mid:
        return None
    if card.failure is not None:
        return card
    if not weights.is_file():
        return None
    return card if card.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest() else None


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete model files of ``out_dir`` that the shard's plan no longer contains."""
    for path in list(out_dir.glob("*.json")) + list(out_dir.glob("*.safetensors")):
        if path.stem not in keep and len(path.stem) == 16:
            path.unlink()


def _chunks(items: list, size: int):
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


@dataclass
class _Data:
    """A cell's splits, scalers and scaled tensors, shared by every model of the shard."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    X: Any  # scaled and clipped inputs (CPU tensor)
    on_device: list  # X_train, y_train, X_val, y_val on the training device
    device: str
    train_inputs: np.ndarray  # sorted hashes of the training and validation inputs


def _tensor(a):
    import torch

    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _prepare(cell: Cell, cfg: dict) -> _Data:
    t = cfg["trainer"]
    seed = stable_seed(cfg["seed"], cell.dataset, cell.property, "split")
    tr, val, te = split_indices(len(cell.y), t, seed)
    x_mean, x_std = standardizer(cell.X[tr])
    y_mean, y_std = float(cell.y[tr].mean()), float(cell.y[tr].std() or 1.0)
    device = "cuda" if t["accelerator"] == "gpu" else "cpu"
    Xs = _tensor(np.clip((cell.X - x_mean) / x_std, -INPUT_CLIP, INPUT_CLIP))
    ys = _tensor((cell.y - y_mean) / y_std)
    on_device = [v.to(device) for v in (Xs[tr], ys[tr], Xs[val], ys[val])]
    seen = np.unique(input_hashes(cell.inputs[np.concatenate([tr, val])]))
    return _Data(tr, val, te, x_mean, x_std, y_mean, y_std, Xs, on_device, device, seen)


def _failure(fit_stats: dict) -> str:
    """Why a model recorded no best state."""
    if fit_stats["epochs"] == 0:
        return "no validation epoch ran"
    return f"validation loss never finite in {fit_stats['epochs']} epochs (training diverged)"


def _save_model(
    out_dir: Path,
    cell: Cell,
    cfg: dict,
    index: int,
    arch: dict,
    mid: str,
    fitted,
    seconds: float,
    data: _Data,
    tracker,
) -> ModelCard:
    """Write a trained model's weights, then its card (the card marks it finished). A model
    that recorded no best state gets a card that says why, and no weights. ``fitted`` is its
    :class:`shotgun.nn.Fitted`; the tracker logs its history too."""
    state, fit_stats = fitted.state, fitted.stats
    common = dict(
        card_schema=CARD_SCHEMA,
        model_id=mid,
        material_class=cell.material_class,
        dataset=cell.dataset,
        property=cell.property,
        unit=cell.unit,
        descriptor=cell.descriptor,
        architecture=arch,
        architecture_name=architecture_name(arch),
        index=int(index),
        target_scaler=TargetScaler(data.y_mean, data.y_std),
        input_scaler=InputScaler(["x_mean", "x_std"], INPUT_CLIP),
        n_train=len(data.train),
        n_val=len(data.val),
        n_test=len(data.test),
        n_unfeaturized=cell.n_unfeaturized,
        data_hash=cell.data_hash,
        train_config=cfg,
        shotgun_version=__version__,
        device=data.device,
    )
    if state is None:
        weights = None
        stats = dict(fit_stats, best_val_mse=None)
        card = ModelCard(
            **common,
            metrics=Metrics(None, None, None, seconds=seconds, **stats),
            reference=None,
            weights=None,
            weights_sha256=None,
            failure=_failure(fit_stats),
        )
    else:
        weights, pred = _write_weights(out_dir / f"{mid}.safetensors", arch, state, data)
        test = regression_metrics(cell.y[data.test], pred)
        reference = data.test[:N_REFERENCE]
        card = ModelCard(
            **common,
            metrics=Metrics(test["mae"], test["rmse"], test["r2"], seconds=seconds, **fit_stats),
            reference=Reference(cell.inputs[reference].tolist(), pred[:N_REFERENCE].tolist()),
            weights=weights.name,
            weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
        )
    if tracker is not None:
        card = card.replace(mlflow_run_id=tracker.log_run(card, weights, fitted.history))
    (out_dir / f"{mid}.json").write_text(card.to_json())
    return card


def _write_weights(path: Path, arch: dict, state: dict, data: _Data):
    """Save the network and the input scaler as safetensors; (path, test predictions in the
    property's unit)."""
    import torch
    from safetensors.torch import save_file

    from ..nn.mlp import MLP

    net = MLP(arch)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        pred = net(data.X[data.test]).numpy().astype(np.float64) * data.y_std + data.y_mean
    tensors = {f"net.{k}": v.contiguous() for k, v in net.state_dict().items()}
    tensors["x_mean"], tensors["x_std"] = _tensor(data.x_mean), _tensor(data.x_std)
    tensors["train_inputs"] = torch.from_numpy(data.train_inputs)  # the leakage guard's
    save_file(tensors, str(path))
    return path, pred


def train_shard(
    cell: Cell,
    cfg: dict,
    indices: Sequence[int],
    out_dir: Path,
    tracker=None,
    threads: int = 1,
    log=print,
) -> list[ModelCard]:
    """Train the models ``indices`` of ``cell`` into ``out_dir``; returns their cards.

    Models whose card and weights are already in ``out_dir`` (a shard interrupted earlier) are
    kept; the others train together, ``trainer.ensemble_size`` at a time, as one batched
    ensemble (:mod:`shotgun.nn.ensemble`). A card is written after its weights, so a card whose
    weights checksum verifies marks a finished model. A model that fails to train (no finite
    validation loss) is a recorded outcome, not an error: its card says why (``failure``).

    The chunks are cut from the whole plan, not from the unfinished models: a resumed shard
    trains every model in the same company as an uninterrupted one (float32 results depend on
    the stacked groups), so it gives bit-identical weights. A chunk interrupted between its
    cards is trained again whole; its finished models keep their files.
    """
    import lightning  # noqa: F401  (imported before the per-model timing starts)
    import torch

    from ..nn.ensemble import fit_ensemble
    from ..nn.trainer import resolve_matmul_precision

    torch.set_num_threads(threads)
    # `auto` resolved once, here, so that the cards record what the models were trained with.
    cfg = {**cfg, "trainer": {**cfg["trainer"], "matmul_precision": resolve_matmul_precision(cfg)}}
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_shard(cell, cfg, indices)
    _remove_stale(out_dir, {mid for _, _, mid in plan})
    cards = {mid: finished_card(out_dir, mid) for _, _, mid in plan}
    todo = [p for p in plan if cards[p[2]] is None]
    if len(todo) < len(plan):
        log(f"{out_dir}: {len(plan) - len(todo)} of {len(plan)} models already trained")
    data = _prepare(cell, cfg)
    # One batch order and one dropout noise per cell: shared by every model of every shard.
    cell_key = (cfg["seed"], cell.dataset, cell.property, cell.descriptor["name"])
    seeds = {
        "batch_seed": stable_seed(*cell_key, "batches"),
        "noise_seed": stable_seed(*cell_key, "dropout"),
        "noise_shape": noise_shape(cell.X.shape[1], cfg["model"]),
    }
    for chunk in _chunks(plan, int(cfg["trainer"].get("ensemble_size") or 1)):
        if all(cards[mid] is not None for _, _, mid in chunk):
            continue
        start = time.perf_counter()
        fitted = fit_ensemble(
            [arch for _, arch, _ in chunk],
            [stable_seed(cfg["seed"], mid) for _, _, mid in chunk],
            cfg,
            *data.on_device,
            **seeds,
        )
        seconds = (time.perf_counter() - start) / len(chunk)
        for (index, arch, mid), fit in zip(chunk, fitted):
            if cards[mid] is None:  # else finished before an interruption
                cards[mid] = _save_model(
                    out_dir, cell, cfg, index, arch, mid, fit, seconds, data, tracker
                )
    return [cards[mid] for _, _, mid in plan]
