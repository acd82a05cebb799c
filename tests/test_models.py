import pytest
import torch

from shotgun.nn import architecture_name, build_network, sample_architecture, stable_seed

SPACE = {
    "n_layers": [3, 5],
    "width_fraction": [0.2, 0.8],
    "min_width": 8,
    "activations": ["relu", "leaky_relu"],
    "dropout": 0.1,
    "batch_norm": True,
}


def test_sampler_is_deterministic_and_within_the_space():
    seeds = [stable_seed(0, "qm9", "gap", "ecfp", i) for i in range(50)]
    assert seeds == [stable_seed(0, "qm9", "gap", "ecfp", i) for i in range(50)]
    archs = [sample_architecture(290, SPACE, s) for s in seeds]
    assert archs == [sample_architecture(290, SPACE, s) for s in seeds]
    assert len({architecture_name(a) for a in archs}) > 40  # distinct draws
    for a in archs:
        assert 3 <= len(a["hidden"]) <= 5
        assert a["hidden"] == sorted(a["hidden"], reverse=True)
        assert all(round(0.2 * 290) <= w <= round(0.8 * 290) for w in a["hidden"])
    assert {a["activation"] for a in archs} == {"relu", "leaky_relu"}


def test_seed_depends_on_every_part():
    base = stable_seed(0, "qm9", "gap", "ecfp", 1)
    assert base != stable_seed(1, "qm9", "gap", "ecfp", 1)
    assert base != stable_seed(0, "qm9", "homo", "ecfp", 1)
    assert base != stable_seed(0, "qm9", "gap", "ecfp", 2)


def test_hidden_features_are_pre_activations_by_hand():
    arch = {
        "n_in": 6,
        "hidden": [5, 4, 3],
        "activation": "relu",
        "dropout": 0.1,
        "batch_norm": True,
    }
    torch.manual_seed(0)
    net = build_network(arch)
    for block in net.blocks:  # non-trivial BatchNorm statistics
        block["norm"].running_mean.uniform_(-1, 1)
        block["norm"].running_var.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(7, 6)
    h, pre = x, []
    for block in net.blocks:
        lin, bn = block["linear"], block["norm"]
        z = h @ lin.weight.T + lin.bias
        z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        pre.append(z)
        h = torch.relu(z)
    with torch.no_grad():
        assert torch.allclose(net.hidden_features(x, 1), pre[-1], atol=1e-5)
        assert torch.allclose(net.hidden_features(x, 2), torch.cat(pre[-2:], 1), atol=1e-5)
        one, three = net.hidden_features_at(x, [1, 3])  # several depths from one pass
        assert torch.allclose(one, pre[-1], atol=1e-5)
        assert torch.allclose(three, torch.cat(pre, 1), atol=1e-5)
        out = h @ net.output.weight.T + net.output.bias
        assert torch.allclose(net(x), out.squeeze(-1), atol=1e-5)
    with pytest.raises(ValueError, match="depth"):
        net.hidden_features(x, 4)
    with pytest.raises(ValueError, match="depth"):
        net.hidden_features_at(x, [1, 0])


def test_default_space_draws_are_unchanged_and_lists_are_sampled():
    # Pinned draw of the default (scalar) space: sampling extensions must not move it.
    assert sample_architecture(290, SPACE, stable_seed(0, 0)) == {
        "n_in": 290,
        "hidden": [214, 193, 186, 151],
        "activation": "relu",
        "dropout": 0.1,
        "batch_norm": True,
    }
    space = dict(SPACE, dropout=[0.0, 0.2], batch_norm=[True, False])
    archs = [sample_architecture(290, space, stable_seed(1, i)) for i in range(40)]
    assert {a["dropout"] for a in archs} == {0.0, 0.2}
    assert {a["batch_norm"] for a in archs} == {True, False}
    assert [a["hidden"] for a in archs] == [
        sample_architecture(290, SPACE, stable_seed(1, i))["hidden"] for i in range(40)
    ]


def test_max_width_bounds_every_draw():
    from shotgun.nn import max_width

    space = dict(SPACE, base_width_cap=512)
    for n_in in (6, 290, 2048):
        widest = max(max(sample_architecture(n_in, space, s)["hidden"]) for s in range(200))
        assert widest <= max_width(n_in, space)
        assert widest >= 0.95 * max_width(n_in, space) or n_in == 6
