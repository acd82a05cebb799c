"""Training throughput of the factory on a cell, against a naive reference.

Cells (``--cell``):
- ``standard``: 5,000 samples x 290 features (the size of a composition table), architectures
  with 3 hidden layers drawn from config/train/model, 50 epochs (no early stop unless
  ``--patience`` is given), batch 128;
- ``qm9-ecfp``: a cell of the standard library's real shape (config/standard.yaml): 10,000
  seeded QM9 molecules, HOMO-LUMO gap, ECFP counts (2,048 features, ~1 % non-zero), its
  fingerprint model space (``model.base_width_cap=128``) and the shipped trainer (early
  stopping, batch and epochs of config/train/trainer/cpu.yaml).

- factory: one fresh process runs ``shotgun.training.train_shard`` on K models (batched
  ensembles, cards and safetensors written), as a shard job does; with ``--jobs J``, J such
  processes train K/J models each at the same time with threads/J threads, as concurrent
  Snakemake shard jobs do;
- naive: one fresh process per model, each fitting one network with its own Lightning Trainer
  (``shotgun.nn.fit_single``), one after another, or J at a time with ``--jobs J``;
- peak: this machine's fp32 matrix-product rate through torch (2,048-square, all cores), the
  best of torch's default BLAS (``matmul_precision`` highest: MKL) and oneDNN (``medium``)
  where oneDNN computes in true float32 (checked: a product that picks single entries must
  return them unrounded; on AMD Zen 5, MKL runs at half oneDNN's float32 rate); the bf16 rate too
  (``peak_gflops_bf16``), the fair reference for ``--precision bf16`` (the factory then trains
  with ``trainer.precision=bf16``; the naive reference stays float32, the faster of the two for
  one small network). ``--matmul-precision`` sets ``trainer.matmul_precision`` of both the
  factory and the naive reference;
- ``--accelerator gpu``: both train with ``trainer=gpu`` (config/train/trainer/gpu.yaml) on
  the first CUDA device, and the peaks are those of an 8,192-square product there (TF32 is
  not float32: the check leaves it out of ``peak_gflops``).

``gflops`` counts the useful work of the real (unpadded) networks: forward 2 multiply-adds per
weight and sample, backward 4 (2 for the first layer, whose input needs no gradient), for the
epochs each model trained, over the training time measured inside the factory process. The
machine is often shared: the JSON also has the 1-minute load average before and after, and
the factory's CPU seconds. Last line: JSON.

    python benchmarks/train_throughput.py [--models 64] [--naive-models 2] [--threads 2]
                                          [--jobs 2] [--patience 50] [--precision bf16]
                                          [--matmul-precision medium] [--accelerator gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N, F, EPOCHS, BATCH = 5000, 290, 50, 128
OVERRIDES = {
    "standard": [
        f"trainer.max_epochs={EPOCHS}",
        f"trainer.batch_size={BATCH}",
        "model.n_layers=[3,3]",
    ],
    "qm9-ecfp": ["model.base_width_cap=128"],  # config/standard.yaml's descriptor_overrides
}
QM9 = ROOT / "data" / "molecules" / "qm9.csv.gz"


def _cell(kind: str):
    if kind == "qm9-ecfp":
        return _qm9_ecfp_cell()
    import numpy as np

    from shotgun.training import Cell

    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, F))
    y = np.tanh(X @ rng.normal(size=F) / 10) + 0.1 * rng.normal(size=N)
    return Cell(
        "bench",
        "inorganic",
        "y",
        "1",
        {"name": "composition", "version": "bench", "params": {}},
        np.array([f"x{i}" for i in range(N)]),
        X,
        y,
        0,
    )


def _qm9_ecfp_cell(rows: int = 10_000):
    import numpy as np
    import pandas as pd

    from shotgun.descriptors import featurize_inputs
    from shotgun.training import Cell

    df = pd.read_csv(QM9, usecols=["smiles", "gap"], dtype={"smiles": str}, keep_default_na=False)
    df = df.sample(n=rows, random_state=0)
    X, ok, spec, _ = featurize_inputs(df["smiles"].tolist(), "ecfp")
    return Cell(
        "bench",
        "molecule",
        "y",
        "Ha",
        spec,
        df["smiles"].to_numpy()[ok],
        X[ok],
        df["gap"].to_numpy(dtype=np.float64)[ok],
        int((~ok).sum()),
    )


def _cfg(kind: str, patience: int | None, precision: str, matmul_precision: str, accelerator: str):
    from shotgun.training import compose_train_config

    overrides = [f"trainer={accelerator}", *OVERRIDES[kind]]
    overrides += [f"trainer.patience={patience}"] if patience is not None else []
    overrides += [f"trainer.precision={precision}", f"trainer.matmul_precision={matmul_precision}"]
    return compose_train_config(ROOT / "config" / "train", overrides)


def _train_flops(arch, n_train: int, epochs: int) -> float:
    widths = [arch["n_in"], *arch["hidden"], 1]
    macs = [i * o for i, o in zip(widths[:-1], widths[1:])]
    per_sample = 2 * sum(macs) + 4 * sum(macs[1:]) + 2 * macs[0]
    return per_sample * n_train * epochs


def factory(
    kind: str,
    first: int,
    models: int,
    threads: int,
    out: str,
    patience: int | None,
    precision: str,
    matmul_precision: str,
    accelerator: str,
) -> dict:
    """(child process) train one shard: ``models`` models from index ``first``; returns timings
    and FLOPs."""
    import torch

    from shotgun.nn import stable_seed
    from shotgun.training import split_indices, train_shard

    torch.set_num_threads(threads)
    cell, cfg = _cell(kind), _cfg(kind, patience, precision, matmul_precision, accelerator)
    start, cpu = time.perf_counter(), time.process_time()
    cards = train_shard(cell, cfg, range(first, first + models), Path(out), threads=threads)
    _sync(accelerator)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    seed = stable_seed(cfg["seed"], "bench", "y", "split")
    tr, _, _ = split_indices(len(cell.y), cfg["trainer"], seed)
    epochs = [c.metrics.epochs for c in cards]
    flops = sum(_train_flops(c.architecture, len(tr), e) for c, e in zip(cards, epochs))
    return {"train_seconds": seconds, "train_cpu_seconds": cpu, "flops": flops, "epochs": epochs}


def naive(
    kind: str,
    index: int,
    threads: int,
    patience: int | None,
    matmul_precision: str,
    accelerator: str,
) -> dict:
    """(child process) train one model alone with its own Lightning Trainer."""
    import torch

    from shotgun.nn import fit_single, noise_shape, stable_seed
    from shotgun.training import plan_shard, split_indices, standardizer

    torch.set_num_threads(threads)
    cell, cfg = _cell(kind), _cfg(kind, patience, "32", matmul_precision, accelerator)
    ((_, arch, mid),) = plan_shard(cell, cfg, [index])
    seed = stable_seed(cfg["seed"], "bench", "y", "split")
    tr, val, _ = split_indices(len(cell.y), cfg["trainer"], seed)
    mean, std = standardizer(cell.X[tr])
    X = torch.as_tensor((cell.X - mean) / std, dtype=torch.float32)
    y = torch.as_tensor(cell.y, dtype=torch.float32)
    X, y = X.to(_device(accelerator)), y.to(_device(accelerator))
    start = time.perf_counter()
    fit_single(
        arch,
        stable_seed(cfg["seed"], mid),
        cfg,
        X[tr],
        y[tr],
        X[val],
        y[val],
        batch_seed=1,
        noise_seed=2,
        noise_shape=noise_shape(cell.X.shape[1], cfg["model"]),
    )
    _sync(accelerator)
    return {"train_seconds": time.perf_counter() - start}


def _device(accelerator: str) -> str:
    return "cuda" if accelerator == "gpu" else "cpu"


def _device_name(accelerator: str) -> str:
    if accelerator == "gpu":
        return __import__("torch").cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    info = dict(
        line.split(":", 1)
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if ":" in line
    )
    info = {k.strip(): v.strip() for k, v in info.items()}
    if "model name" not in info:
        return platform.machine()
    return f"{info['model name']} (family {info.get('cpu family', '?')})"


def _sync(accelerator: str) -> None:
    if accelerator == "gpu":
        __import__("torch").cuda.synchronize()


def _precision(mode: str):
    """The product's own context: torch's float32 matmul precision ``mode``, then restored."""
    from shotgun.nn import matmul_precision

    return matmul_precision({"trainer": {"matmul_precision": mode}})


def peak_gflops(
    threads: int,
    accelerator: str,
    dtype: str = "float32",
    matmul_precision: str = "highest",
    repeats: int = 5,
) -> float:
    """Best rate of a square product: 2,048 on CPU, 8,192 on a GPU."""
    import torch

    torch.set_num_threads(threads)
    size = 8192 if accelerator == "gpu" else 2048
    a, b = (
        torch.randn(size, size, dtype=getattr(torch, dtype), device=_device(accelerator))
        for _ in range(2)
    )
    best = float("inf")
    with _precision(matmul_precision):
        a @ b
        for _ in range(repeats):
            _sync(accelerator)
            start = time.perf_counter()
            a @ b
            _sync(accelerator)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def exact_float32(matmul_precision: str, accelerator: str, size: int = 256) -> bool:
    """Whether float32 products at ``matmul_precision`` keep all 24 bits of their operands: a
    product with a one-hot matrix returns its entries unrounded only then (bfloat16 or TF32
    inside, even split into two or three parts, would lose the last bits used here)."""
    import torch

    k = torch.randint(1, 16, (size, size), generator=torch.Generator().manual_seed(0))
    a = (1 + 2.0**-9 + k * 2.0**-21).to(_device(accelerator))  # float32, all 24 bits used
    with _precision(matmul_precision):
        return bool(torch.equal(a @ torch.eye(size, device=a.device), a))


def fp32_peaks(threads: int, accelerator: str) -> dict[str, float]:
    """{matmul precision: fp32 rate} for the paths that compute true float32 (on CUDA,
    ``medium`` allows TF32 and is left out by the check)."""
    return {
        mode: peak_gflops(threads, accelerator, matmul_precision=mode)
        for mode in ("highest", "medium")
        if mode == "highest" or exact_float32(mode, accelerator)
    }


def _children(arg_lists: list[list[str]]) -> tuple[list[dict], float, float]:
    """Run this script in fresh processes at the same time (as concurrent Snakemake jobs run);
    returns their JSON results, the wall time until the last one ends and their CPU time."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    start, cpu = time.perf_counter(), _children_cpu()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for args in arg_lists
    ]
    outputs = [proc.communicate() for proc in procs]
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    for proc, (_, err) in zip(procs, outputs):
        if proc.returncode:
            raise RuntimeError(err[-3000:])
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs], wall, cpu


