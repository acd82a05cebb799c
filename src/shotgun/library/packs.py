"""Weight packs: the models of one shard in one safetensors file.

A pack holds each model's network tensors under ``<model id>/net.<name>`` and the cell's input
scaler once (``x_mean``, ``x_std``; a model whose scaler differs from the pack's keeps its own under
``<model id>/x_mean``). Floating-point network weights are stored in the library's weights dtype
(``WEIGHTS_DTYPE`` by default; a tensor that would overflow it stays float32), the scaler in
float32. A model is read alone (``safe_open`` reads the header and the tensors asked for) and is
checked against its own digest (:func:`tensors_digest`, kept in the library index), so loading a
model never reads its neighbours.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save_file

from .card import LibraryError, ModelCard

PACK_FORMAT = "shotgun-pack/1"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# float16 moved the predictions of trained models by at most 1.0e-3 of their spread (standard
# deviation over inputs) and their neural features by at most 8.6e-3 of theirs, at half the disk
# of float32; bfloat16 by 7.5e-3 and 5.7e-2 (benchmarks/weights_dtype.py, benchmarks/README.md).
WEIGHTS_DTYPE = "float16"
# What float16 weights promise, with a margin over those measurements: the largest change of a
# prediction, and of a neural feature, as a fraction of its spread under float32 weights.
PREDICTION_TOLERANCE = 2e-3
FEATURE_TOLERANCE = 2e-2

Tensors = Mapping[str, torch.Tensor]


def shard_tensors(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """The tensors of a shard's weights file (as training writes it), after checking the file
    against the checksum its card records."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise LibraryError(f"{path}: checksum differs from its card")
    return load(data)


def stored(t: torch.Tensor, dtype: str) -> torch.Tensor:
    """A network tensor as a pack stores it: floating point in ``dtype`` unless it would
    overflow there (float16 beyond +-65504), other tensors (BatchNorm's batch counter) as they
    are."""
    if not t.is_floating_point():
        return t.contiguous()
    a = t.detach().float()
    if dtype == "float32" or a.numel() == 0:
        return a.contiguous()
    n = a.numpy()
    if dtype == "float16" and max(-n.min(), n.max()) > torch.finfo(torch.float16).max:
        return a.contiguous()
    return t.to(DTYPES[dtype]).contiguous()


@contextmanager
def one_thread():
    """Torch on one thread: many small conversions are slower on several (and much slower
    when the cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tensors_digest(tensors: Tensors) -> str:
    """SHA-256 of a model's tensors as stored (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pack_name(cards: Sequence[ModelCard], dtype: str) -> str:
    """A pack's path in the library, named by its cell, index range and content (its models'
    ids and trained weights, the dtype): a build reuses a previous build's file of that name."""
    c = cards[0]
    key = [PACK_FORMAT, dtype, [(m.model_id, m.weights_sha256) for m in cards]]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    lo, hi = min(m.index for m in cards), max(m.index for m in cards)
    return f"weights/{c.dataset}/{c.property}/{c.descriptor['name']}/{lo}-{hi}-{digest}.safetensors"


def write_pack(
    path: Path, models: Sequence[tuple[str, Tensors]], scaler: Sequence[str], dtype: str
) -> dict[str, str]:
    """Write the models ``(model id, tensors under a shard file's names)`` into one pack;
    returns each model's :func:`tensors_digest`."""
    shared = {n: models[0][1][n].float().contiguous() for n in scaler}
    out, digests = dict(shared), {}
    with one_thread():
        for mid, tensors in models:
            own = {}
            for name, t in tensors.items():
                if name in shared:
                    own[name] = t.float().contiguous()
                    if not torch.equal(own[name], shared[name]):
                        out[f"{mid}/{name}"] = own[name]
                else:
                    own[name] = out[f"{mid}/{name}"] = stored(t, dtype)
            digests[mid] = tensors_digest(own)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"format": PACK_FORMAT})
    return digests


def read_tensor(path: Path, model_id: str, name: str) -> torch.Tensor | None:
    """One tensor of one model from a pack (None if the model has none of that name), read
    alone and not checked (the model's digest covers all its tensors: :func:`read_model`)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            key = f"{model_id}/{name}"
            return f.get_tensor(key) if key in f.keys() else None
    except (SafetensorError, OSError) as err:
        raise LibraryError(f"{path}: cannot read model {model_id}: {err}") from None


def read_model(path: Path, model_id: str, scaler: Sequence[str]) -> dict[str, torch.Tensor]:
    """One model's tensors from a pack, under a shard file's names, as stored; only its own
    tensors (and the shared scaler) are read."""
    prefix = f"{model_id}/"
    try:
        with safe_open(str(path), framework="pt") as f:
            names = f.keys()
            mine = [n for n in names if n.startswith(prefix)]
            if not mine:
                raise LibraryError(f"{path}: no tensors of model {model_id}")
            tensors = {n.removeprefix(prefix): f.get_tensor(n) for n in mine}
            for n in scaler:
                if n not in tensors:
                    tensors[n] = f.get_tensor(n)
    except (SafetensorError, OSError) as err:
        raise LibraryError(f"{path}: cannot read model {model_id}: {err}") from None
    return tensors
