"""Library operations at scale, on a synthetic library of N models.

The models are written as shard folders exactly as training writes them (``<id>.safetensors``:
network weights and the cell's input scaler; ``<id>.json``: the model card), from the grid of a
workflow config (default ``config/standard.yaml``): its cells, each cell's descriptor and input
width, its composed training config, and architectures and model ids from the training package's
own planning (``plan_shard``), with N models spread evenly over the cells. The weights are random
and the metrics made up: every card says so (``device`` and ``train_config.synthetic``), and such
a library is fit for measuring storage, index and loading costs, not for transfer.

Stages, each timed in a fresh process (wall and CPU time, peak RSS of that process):

1. ``build``: ``build_library`` from all shards into a new library; with ``--batch B``, from the
   first B models, then ``batch_2``, ``batch_3``, ...: B more models each (new shards of the same
   cells), built incrementally. After each build the weights files of its shards are deleted
   (their cards stay, and an incremental build reads only the cards of shards already built): the
   float32 shards of 100,000 models (49 GB) do not fit beside the library on a small disk;
2. ``incremental``: ``--add`` more models (new shards of existing cells) and build again;
3. ``open_query``: ``Library.open`` plus a query;
4. ``verify``: every checksum of the manifest;
5. ``pack``: ``pack`` of the best 1 % by test R2 (models spread over the whole library);
6. ``load``: ``Library.open`` and ``load`` of one model.

Prints JSON (the last line) with the stages, the disk use and file count of shards and library,
and the 1-minute load average at the end. Peak RSS includes the imports (pandas, torch: about
0.4 GB).

    python benchmarks/library_scale.py --models 10000 --scratch /tmp/shotgun_scale
    python benchmarks/library_scale.py --models 100000 --batch 50000 --keep
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = "synthetic: random weights and metrics (benchmarks/library_scale.py)"


def grid_cells(config_path: Path, n_models: int) -> list[dict]:
    """The config's cells with their descriptor spec, input width, training config and
    declared unit; ``n_models`` spread evenly over them."""
    from shotgun.descriptors import get_descriptor
    from shotgun.training import compose_train_config, load_config, resolve_sources
    from shotgun.training.grid import read_datasets

    config = load_config(config_path)
    sources = resolve_sources(config, ROOT / "config" / "datasets")
    datasets = read_datasets(ROOT / "config" / "datasets", list(sources))
    base = [f"trainer={config['accelerator']}", f"seed={config['seed']}"]
    base += list(config.get("train_overrides", []))
    cfgs, descs, cells = {}, {}, []
    for name, src in sources.items():
        for prop in src["properties"]:
            for desc in src["descriptors"]:
                if desc not in cfgs:
                    extra = config.get("descriptor_overrides", {}).get(desc, [])
                    cfgs[desc] = compose_train_config(ROOT / "config" / "train", base + extra)
                    descs[desc] = get_descriptor(desc)
                decl = datasets[name]
                cells.append(
                    {
                        "dataset": name,
                        "material_class": decl.material_class,
                        "property": prop,
                        "unit": decl.properties[prop].unit,
                        "descriptor": descs[desc].spec(),
                        "n_in": descs[desc].n_features,
                        "cfg": cfgs[desc],
                    }
                )
    for i, cell in enumerate(cells):
        cell["n"] = n_models // len(cells) + (i < n_models % len(cells))
    return cells


def synthetic_tensor(name: str, like, rng: np.random.Generator):
    """A random tensor of the shape and kind of ``like`` that a trained network could hold:
    normalisation scales and running variances positive (about 1), the rest small."""
    import torch

    if not like.is_floating_point():
        return torch.zeros((), dtype=like.dtype)
    shape = tuple(like.shape)
    if name.endswith(("norm.weight", "running_var")):
        values = rng.uniform(0.5, 2.0, shape)
    else:
        values = rng.normal(0, 0.05, shape)
    return torch.from_numpy(values.astype(np.float32))


def write_shard(cell: dict, indices: range, folder: Path, rng: np.random.Generator) -> int:
    """One shard folder of synthetic models, as ``train_shard`` writes it; returns its bytes."""
    import hashlib

    import torch
    from safetensors.torch import save_file

    from shotgun import __version__
    from shotgun.library.card import (
        CARD_SCHEMA,
        InputScaler,
        Metrics,
        ModelCard,
        Reference,
        TargetScaler,
    )
    from shotgun.nn.architecture import architecture_name, stable_seed
    from shotgun.nn.mlp import MLP
    from shotgun.training import Cell, plan_shard

    inputs = np.array([f"synthetic {cell['dataset']} {cell['property']}"])
    plan_cell = Cell(
        cell["dataset"],
        cell["material_class"],
        cell["property"],
        cell["unit"],
        cell["descriptor"],
        inputs,
        np.empty((1, cell["n_in"]), dtype=np.float32),
        np.zeros(1),
        0,
    )
    cfg = {**cell["cfg"], "synthetic": SYNTHETIC}
    # One input scaler per cell (the training split's), as in every shard of a real cell.
    scaler_rng = np.random.default_rng(stable_seed(cell["dataset"], cell["property"]))
    x_mean = torch.from_numpy(scaler_rng.normal(size=cell["n_in"]).astype(np.float32))
    x_std = torch.from_numpy(scaler_rng.uniform(0.5, 2.0, cell["n_in"]).astype(np.float32))
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for index, arch, mid in plan_shard(plan_cell, cfg, indices):
        with torch.device("meta"):
            shapes = MLP(arch).state_dict()
        tensors = {f"net.{k}": synthetic_tensor(k, v, rng) for k, v in shapes.items()}
        tensors["x_mean"], tensors["x_std"] = x_mean, x_std
        path = folder / f"{mid}.safetensors"
        save_file(tensors, str(path))
        r2 = float(rng.uniform(-0.1, 0.95))
        card = ModelCard(
            card_schema=CARD_SCHEMA,
            model_id=mid,
            material_class=cell["material_class"],
            dataset=cell["dataset"],
            property=cell["property"],
            unit=cell["unit"],
            descriptor=cell["descriptor"],
            architecture=arch,
            architecture_name=architecture_name(arch),
            index=index,
            target_scaler=TargetScaler(0.0, 1.0),
            input_scaler=InputScaler(["x_mean", "x_std"], 10.0),
            metrics=Metrics(1 - r2, 1 - r2, r2, 0.5, 10, 20, 0.0),
            n_train=700,
            n_val=100,
            n_test=200,
            n_unfeaturized=0,
            data_hash=plan_cell.data_hash,
            train_config=cfg,
            reference=Reference([], []),
            weights=path.name,
            weights_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            shotgun_version=__version__,
            device=SYNTHETIC,
        )
        (folder / f"{mid}.json").write_text(card.to_json())
        total += path.stat().st_size + (folder / f"{mid}.json").stat().st_size
    return total


def write_shards(
    cells: list[dict], shard_size: int, models: Path, start: dict, seed: int = 0
) -> list[Path]:
    """Shard folders of the cells' models from index ``start[cell]`` on (``cell['n']`` each)."""
    rng = np.random.default_rng(seed)
    folders = []
    for i, cell in enumerate(cells):
        lo = start.get(i, 0)
        for first in range(lo, lo + cell["n"], shard_size):
            last = min(first + shard_size, lo + cell["n"]) - 1
            folder = models / cell["dataset"] / cell["property"]
            folder = folder / cell["descriptor"]["name"] / f"{first}-{last}"
            write_shard(cell, range(first, last + 1), folder, rng)
            folders.append(folder)
    return folders