def _shape(kind: str, patience: int | None, accelerator: str) -> dict:
    """The cell's size and training recipe, as the JSON reports it."""
    cfg = _cfg(kind, patience, "32", "highest", accelerator)
    if kind == "standard":
        samples, features, layers = N, F, "3"
    else:
        samples, features, layers = 10_000, 2048, "{}-{}".format(*cfg["model"]["n_layers"])
    return {
        "name": kind,
        "samples": samples,
        "features": features,
        "hidden_layers": layers,
        "max_epochs": cfg["trainer"]["max_epochs"],
        "batch": cfg["trainer"]["batch_size"],
        "patience": cfg["trainer"]["patience"],
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Parse the options, run the peaks, the factory and the naive reference, print the JSON.

    One function (over 80 lines): the measurement is a script read top to bottom, in the order
    the JSON reports it; its parts (factory, naive, peak_gflops) are functions above."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", choices=tuple(OVERRIDES), default="standard", help="see above")
    p.add_argument("--models", type=int, default=64, help="models of the factory shard")
    p.add_argument("--naive-models", type=int, default=2, help="models of the naive reference")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early-stopping patience (default: standard cell: the epochs, i.e. no early "
        "stop; qm9-ecfp: the shipped trainer's)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="concurrent processes sharing --threads, as Snakemake runs shard jobs "
        "(threads: 1 each on the local profile); the naive reference runs as "
        "many at a time",
    )
    p.add_argument(
        "--precision",
        choices=("32", "bf16"),
        default="32",
        help="trainer.precision of the factory (the naive reference stays float32: "
        "one small network trains faster in float32 than in bf16 here)",
    )
    p.add_argument(
        "--matmul-precision",
        choices=("highest", "high", "medium"),
        default="highest",
        help="trainer.matmul_precision of the factory and the naive reference",
    )
    p.add_argument(
        "--accelerator",
        choices=("cpu", "gpu"),
        default="cpu",
        help="trainer=ACCELERATOR (config/train/trainer) for the factory and the naive "
        "reference; the peaks are measured on that device",
    )
    p.add_argument("--child", choices=("factory", "naive"), help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.patience is None and a.cell == "standard":
        a.patience = EPOCHS
    if a.child == "factory":
        print(
            json.dumps(
                factory(
                    a.cell,
                    a.index,
                    a.models,
                    a.threads,
                    a.out,
                    a.patience,
                    a.precision,
                    a.matmul_precision,
                    a.accelerator,
                )
            )
        )
        return
    if a.child == "naive":
        args = (a.threads, a.patience, a.matmul_precision, a.accelerator)
        print(json.dumps(naive(a.cell, a.index, *args)))
        return

    load_start = os.getloadavg()[0]
    peaks = fp32_peaks(a.threads, a.accelerator)
    if a.models % a.jobs or a.naive_models % a.jobs or a.threads % a.jobs:
        p.error("--models, --naive-models and --threads must be multiples of --jobs")
    common = [
        "--cell",
        a.cell,
        "--threads",
        str(a.threads // a.jobs),
        *(["--patience", str(a.patience)] if a.patience is not None else []),
        "--matmul-precision",
        a.matmul_precision,
        "--accelerator",
        a.accelerator,
    ]
    per_job = a.models // a.jobs
    with tempfile.TemporaryDirectory() as tmp:
        shards, fac_wall, fac_cpu = _children(
            [
                [
                    "--child",
                    "factory",
                    "--index",
                    str(j * per_job),
                    "--models",
                    str(per_job),
                    "--out",
                    f"{tmp}/{j}",
                    "--precision",
                    a.precision,
                    *common,
                ]
                for j in range(a.jobs)
            ]
        )
    fac = {
        "flops": sum(r["flops"] for r in shards),
        "epochs": sum((r["epochs"] for r in shards), []),
        "train_seconds": max(r["train_seconds"] for r in shards),
        "train_cpu_seconds": sum(r["train_cpu_seconds"] for r in shards),
    }
    naive_wall, naive_train = 0.0, []
    for i in range(0, a.naive_models, a.jobs):
        res, wall, _ = _children(
            [["--child", "naive", "--index", str(k), *common] for k in range(i, i + a.jobs)]
        )
        naive_wall += wall
        naive_train += [r["train_seconds"] for r in res]
    for mode, rate in fp32_peaks(a.threads, a.accelerator).items():  # best of before and after
        peaks[mode] = max(peaks[mode], rate)
    peak = max(peaks.values())  # the machine's fp32 rate: its fastest true-float32 path
    peak_bf16 = max(peak_gflops(a.threads, a.accelerator, dtype="bfloat16") for _ in range(2))
    gflops = fac["flops"] / fac["train_seconds"] / 1e9
    naive_per_model = naive_wall / a.naive_models  # wall time per model, jobs at a time
    result = {
        "cell": _shape(a.cell, a.patience, a.accelerator),
        "accelerator": a.accelerator,
        "device": _device_name(a.accelerator),
        "threads": a.threads,
        "jobs": a.jobs,
        "models": a.models,
        "load_1min_start": round(load_start, 2),
        "load_1min_end": round(os.getloadavg()[0], 2),
        "factory_wall_s": round(fac_wall, 2),
        "factory_cpu_s": round(fac_cpu, 2),
        "factory_train_s": round(fac["train_seconds"], 2),
        "factory_train_cpu_s": round(fac["train_cpu_seconds"], 2),
        "mean_epochs": round(sum(fac["epochs"]) / len(fac["epochs"]), 1),
        "seconds_per_model": round(fac_wall / a.models, 3),
        "models_per_hour": round(3600 * a.models / fac_wall, 1),
        "gflops": round(gflops, 2),
        "gflops_per_cpu_s": round(fac["flops"] / fac["train_cpu_seconds"] / 1e9, 2),
        "peak_gflops": round(peak, 2),
        "peak_gflops_by_matmul_precision": {k: round(v, 2) for k, v in peaks.items()},
        "peak_fraction": round(gflops / peak, 3),
        "precision": a.precision,
        "matmul_precision": a.matmul_precision,
        "peak_gflops_bf16": round(peak_bf16, 2),
        "peak_fraction_bf16": round(gflops / peak_bf16, 3),
        "naive_models": a.naive_models,
        "naive_seconds_per_model": round(naive_per_model, 2),
        "naive_train_seconds_per_model": round(sum(naive_train) / len(naive_train), 2),
        "naive_models_per_hour": round(3600 / naive_per_model, 1),
        "speedup": round(naive_per_model * a.models / fac_wall, 1),
        "torch_blas": "mkl" if "mkl" in __import__("torch").__config__.show().lower() else "?",
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
