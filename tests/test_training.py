"""Batched training, resume of interrupted shards and the training grid."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, run
from shotgun.nn import build_network, fit_ensemble, fit_single, noise_shape, stable_seed
from shotgun.training import Cell, compose_train_config, plan_shard, split_indices, train_shard
from shotgun.training.grid import resolve_sources, shards

SPACE = {
    "n_layers": [3, 5],
    "width_fraction": [0.2, 0.8],
    "base_width_cap": 512,
    "min_width": 4,
    "activations": ["relu", "leaky_relu"],
    "dropout": [0.0, 0.1, 0.2],
    "batch_norm": True,
}


def _data(n=240, f=12, seed=0, dtype=torch.float32):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f))
    y = np.tanh(X @ rng.normal(size=f) / 3) + 0.1 * rng.normal(size=n)
    return torch.as_tensor(X, dtype=dtype), torch.as_tensor(y, dtype=dtype)


def _cfg(epochs, patience=2):
    return {
        "optim": {"lr": 0.01, "weight_decay": 1e-4},
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": epochs,
            "patience": patience,
            "batch_size": 32,
        },
    }


def test_model_trained_in_a_batch_equals_the_model_trained_alone():
    """Mixed depths, widths (padding), activations and dropout rates in one ensemble; in float64
    the only difference to a plain network is summation order, so results agree to 1e-9."""
    torch.set_default_dtype(torch.float64)
    try:
        X, y = _data(dtype=torch.float64)
        archs = [
            {"n_in": 12, "hidden": h, "activation": act, "dropout": p, "batch_norm": True}
            for h, act, p in [
                ([9, 7, 5], "relu", 0.1),
                ([11, 6, 4], "leaky_relu", 0.2),
                ([8, 8, 3], "relu", 0.0),
                ([10, 9, 7, 5], "leaky_relu", 0.1),
            ]
        ]
        seeds = [11, 12, 13, 14]
        common = dict(batch_seed=5, noise_seed=6, noise_shape=(5, 12))
        cfg = _cfg(epochs=4)
        together = fit_ensemble(archs, seeds, cfg, X[:180], y[:180], X[180:], y[180:], **common)
        for i in (1, 3):  # padded in a group of three; alone in its group
            alone = fit_single(
                archs[i], seeds[i], cfg, X[:180], y[:180], X[180:], y[180:], **common
            )
            state, batched = alone.state, together[i].state
            assert alone.stats["best_epoch"] == together[i].stats["best_epoch"]
            assert alone.stats["epochs"] == together[i].stats["epochs"]
            assert set(state) == set(batched) == set(build_network(archs[i]).state_dict())
            for key, value in state.items():
                torch.testing.assert_close(batched[key], value, rtol=1e-9, atol=1e-9, msg=key)
            for name in ("train_loss", "val_loss"):  # the same history, epoch by epoch
                np.testing.assert_allclose(
                    getattr(together[i].history, name), getattr(alone.history, name), rtol=1e-9
                )
    finally:
        torch.set_default_dtype(torch.float32)


ARCH = {
    "n_in": 12,
    "hidden": [11, 6, 4],
    "activation": "leaky_relu",
    "dropout": 0.2,
    "batch_norm": True,
}
OTHER = {"n_in": 12, "hidden": [9, 7, 5], "activation": "relu", "dropout": 0.1, "batch_norm": True}


def _in_a_batch_and_alone(cfg):
    """The fits of ARCH trained next to OTHER and of ARCH trained alone."""
    X, y = _data()
    split = (X[:180], y[:180], X[180:], y[180:])
    common = dict(batch_seed=5, noise_seed=6, noise_shape=(5, 12))
    together = fit_ensemble([OTHER, ARCH], [11, 12], cfg, *split, **common)
    return together[1], fit_single(ARCH, 12, cfg, *split, **common)


def test_bf16_products_match_the_reference_and_differ_from_float32():
    """trainer.precision=bf16: the ensemble and fit_single round the same operands to bfloat16,
    so a 3-layer model agrees to ~1e-4 (accumulation order, amplified by training), while float32
    training of the same model ends ~1e-1 away."""
    runs = {}
    for precision in ("32", "bf16"):
        cfg = _cfg(epochs=4)
        cfg["trainer"]["precision"] = precision
        together, alone = _in_a_batch_and_alone(cfg)
        runs[precision] = together.state, alone.state

    def gap(a, b):
        return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())

    assert gap(*runs["bf16"]) < 1e-2
    assert gap(runs["bf16"][0], runs["32"][0]) > 3e-2
    cfg = _cfg(epochs=1)
    cfg["trainer"]["precision"] = "fp8"
    with pytest.raises(ValueError, match="precision"):
        _in_a_batch_and_alone(cfg)


def _exact_under(cfg) -> bool:
    """Whether float32 products stay float32 under cfg's matmul precision on this CPU: oneDNN
    computes ``medium`` in bfloat16 where it has fast bfloat16 kernels (AMX), in float32 on
    other AVX-512 CPUs. A product with the identity is exact only in float32."""
    from shotgun.nn import matmul_precision

    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    with matmul_precision(cfg):
        return bool(torch.equal(x @ torch.eye(64), x))


def test_matmul_precision_holds_during_training_only():
    """trainer.matmul_precision sets torch's float32 matmul precision while a model trains and
    restores it after (also after an error); a model trained in a batch with ``medium`` equals
    the model trained alone with it (to bfloat16 rounding where the CPU computes ``medium`` in
    bfloat16); other values are refused before training."""
    from shotgun.nn import matmul_precision

    cfg = _cfg(epochs=4)
    cfg["trainer"]["matmul_precision"] = "medium"
    before = torch.get_float32_matmul_precision()
    with pytest.raises(RuntimeError, match="inside"):
        with matmul_precision(cfg):
            assert torch.get_float32_matmul_precision() == "medium" != before
            raise RuntimeError("inside")
    assert torch.get_float32_matmul_precision() == before
    fits = _in_a_batch_and_alone(cfg)
    (together, stats_together), (alone, stats) = ((f.state, f.stats) for f in fits)
    assert torch.get_float32_matmul_precision() == before
    if _exact_under(cfg):  # float32 kernels: the same model, up to summation order
        assert stats == stats_together
        tol = 1e-2
    else:  # bfloat16 inside: rounding of 8-bit mantissas, amplified by training
        assert stats["epochs"] == stats_together["epochs"]
        assert stats["best_val_mse"] == pytest.approx(stats_together["best_val_mse"], rel=0.05)
        tol = 0.1
    for key, value in alone.items():
        torch.testing.assert_close(together[key], value, rtol=tol, atol=tol, msg=key)
    cfg["trainer"]["matmul_precision"] = "low"
    with pytest.raises(ValueError, match="trainer.matmul_precision"):
        _in_a_batch_and_alone(cfg)


def test_auto_matmul_precision_is_float32_and_recorded(tmp_path):
    """`auto` (the default) resolves to medium exactly where medium keeps float32 products on
    this machine, else highest; a model trained with it is the model trained with that choice,
    and its card records the choice."""
    from shotgun.nn.trainer import resolve_matmul_precision

    cfg = _cfg(epochs=3)
    cfg["trainer"]["matmul_precision"] = "auto"
    medium = dict(cfg, trainer=dict(cfg["trainer"], matmul_precision="medium"))
    chosen = resolve_matmul_precision(cfg)
    assert chosen == ("medium" if _exact_under(medium) else "highest")
    resolved = dict(cfg, trainer=dict(cfg["trainer"], matmul_precision=chosen))
    a, b = (_in_a_batch_and_alone(c)[1] for c in (cfg, resolved))
    (a, stats_a), (b, stats_b) = (a.state, a.stats), (b.state, b.stats)
    assert stats_a == stats_b and all(torch.equal(a[k], b[k]) for k in a)
    train = compose_train_config(ROOT / "config" / "train", ["trainer.max_epochs=1"])
    assert train["trainer"]["matmul_precision"] == "auto"
    card = train_shard(_cell(), train, [0], tmp_path / "s", log=lambda *a: None)[0]
    assert card.train_config["trainer"]["matmul_precision"] == chosen


def test_per_model_early_stopping_and_best_weights():
    X, y = _data()
    space = dict(SPACE, n_layers=[3, 3], dropout=0.1)
    from shotgun.nn import sample_architecture

    archs = [sample_architecture(12, space, s) for s in range(6)]
    out = fit_ensemble(
        archs,
        list(range(6)),
        _cfg(epochs=15, patience=1),
        X[:180],
        y[:180],
        X[180:],
        y[180:],
        batch_seed=1,
        noise_seed=2,
        noise_shape=noise_shape(12, space),
    )
    epochs = [f.stats["epochs"] for f in out]
    assert all(
        f.stats["best_epoch"] == f.stats["epochs"] - 2 or f.stats["epochs"] == 15 for f in out
    )
    for fit, arch in zip(out, archs):  # the best weights reproduce the best loss
        stats = fit.stats
        net = build_network(arch)
        net.load_state_dict(fit.state)
        net.eval()
        with torch.no_grad():
            mse = float(((net(X[180:]) - y[180:]) ** 2).mean())
        assert mse == pytest.approx(stats["best_val_mse"], rel=1e-5)
    assert min(epochs) < 15


def _cell(n=300):
    rng = np.random.default_rng(1)
    f = 16
    X = rng.normal(size=(n, f))
    y = 3 + 2 * np.tanh(X @ rng.normal(size=f) / 3)
    return Cell(
        "toy",
        "inorganic",
        "y",
        "eV",
        {"name": "composition", "version": "1", "params": {}},
        np.array([f"A{i}B" for i in range(n)]),
        X,
        y,
        0,
    )


def test_interrupted_shard_retrains_only_its_missing_models(tmp_path):
    cell = _cell()
    cfg = compose_train_config(
        ROOT / "config" / "train",
        ["trainer.max_epochs=5", "trainer.patience=2", "trainer.ensemble_size=3"],
    )
    out = tmp_path / "0-3"
    cards = train_shard(cell, cfg, range(4), out)
    assert len({c.model_id for c in cards}) == 4
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    victim = cards[1].model_id
    (out / f"{victim}.json").unlink()  # interrupted after its weights, before its card
    (out / "0123456789abcdef.json").write_text("{}")  # a model the plan no longer has
    again = train_shard(cell, cfg, range(4), out)
    changed = {p.name for p in out.iterdir() if mtimes.get(p.name) != p.stat().st_mtime_ns}
    assert changed == {f"{victim}.json", f"{victim}.safetensors"}
    assert [c.model_id for c in again] == [c.model_id for c in cards]
    # Retrained alone (float32), the model matches the one trained in a batch of three.
    old, new = cards[1], again[1]
    assert new.metrics.epochs == old.metrics.epochs
    np.testing.assert_allclose(new.reference.predictions, old.reference.predictions, rtol=1e-3)
    # The model ids do not depend on the shard or the ensemble size.
    other = dict(cfg, trainer=dict(cfg["trainer"], ensemble_size=64))
    assert [m for _, _, m in plan_shard(cell, other, [1])] == [victim]
    # float32 (the default precision) keeps the ids of configs without the key; bf16 does not.
    older = dict(cfg, trainer={k: v for k, v in cfg["trainer"].items() if k != "precision"})
    bf16 = dict(cfg, trainer=dict(cfg["trainer"], precision="bf16"))
    assert cfg["trainer"]["precision"] == 32
    assert [m for _, _, m in plan_shard(cell, older, [1])] == [victim]
    assert [m for _, _, m in plan_shard(cell, bf16, [1])] != [victim]
    fast = dict(cfg, trainer=dict(cfg["trainer"], matmul_precision="medium"))
    assert [m for _, _, m in plan_shard(cell, fast, [1])] == [victim]
    # The weights file, run by hand in a plain network (its input scaler, the clip, the card's
    # target scaler), reproduces the card's reference predictions and test metrics.
    import hashlib

    from safetensors.torch import load_file

    weights = out / f"{victim}.safetensors"
    tensors = load_file(str(weights))
    net = build_network(new.architecture)
    net.load_state_dict(
        {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
    )
    net.eval()
    _, _, test = split_indices(
        len(cell.y), cfg["trainer"], stable_seed(cfg["seed"], cell.dataset, cell.property, "split")
    )
    Z = np.clip((cell.X[test] - tensors["x_mean"].numpy()) / tensors["x_std"].numpy(), -10, 10)
    with torch.no_grad():
        out_std = net(torch.as_tensor(Z, dtype=torch.float32)).numpy().astype(np.float64)
    pred = out_std * new.target_scaler.std + new.target_scaler.mean
    assert new.reference.inputs == cell.inputs[test[:5]].tolist()
    np.testing.assert_allclose(pred[:5], new.reference.predictions, rtol=1e-6)
    err = pred - cell.y[test]
    assert np.abs(err).mean() == pytest.approx(new.metrics.test_mae, rel=1e-6)
    assert np.sqrt((err**2).mean()) == pytest.approx(new.metrics.test_rmse, rel=1e-6)
    card = json.loads((out / f"{victim}.json").read_text())
    assert (
        card["weights_sha256"]
        == new.weights_sha256
        == hashlib.sha256(weights.read_bytes()).hexdigest()
    )


def _planned_by_snakemake(configfile):
    proc = run(["snakemake", "-n", "-p", "--configfile", str(configfile), "-c1"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranges = re.findall(r"shotgun train .*?--models (\d+)-(\d+)", proc.stdout)
    return len(ranges), sum(int(hi) - int(lo) + 1 for lo, hi in ranges)


def test_grid_count_equals_the_snakemake_plan(tmp_path):
    decls = tmp_path / "datasets"
    decls.mkdir()
    for name in ("qm9", "matbench_log10_kvrh", "radonpy_pi1070"):
        shutil.copy(ROOT / "config" / "datasets" / f"{name}.yaml", decls)
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config.update(results=str(tmp_path / "results"), datasets_dir=str(decls), shard_size=3)
    config["sources"] = {
        "all": {"descriptors": "applicable", "n_models": 4},
        "qm9": {"properties": ["gap", "homo"], "descriptors": ["ecfp"], "n_models": 5},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run(["shotgun", "grid", "--configfile", str(path), "--count"])
    assert proc.returncode == 0, proc.stderr
    counted = int(proc.stdout.strip().splitlines()[-1])
    planned = list(shards(config))
    assert counted == sum(s.n_models for s in planned)
    assert _planned_by_snakemake(path) == (len(planned), counted)
    radonpy = resolve_sources(config)["radonpy_pi1070"]
    assert "ecfp" in radonpy["descriptors"] and "composition" not in radonpy["descriptors"]
    assert len(radonpy["properties"]) == 18


def test_mdl_config_plans_the_xenonpy_scale_in_few_jobs():
    proc = run(["shotgun", "grid", "--configfile", "config/mdl.yaml", "--count"])
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load((ROOT / "config" / "mdl.yaml").read_text())
    planned = list(shards(config))
    assert int(proc.stdout.strip().splitlines()[-1]) == sum(s.n_models for s in planned)
    assert sum(s.n_models for s in planned) >= 140_000
    assert len(planned) <= 2_000
    declared = {p.stem for p in (ROOT / "config" / "datasets").glob("*.yaml")}
    assert {s.dataset for s in planned} == declared  # new declarations join the grid


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "results: r\nlibrary_version: '1'\nseed: 0\naccelerator: cpu\nshard_sise: 2\n"
            "sources: {qm9: {descriptors: [ecfp], n_models: 1}}\n",
            "shard_sise: Additional properties are not allowed",
        ),
        ("sources: [qm9\n", "line 2: invalid YAML"),
        (
            "results: r\nlibrary_version: '1'\nseed: 0\naccelerator: tpu\nshard_size: 2\n"
            "sources: {qm9: {descriptors: [ecfp], n_models: 1}}\n",
            "accelerator: 'tpu' is not one of",
        ),
        (
            "results: r\nlibrary_version: '1'\nseed: 0\naccelerator: cpu\nshard_size: 2\n"
            "sources: {qm9: {descriptors: [composition], n_models: 1}}\n",
            "sources.qm9: descriptors ['composition'] do not accept molecule inputs",
        ),
    ],
)
def test_grid_refuses_a_bad_config_with_one_line(tmp_path, text, message):
    """`shotgun grid` checks its config with the workflow's schema: the file and the key are
    named, no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = run(["shotgun", "grid", "--configfile", str(path)])
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("shotgun: error: ")


