"""The library's storage: the models of a shard packed in one safetensors file (16-bit weights),
the cards in one table, and each model read alone and verified."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import run, tensor_spans
from shotgun.library import Library, LibraryError, ModelCard, Predictor, build_library, pack, unpack
from shotgun.library.packs import FEATURE_TOLERANCE, PREDICTION_TOLERANCE


def shard_dirs(models):
    """The shard folders under ``models`` (a results folder's ``models/``)."""
    return sorted({p.parent for p in models.rglob("*.json")})


def shard_models(results):
    """(card, weights path) of every model as training wrote it."""
    return [
        (ModelCard.read(p), p.with_suffix(".safetensors"))
        for p in sorted((results / "models").rglob("*.json"))
    ]


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_packed_models_predict_as_their_shard_files(smoke, tmp_path):
    """Each model of the smoke library against the float32 network of its shard's file, on its
    prepared training inputs: float16 weights keep predictions within PREDICTION_TOLERANCE and
    the neural features of every depth within FEATURE_TOLERANCE of their spread; float32 weights
    are exact."""
    lib = Library.open(smoke / "library")
    assert lib.manifest["weights_dtype"] == "float16"
    build_library(shard_dirs(smoke / "models"), tmp_path / "f32", "f32", weights_dtype="float32")
    exact = Library.open(tmp_path / "f32")
    models = shard_models(smoke)
    assert len(models) == len(lib.index)
    for card, path in models:
        ref = Predictor(card, path)
        table = pd.read_parquet(smoke / "data" / card.dataset / f"{card.property}.parquet")
        X, ok = ref.descriptors(table["input"].tolist())
        X, depths = X[ok], range(1, ref.n_hidden + 1)
        y_ref, F_ref = ref.predict_descriptors(X), ref.features_at(X, depths)
        got = lib.load(card.model_id)
        change = np.abs(got.predict_descriptors(X) - y_ref).max()
        assert 0 < change <= PREDICTION_TOLERANCE * y_ref.std()
        for F, R in zip(got.features_at(X, depths), F_ref):
            assert np.abs(F - R).max() <= FEATURE_TOLERANCE * R.std()
        same = exact.load(card.model_id)
        np.testing.assert_array_equal(same.predict_descriptors(X), y_ref)
        for F, R in zip(same.features_at(X, depths), F_ref):
            np.testing.assert_array_equal(F, R)


def test_a_model_loads_without_its_neighbours(smoke, tmp_path):
    """Every byte of one model's tensors overwritten in its pack: its neighbour still loads and
    predicts as before (its load neither reads nor checks them); the overwritten model is
    refused, and verify names the pack."""
    src = Library.open(smoke / "library")
    copy = tmp_path / "lib"
    shutil.copytree(src.root, copy)
    lib = Library.open(copy)
    rel = lib.card(lib.index["model_id"][0]).weights
    spans = tensor_spans(copy / rel)
    victim, neighbour = sorted({n.split("/")[0] for n in spans if "/" in n})[:2]
    data = bytearray((copy / rel).read_bytes())
    for name, (a, b) in spans.items():
        if name.startswith(f"{victim}/"):
            data[a:b] = bytes(b - a)  # zeros
    (copy / rel).write_bytes(bytes(data))

    ref = src.load(neighbour).card.reference
    np.testing.assert_array_equal(
        lib.load(neighbour).predict(ref.inputs), src.load(neighbour).predict(ref.inputs)
    )
    with pytest.raises(LibraryError, match=f"checksum mismatch in the weights of {victim}"):
        lib.load(victim)
    assert [p for p in lib.verify() if "checksum" in p] == [
        f"{copy / rel}: checksum mismatch (file changed since the library was built)"
    ]


def test_verify_catches_one_flipped_byte(smoke, tmp_path):
    copy = tmp_path / "lib"
    shutil.copytree(Library.open(smoke / "library").root, copy)
    lib = Library.open(copy)
    mid = lib.index["model_id"][0]
    rel = lib.card(mid).weights
    a, b = tensor_spans(copy / rel)[f"{mid}/net.output.weight"]
    flip(copy / rel, (a + b) // 2)
    problems = lib.verify()
    assert len(problems) == 1 and str(copy / rel) in problems[0] and "checksum" in problems[0]
    with pytest.raises(LibraryError, match="checksum mismatch"):
        lib.load(mid)
    proc = run(["shotgun", "library", "verify", str(copy)])
    assert proc.returncode == 1 and "1 problems" in proc.stdout

    # One byte of the card table: the model whose card holds it is refused, the others load.
    other = lib.index["model_id"][1]
    flip(copy / "cards.jsonl", int(lib.storage.at[other, "card_offset"]) + 5)
    with pytest.raises(LibraryError, match=f"checksum mismatch in the card of {other}"):
        lib.card(other)
    assert len(lib.verify()) == 2


def test_a_subset_archive_holds_only_its_models(smoke, tmp_path):
    """The best model alone: its pack in the archive holds its tensors and its cell's scaler,
    not its shard neighbours', and it predicts exactly as in the library."""
    src = Library.open(smoke / "library")
    best = src.query(top=1)["model_id"][0]
    assert pack(src, tmp_path / "best.tar.gz", top=1) == 1
    got = unpack(tmp_path / "best.tar.gz", tmp_path / "best")
    assert list(got.index["model_id"]) == [best] and got.verify() == []
    packs = [p for p in got.manifest["files"] if p.startswith("weights/")]
    assert len(packs) == 1
    names = set(tensor_spans(got.root / packs[0]))
    assert {n.split("/")[0] for n in names if "/" in n} == {best}
    assert {n for n in names if "/" not in n} == {"x_mean", "x_std"}
    ref = src.card(best).reference
    np.testing.assert_array_equal(
        got.load(best).predict(ref.inputs), src.load(best).predict(ref.inputs)
    )


def _copies(results, dest, k):
    """The smoke shards with ``k`` copies of every model (other ids, the same weights files)."""
    for shard in shard_dirs(results / "models"):
        folder = dest / shard.relative_to(results / "models")
        folder.mkdir(parents=True)
        for card, weights in shard_models(results):
            if weights.parent != shard:
                continue
            for i in range(k):
                new = f"{i:04x}{card.model_id[4:]}"
                shutil.copyfile(weights, folder / f"{new}.safetensors")
                (folder / f"{new}.json").write_text(
                    card.replace(model_id=new, weights=f"{new}.safetensors").to_json()
                )
    return shard_dirs(dest)


def test_files_do_not_grow_with_models(smoke, tmp_path):
    """One pack per shard, one card table, one index: 8 times the models, the same files; and
    float16 packs take about half the bytes of the shards' float32 files."""
    counts = {}
    for k in (1, 8):
        shards = _copies(smoke, tmp_path / f"x{k}" / "models", k)
        manifest = build_library(shards, tmp_path / f"x{k}" / "library", "1")
        root = (tmp_path / f"x{k}" / "library").resolve()
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        assert manifest["n_models"] == k * len(shard_models(smoke))
        assert len([f for f in files if f.startswith("weights/")]) == len(
            shard_dirs(smoke / "models")
        )
        counts[k] = len(files)
        weights = sum(p.stat().st_size for s in shards for p in s.glob("*.safetensors"))
        packed = sum((root / f).stat().st_size for f in files if f.startswith("weights/"))
        assert packed < 0.6 * weights
    assert counts[1] == counts[8]


def test_a_library_of_the_old_layout_is_refused(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"library_version": "1", "files": {}}))
    with pytest.raises(LibraryError, match="library format 1 .*build it again"):
        Library.open(old)
    proc = run(["shotgun", "library", "verify", str(old)])
    assert proc.returncode == 2 and "library format 1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_tensor_beyond_float16_stays_float32():
    """float16 holds magnitudes up to 65504: a larger weight keeps its tensor in float32 (no
    inf); BatchNorm's integer batch counter is stored as it is."""
    import torch

    from shotgun.library.packs import stored

    big, small = torch.tensor([0.5, -7e4]), torch.tensor([0.5, -6e4])
    assert stored(big, "float16").dtype == torch.float32
    assert torch.equal(stored(big, "float16"), big)
    assert stored(small, "float16").dtype == torch.float16
    assert stored(small, "float16").tolist() == [0.5, -60000.0]
    assert stored(torch.tensor(7), "float16").dtype == torch.int64
