"""Fine-tuning pretrained networks on a small target: frozen layers, copies, determinism, skill."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import KFold

from conftest import ROOT
from shotgun.descriptors import get_descriptor
from shotgun.library import Predictor
from shotgun.training import Cell, compose_train_config, train_shard
from shotgun.transfer.finetune import fine_tune, fine_tune_cv

N_SOURCE, N_TARGET = 400, 100


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A real library model (trained by the project's own code on shear moduli from composition)
    and descriptor rows it has never seen, with their measured values."""
    df = pd.read_csv(ROOT / "data" / "inorganic" / "matbench_log10_gvrh.csv")
    df = df.iloc[: N_SOURCE + N_TARGET]
    d = get_descriptor("composition")
    X, ok = d.featurize(list(df["formula"]))
    assert ok.all()
    X, y = X.astype(np.float64), df["target"].to_numpy(dtype=np.float64)
    cell = Cell(
        "matbench_log10_gvrh",
        "inorganic",
        "log10_gvrh",
        "log10 GPa",
        d.spec(),
        df["formula"].to_numpy()[:N_SOURCE].astype(str),
        X[:N_SOURCE],
        y[:N_SOURCE],
        0,
    )
    cfg = compose_train_config(
        ROOT / "config" / "train",
        [
            "trainer.max_epochs=8",
            "trainer.patience=3",
            "trainer.ensemble_size=1",
            "model.n_layers=[3,3]",
        ],
    )
    out = tmp_path_factory.mktemp("pretrained")
    card = train_shard(cell, cfg, [0], out, log=lambda *a: None)[0]
    model = Predictor(card, out / card.weights)
    assert model.n_hidden == 3 and card.architecture["batch_norm"]
    return model, X[N_SOURCE:], y[N_SOURCE:]


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _mean_mae(y, splits):
    return np.mean(np.concatenate([np.abs(y[te] - y[tr].mean()) for tr, te in splits]))


def _cv_mae(y, splits, preds):
    return np.mean(np.concatenate([np.abs(y[te] - p) for (_, te), p in zip(splits, preds)]))


def test_only_unfrozen_layers_train_and_the_source_is_untouched(pretrained):
    model, X, y = pretrained
    source = _state(model.net)
    before = model.predict_descriptors(X)
    for unfreeze in (0, 1, 3):
        ft = fine_tune(model, X[:60], 3 * y[:60] + 1, seed=0, unfreeze=unfreeze, epochs=30)
        tuned = ft.net.state_dict()
        assert set(tuned) == set(source)
        for layer in range(3):
            keys = [k for k in source if k.startswith(f"blocks.{layer}.")]
            same = [torch.equal(tuned[k], source[k]) for k in keys]
            if layer < 3 - unfreeze:  # frozen: weights and BatchNorm statistics unchanged
                assert all(same), (unfreeze, layer)
            else:  # trained: weights, and BatchNorm statistics of the training batches
                for k in (f"blocks.{layer}.linear.weight", f"blocks.{layer}.norm.running_mean"):
                    assert not torch.equal(tuned[k], source[k]), (unfreeze, k)
        assert not torch.equal(tuned["output.weight"], source["output.weight"])
        assert all(torch.equal(v, source[k]) for k, v in model.net.state_dict().items())
        assert not model.net.training
        assert all(p.requires_grad for p in model.net.parameters())
        np.testing.assert_array_equal(model.predict_descriptors(X), before)
    with pytest.raises(ValueError, match="unfreeze"):
        fine_tune(model, X[:60], y[:60], unfreeze=4)


def test_cross_validated_predictions_are_finite_and_deterministic(pretrained):
    model, X, y = pretrained
    X, y = X[:50], y[:50]
    splits = list(KFold(n_splits=5, shuffle=True, random_state=0).split(y))
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a = fine_tune_cv(model, X, y, splits, seed=0, epochs=25)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's torch RNG is left alone
    assert [len(p) for p in a] == [len(te) for _, te in splits]
    assert all(np.isfinite(p).all() for p in a)
    b = fine_tune_cv(model, X, y, splits, seed=0, epochs=25)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    c = fine_tune_cv(model, X, y, splits, seed=1, epochs=25)
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_early_stopping_keeps_the_best_weights(pretrained):
    model, X, y = pretrained
    ft = fine_tune(model, X[:60], y[:60], seed=0, unfreeze=2, epochs=300, patience=5)
    s = ft.stats
    assert s["n_fit"] == 48 and len(s["val_rows"]) == 12
    assert s["epochs"] < 300 and s["best_epoch"] == s["epochs"] - 1 - 5
    rows = s["val_rows"]
    z = (ft(X[:60][rows]) - ft.y_mean) / ft.y_std
    t = (y[:60][rows] - ft.y_mean) / ft.y_std
    assert np.mean((z - t) ** 2) == pytest.approx(s["best_val_mse"], rel=1e-4)
    # Below 20 rows: no validation part, a fixed number of epochs.
    small = fine_tune(model, X[:15], y[:15], seed=0, epochs=12)
    assert small.stats["epochs"] == 12 and small.stats["best_val_mse"] is None
    assert small.stats["n_fit"] == 15


def test_fine_tuning_beats_the_training_mean(pretrained):
    """On unseen compounds: a linear function of the source network's own output (a new unit),
    and the measured source property itself."""
    model, X, y = pretrained
    splits = list(KFold(n_splits=5, shuffle=True, random_state=0).split(y))
    easy = 2.5 * model.predict_descriptors(X) - 1.0
    preds = fine_tune_cv(model, X, easy, splits, seed=0)
    assert _cv_mae(easy, splits, preds) < 0.3 * _mean_mae(easy, splits)
    preds = fine_tune_cv(model, X, y, splits, seed=0)
    assert _cv_mae(y, splits, preds) < 0.8 * _mean_mae(y, splits)