def test_a_last_batch_of_one_row_still_validates(tmp_path):
    """769 training rows at batch 128: the last batch (one row, too few for BatchNorm) is not
    trained on, and validation still runs after every epoch (it once never ran, so no model
    recorded a best state and the shard crashed)."""
    cell = _cell(n=1069)
    cfg = compose_train_config(
        ROOT / "config" / "train", ["trainer.max_epochs=3", "trainer.patience=3"]
    )
    train, _, _ = split_indices(
        len(cell.y), cfg["trainer"], stable_seed(cfg["seed"], cell.dataset, cell.property, "split")
    )
    assert len(train) % cfg["trainer"]["batch_size"] == 1
    cards = train_shard(cell, cfg, range(2), tmp_path / "shard", log=lambda *a: None)
    for card in cards:
        assert card.failure is None and card.metrics.epochs == 3
        assert 0 <= card.metrics.best_epoch < 3 and np.isfinite(card.metrics.best_val_mse)


def test_a_model_that_cannot_train_is_a_recorded_outcome(tmp_path):
    """A model whose validation loss is never finite (here: a feature column of NaN) does not
    stop its shard: its card says why, it has no weights, a resumed shard keeps it, and a
    library built from the shard leaves it out and lists it in its manifest."""
    from shotgun.library import Library, build_library

    cell = _cell()
    cell.X[:, 3] = np.nan
    cfg = compose_train_config(
        ROOT / "config" / "train", ["trainer.max_epochs=3", "trainer.patience=2"]
    )
    shard = tmp_path / "0-1"
    cards = train_shard(cell, cfg, range(2), shard, log=lambda *a: None)
    for card in cards:
        assert card.failure.startswith("validation loss never finite")
        assert card.weights is None and card.metrics.test_mae is None
        assert json.loads((shard / f"{card.model_id}.json").read_text())["failure"] == card.failure
        assert not (shard / f"{card.model_id}.safetensors").exists()
    again = train_shard(cell, cfg, range(2), shard, log=lambda *a: None)
    assert again == cards
    good = _cell()
    good.property = "z"  # another cell: ids hash the cell, not the features
    kept = train_shard(good, cfg, range(1), tmp_path / "good", log=lambda *a: None)
    manifest = build_library([shard, tmp_path / "good"], tmp_path / "lib", "1")
    lib = Library.open(tmp_path / "lib")
    assert list(lib.index["model_id"]) == [kept[0].model_id] and lib.verify() == []
    assert sorted(f["model_id"] for f in manifest["failed"]) == sorted(c.model_id for c in cards)
    assert {f["failure"] for f in manifest["failed"]} == {c.failure for c in cards}
