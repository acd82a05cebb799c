"""Library assembly, diff, sharing, rebuilding from MLflow, and the no-pickle rule."""

import dataclasses
import io
import json
import multiprocessing
import os
import re
import shutil
import tarfile

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, run
from shotgun.library import (
    Library,
    LibraryError,
    build_library,
    diff_libraries,
    features_many,
    unpack,
)
from shotgun.tracking import Tracker, count_runs, init_store, resolve_uri


def make_shard(results, ids, folder):
    """A shard folder holding the files of models ``ids`` as training wrote them."""
    folder.mkdir(parents=True)
    for mid in ids:
        for path in (results / "models").rglob(f"{mid}.*"):
            shutil.copyfile(path, folder / path.name)
    return folder


def test_build_is_incremental_versioned_and_atomic(smoke, tmp_path):
    src = Library.open(smoke / "library")
    ids = sorted(src.index["model_id"])
    a = make_shard(smoke, ids[:3], tmp_path / "shards" / "a")
    b = make_shard(smoke, ids[3:5], tmp_path / "shards" / "b")
    out = tmp_path / "lib"

    build_library([a], out, "1.0")
    v1 = Library.open(out)
    assert sorted(v1.index["model_id"]) == ids[:3] and v1.verify() == []
    build_library([a, b], out, "1.1")
    v2 = Library.open(out)
    assert sorted(v2.index["model_id"]) == ids[:5] and v2.verify() == []
    assert v1.root != v2.root and v1.verify() == []  # the previous build is still intact
    packs = [rel for rel in v1.manifest["files"] if rel.startswith("weights/")]
    assert packs and set(packs) < set(v2.manifest["files"])
    for rel in packs:  # unchanged packs are reused, not written again
        assert os.stat(v1.root / rel).st_ino == os.stat(v2.root / rel).st_ino
    d = diff_libraries(v1, v2)
    assert d["added"] == ids[3:5] and d["removed"] == [] and d["changed"] == []
    assert d["unchanged"] == 3

    # A build that fails midway (a new model's weights corrupted in its shard) leaves 1.1 intact.
    bad = make_shard(smoke, ids[5:], tmp_path / "shards" / "bad")
    (bad / f"{ids[5]}.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(LibraryError, match="checksum"):
        build_library([a, b, bad], out, "1.2")
    now = Library.open(out)
    assert now.root == v2.root and now.version == "1.1" and now.verify() == []

    proc = run(["shotgun", "library", "diff", str(v2.root), str(v1.root), "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["removed"] == ids[3:5]


def test_pack_and_unpack_a_subset(smoke, tmp_path):
    archive = tmp_path / "inorganic.tar.gz"
    proc = run(
        ["shotgun", "library", "pack", str(smoke / "library"), str(archive), "--kind", "inorganic"]
    )
    assert proc.returncode == 0, proc.stderr
    proc = run(["shotgun", "library", "unpack", str(archive), str(tmp_path / "shared")])
    assert proc.returncode == 0, proc.stderr
    src, got = Library.open(smoke / "library"), Library.open(tmp_path / "shared")
    expected = src.query(kind="inorganic").sort_values("model_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(
        got.index.sort_values("model_id").reset_index(drop=True), expected
    )
    assert got.verify() == [] and got.version == src.version
    mid = expected["model_id"][0]
    ref = src.card(mid).reference  # the same stored weights: the same predictions
    np.testing.assert_array_equal(
        got.load(mid).predict(ref.inputs), src.load(mid).predict(ref.inputs)
    )


def _archive(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "name, kind, message",
    [
        ("../escape.json", "file", "unsafe path"),
        ("{tmp}/escape.json", "file", "unsafe path"),
        ("cards/link.json", "symlink", "link or special"),
    ],
)
def test_unpack_refuses_unsafe_members(tmp_path, name, kind, message):
    """Nothing lands outside the destination: `../` from the unpacking folder (a sibling of
    dest, in tmp_path) would write tmp_path/escape.json, the absolute member that same file."""
    name = name.format(tmp=tmp_path)
    archive = _archive(
        tmp_path / "evil.tar.gz", [("manifest.json", b"{}", "file"), (name, b"{}", kind)]
    )
    with pytest.raises(LibraryError, match=message):
        unpack(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path / "escape.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]  # no scratch left


def test_unpack_refuses_tampered_archives(smoke, tmp_path):
    src = Library.open(smoke / "library")
    members, tampered = [], False
    for p in sorted(src.root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.suffix == ".safetensors" and not tampered:  # flip one bit of one weights file
                data, tampered = data[:-1] + bytes([data[-1] ^ 1]), True
            members.append((p.relative_to(src.root).as_posix(), data, "file"))
    archive = _archive(tmp_path / "tampered.tar.gz", members)
    proc = run(["shotgun", "library", "unpack", str(archive), str(tmp_path / "dest")])
    assert proc.returncode == 2 and "checksum" in proc.stderr
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_index_rebuilt_from_mlflow_agrees(smoke, tmp_path, jobs):
    """One process, or three each listing and downloading the runs of a span of start times:
    the same cards and the same weights as the library built from the shards."""
    proc = run(
        [
            "shotgun",
            "library",
            "from-mlflow",
            "--results",
            str(smoke),
            "--library-version",
            Library.open(smoke / "library").version,
            "--out",
            str(tmp_path / "rebuilt"),
            "--jobs",
            jobs,
        ]
    )
    assert proc.returncode == 0, proc.stderr
    built, rebuilt = Library.open(smoke / "library"), Library.open(tmp_path / "rebuilt")
    a = built.index.sort_values("model_id").reset_index(drop=True)
    b = rebuilt.index.sort_values("model_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    digests = [lib.storage["tensors_sha256"].sort_index() for lib in (built, rebuilt)]
    pd.testing.assert_series_equal(*digests)


def test_nothing_a_user_loads_is_a_pickle(smoke):
    pickle_magic = [bytes([0x80, p]) for p in range(2, 6)]
    lib = Library.open(smoke / "library")
    for p in lib.root.rglob("*"):
        if p.is_file():
            assert p.suffix in {".json", ".jsonl", ".parquet", ".safetensors"}, p
            assert p.read_bytes()[:2] not in pickle_magic, p
    for p in (ROOT / "src").rglob("*.py"):
        text = p.read_text()
        assert "import pickle" not in text and "joblib" not in text, p
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (p, line)


def _log_runs(uri, version, cards, worker):
    tracker = Tracker(uri, version)
    for card, weights in cards:
        tracker.log_run(card.replace(model_id=f"{card.model_id}-{worker}"), weights)


def test_eight_writers_share_the_embedded_store(smoke, tmp_path):
    from shotgun.library import ModelCard

    cards = [
        (ModelCard.read(p), p.with_suffix(".safetensors"))
        for p in (smoke / "models").rglob("*.json")
    ]
    uri = resolve_uri(None, tmp_path)
    init_store(uri, "concurrency", tmp_path / "mlartifacts")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_log_runs, args=(uri, "concurrency", cards, w)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * 8
    assert count_runs(uri, "concurrency") == 8 * len(cards)
    # Logging again is idempotent: no duplicate runs.
    _log_runs(uri, "concurrency", cards[:2], 0)
    assert count_runs(uri, "concurrency") == 8 * len(cards)


def test_neural_features_of_many_models_at_once(smoke):
    lib = Library.open(smoke / "library")
    ids = list(lib.applicable("molecule")["model_id"])  # fingerprint and composition models
    smiles = ["CCO", "c1ccccc1O", "not a smiles", "CC(=O)N"]
    many = features_many(lib, ids, smiles, depth=2, kind="molecule")
    bridged = 0
    for mid in ids:
        model = lib.load(mid)
        one = model.features(smiles, depth=2, kind="molecule")
        np.testing.assert_array_equal(many[mid], one)
        assert np.isnan(one[2]).all() and np.isfinite(one[[0, 1, 3]]).all()
        if model.descriptor.name == "composition":  # through organic_composition, by hand
            from shotgun.descriptors import get_descriptor

            X, ok = get_descriptor("organic_composition", **model.descriptor.params).featurize(
                smiles
            )
            np.testing.assert_allclose(one[ok], model.features_descriptors(X[ok], 2), atol=1e-5)
            bridged += 1
    assert bridged > 0


def test_model_cards_are_read_through_one_definition(smoke, tmp_path):
    """A library card reads into a ModelCard and writes back to the same bytes; a card with a
    missing or an unknown key, or from a newer card schema, is refused with its name."""
    from shotgun.library import CardError, ModelCard

    lib = Library.open(smoke / "library")
    lines = (lib.root / "cards.jsonl").read_text().splitlines()
    assert len(lines) == len(lib.index)
    for line in lines:
        card = ModelCard.from_dict(json.loads(line))
        assert card.to_json(indent=None) == line and lib.card(card.model_id) == card
        assert card.index_row() == lib.index.set_index("model_id").loc[card.model_id].to_dict() | {
            "model_id": card.model_id
        }
    doc = json.loads(line)
    for change, message in (
        (lambda d: d.pop("metrics"), "missing keys ['metrics']"),
        (lambda d: d.update(colour="blue"), "unknown keys ['colour']"),
        (lambda d: d.update(card_schema=99), "card_schema 99 is newer"),
    ):
        bad = dict(doc)
        change(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(CardError, match=re.escape(message)):
            ModelCard.read(tmp_path / "bad.json")


def test_library_report_and_weak_models(smoke, tmp_path):
    """`shotgun library report` counts every cell and lists a model whose test R² is below
    zero; that model is flagged weak in the index and transfer leaves it out unless asked."""
    from shotgun.transfer.candidates import candidates

    src = Library.open(smoke / "library")
    ids = sorted(src.applicable("inorganic")["model_id"])
    shard = make_shard(smoke, ids, tmp_path / "shard")
    card = src.card(ids[0])
    bad = card.replace(metrics=dataclasses.replace(card.metrics, test_r2=-0.25))
    (shard / f"{ids[0]}.json").write_text(bad.replace(weights=f"{ids[0]}.safetensors").to_json())
    build_library([shard], tmp_path / "lib", "1")
    lib = Library.open(tmp_path / "lib")
    assert lib.index.set_index("model_id")["weak"].to_dict() == {m: m == ids[0] for m in ids}
    assert ids[0] not in set(candidates(lib, "inorganic")["model_id"])
    assert ids[0] in set(candidates(lib, "inorganic", keep_weak=True)["model_id"])

    proc = run(
        ["shotgun", "library", "report", str(tmp_path / "lib"), "--out", str(tmp_path / "report")]
    )
    assert proc.returncode == 0, proc.stderr
    cells = pd.read_csv(tmp_path / "report" / "cells.csv")
    expected = lib.index.groupby(["dataset", "property", "descriptor"]).size()
    assert (
        cells.set_index(["dataset", "property", "descriptor"])["models"].to_dict()
        == expected.to_dict()
    )
    assert int(cells["weak"].sum()) == 1
    md = (tmp_path / "report" / "report.md").read_text()
    weak_section = md[md.index("## Weak models") : md.index("## Models that failed")]
    assert ids[0] in weak_section and "-0.25" in weak_section
    assert (tmp_path / "report" / "r2.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (tmp_path / "report" / "report.html").read_text()


def test_pack_refuses_to_overwrite_or_to_pack_nothing(smoke, tmp_path):
    lib = smoke / "library"
    archive = tmp_path / "lib.tar.gz"
    archive.write_bytes(b"an earlier archive")
    pack = ["shotgun", "library", "pack", str(lib), str(archive)]
    proc = run([*pack, "--kind", "polymer"])
    assert proc.returncode == 2 and f"{archive}: exists (--force overwrites it)" in proc.stderr
    proc = run([*pack, "--property", "no_such_property", "--force"])
    assert proc.returncode == 2 and "no model matches the query" in proc.stderr
    assert archive.read_bytes() == b"an earlier archive"
    proc = run([*pack, "--kind", "polymer", "--force"])
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest["n_models"] == len(Library.open(lib).query(kind="polymer")) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.tar.gz"]  # no scratch file left


def test_query_refuses_unknown_kinds_descriptors_and_top(smoke):
    lib = Library.open(smoke / "library")
    for query, message in (
        ({"kind": "molecules"}, "unknown kind 'molecules'; choose from molecule, polymer"),
        ({"descriptor": "ecfp4"}, "unknown descriptor 'ecfp4'; choose from composition"),
        ({"top": 0}, "top must be at least 1, got 0"),
    ):
        with pytest.raises(LibraryError, match=re.escape(message)):
            lib.query(**query)
    assert len(lib.query(kind="molecule", top=1)) == 1
    proc = run(["shotgun", "library", "query", str(smoke / "library"), "--top", "0"])
    assert proc.returncode == 2 and "top must be at least 1" in proc.stderr