def disk(path: Path) -> dict:
    """Bytes on disk (each hard-linked file once) and file count under ``path``."""
    seen, size, files = set(), 0, 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            files += 1
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                size += st.st_blocks * 512
    return {"mb": round(size / 2**20, 1), "files": files}


def _stage(name: str, args: dict, queue) -> None:
    """Run one stage and report (wall s, CPU s, peak RSS MB, result) on ``queue``."""
    import shotgun.library.predictor  # noqa: F401  (torch and the descriptors: imported untimed)
    from shotgun.library import Library, build_library, pack

    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = None
    if name in ("build", "incremental"):
        manifest = build_library([Path(p) for p in args["shards"]], Path(args["lib"]), name)
        result = {"n_models": manifest["n_models"]}
    elif name == "open_query":
        lib = Library.open(args["lib"])
        result = {"rows": len(lib.query(kind="molecule", min_r2=0.5, top=10))}
    elif name == "verify":
        problems = Library.open(args["lib"]).verify()
        assert not problems, problems[:3]
    elif name == "pack":
        lib = Library.open(args["lib"])
        result = {"n_models": pack(lib, Path(args["archive"]), top=max(1, len(lib.index) // 100))}
        result |= {"archive_mb": round(Path(args["archive"]).stat().st_size / 2**20, 1)}
    elif name == "load":
        lib = Library.open(args["lib"])
        opened = time.perf_counter()
        lib.load(lib.index["model_id"].iloc[len(lib.index) // 2])
        result = {
            "open_s": round(opened - start, 3),
            "load_s": round(time.perf_counter() - opened, 3),
        }
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    queue.put(
        {
            "seconds": round(seconds, 2),
            "cpu_s": round(cpu, 2),
            "peak_rss_mb": round(after.ru_maxrss / 1024),
            **(result or {}),
        }
    )


def stage(name: str, **args) -> dict:
    """One stage in a fresh process (its imports outside the timing, its memory its own)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_stage, args=(name, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    if proc.exitcode:
        sys.exit(f"stage {name} failed")
    print(f"{name}: {out}", file=sys.stderr)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=10_000)
    p.add_argument("--add", type=int, default=1_000, help="models added for the incremental build")
    p.add_argument("--config", default=str(ROOT / "config" / "standard.yaml"))
    p.add_argument("--scratch", default="/tmp/shotgun_scale")
    p.add_argument("--batch", type=int, help="write and build in batches of B models")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    a = p.parse_args()
    from shotgun.library import Library
    from shotgun.training import load_config

    scratch = Path(a.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    models, lib = scratch / "models", scratch / "library"
    shard_size = int(load_config(a.config)["shard_size"])
    batch = a.batch or a.models
    out = {"n_models": a.models, "batch": batch, "write_shards_s": 0.0}
    shards, start_at = [], {}
    for k, first in enumerate(range(0, a.models, batch)):
        start = time.perf_counter()
        cells = grid_cells(Path(a.config), min(batch, a.models - first))
        new = write_shards(cells, shard_size, models, start_at, seed=first)
        out["write_shards_s"] += round(time.perf_counter() - start, 1)
        out["n_cells"] = len(cells)
        start_at = {i: start_at.get(i, 0) + c["n"] for i, c in enumerate(cells)}
        if k == 0 or batch == a.models:
            out["shards"] = disk(models)
        shards += new
        name = "build" if k == 0 else f"batch_{k + 1}"
        out[name] = stage(
            "incremental" if k else "build", shards=[str(s) for s in shards], lib=str(lib)
        )
        if a.batch:  # the built shards' weights: only their cards are read again
            for folder in new:
                for w in folder.glob("*.safetensors"):
                    w.unlink()
    out["library"] = disk(lib.resolve())
    # More models of existing cells (new shards after their last index), spread over the cells.
    added = grid_cells(Path(a.config), a.add)
    new = write_shards(added, shard_size, scratch / "added", start_at, seed=a.models)
    out["incremental"] = stage("incremental", shards=[str(s) for s in shards + new], lib=str(lib))
    out["library_after_add"] = disk(lib.resolve())
    out["versions"] = disk(scratch / "library.versions")
    out["open_query"] = stage("open_query", lib=str(lib))
    out["verify"] = stage("verify", lib=str(lib))
    out["pack"] = stage("pack", lib=str(lib), archive=str(scratch / "subset.tar.gz"))
    out["load"] = stage("load", lib=str(lib))
    out["format"] = Library.open(lib).manifest.get("format", "1 (a file per model)")
    out["load_average_1min"] = os.getloadavg()[0]
    if not a.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
