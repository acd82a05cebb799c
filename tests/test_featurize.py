import json

import numpy as np
import pandas as pd
import pytest

from conftest import run
from shotgun import INPUT_KINDS, MATERIAL_CLASSES
from shotgun.descriptors import FeatureCache, featurize_inputs, get_descriptor, read_features

SMILES = ["CCO", "*CC*", "bad((", "c1ccccc1", "CCO", "", "CC(=O)O"]


@pytest.mark.parametrize("name", ["ecfp", "composition", "rdkit_2d"])
def test_cache_returns_the_same_and_featurizes_only_new_inputs(tmp_path, monkeypatch, name):
    inputs = ["Fe2O3", "NaCl", "Xx", "NaCl", "SiO2"] if name == "composition" else SMILES
    X0, ok0, spec, names = featurize_inputs(inputs, name)
    X1, ok1, _, _ = featurize_inputs(inputs, name, cache_dir=tmp_path)
    np.testing.assert_array_equal(ok0, ok1)
    np.testing.assert_array_equal(X0, X1)
    assert len(list(tmp_path.glob("*/*.npz"))) == 1
    assert json.loads((next(tmp_path.glob("*/spec.json"))).read_text()) == spec

    seen = []
    cls = type(get_descriptor(name))
    original = cls.featurize
    monkeypatch.setattr(cls, "featurize", lambda self, xs: (seen.extend(xs), original(self, xs))[1])
    X2, ok2, _, _ = featurize_inputs(list(reversed(inputs)), name, cache_dir=tmp_path)
    assert seen == []  # everything came from the cache
    np.testing.assert_array_equal(X2, X0[::-1])
    np.testing.assert_array_equal(ok2, ok0[::-1])
    more = inputs + (["KCl"] if name == "composition" else ["CCN"])
    X3, _, _, _ = featurize_inputs(more, name, cache_dir=tmp_path)
    assert seen == more[-1:]  # only the new input
    np.testing.assert_array_equal(X3[:-1], X0)
    assert len(list(tmp_path.glob("*/*.npz"))) == 2


def test_cache_is_keyed_by_spec(tmp_path):
    featurize_inputs(SMILES, "ecfp", cache_dir=tmp_path)
    X, _, _, _ = featurize_inputs(SMILES, "ecfp", cache_dir=tmp_path, params={"radius": 1})
    Xr, _, _, _ = featurize_inputs(SMILES, "ecfp", params={"radius": 1})
    np.testing.assert_array_equal(X, Xr)
    assert len(list(tmp_path.iterdir())) == 2
    a = FeatureCache(tmp_path, get_descriptor("ecfp").spec()).dir
    b = FeatureCache(tmp_path, {**get_descriptor("ecfp").spec(), "version": "9"}).dir
    assert a != b


def test_cache_segments_hold_no_pickles(tmp_path):
    featurize_inputs(SMILES, "ecfp", cache_dir=tmp_path)  # sparse segment
    featurize_inputs(["Fe2O3", "NaCl"], "composition", cache_dir=tmp_path)  # dense segment
    files = {}
    for path in tmp_path.glob("*/*.npz"):
        with np.load(path, allow_pickle=False) as z:
            files[path.parent.name.split("-")[0]] = set(z.files)
    assert files["ecfp"] == {"keys", "ok", "data", "indices", "indptr"}
    assert files["composition"] == {"keys", "ok", "X"}


@pytest.mark.parametrize("order", ["C", "F"])
def test_cache_segment_and_feature_table_of_either_memory_order(tmp_path, order):
    """Parallel featurization hands over column-major matrices: the cache's CSR arrays (against
    scipy's) and the feature table read back are the same as from a row-major one."""
    from scipy.sparse import csr_matrix

    from shotgun.descriptors import write_features

    X, ok, spec, names = featurize_inputs(SMILES, "ecfp")
    assert not ok.all()  # a NaN row must be left out of the CSR arrays
    Xo = np.asarray(X, order=order)
    cache = FeatureCache(tmp_path / "cache", spec)
    keys = [cache.key(s + str(i)) for i, s in enumerate(SMILES)]
    with np.load(cache.store(keys, Xo, ok), allow_pickle=False) as z:
        ref = csr_matrix(np.where(ok[:, None], X, 0))
        np.testing.assert_array_equal(z["indptr"], ref.indptr)
        np.testing.assert_array_equal(z["indices"], ref.indices)
        np.testing.assert_array_equal(z["data"], ref.data)
    write_features(tmp_path / "f.parquet", SMILES, Xo, ok, spec, names)
    inputs, Xr, okr, specr = read_features(tmp_path / "f.parquet")
    assert list(inputs) == SMILES and specr == spec
    np.testing.assert_array_equal(okr, ok)
    np.testing.assert_array_equal(Xr, X)


def test_featurize_command_writes_rows_in_order(tmp_path):
    csv = tmp_path / "in.csv"
    pd.DataFrame({"smiles": SMILES, "y": range(len(SMILES))}).to_csv(csv, index=False)
    out = tmp_path / "f.parquet"
    proc = run(
        [
            "shotgun",
            "featurize",
            "--data",
            str(csv),
            "--input",
            "smiles",
            "--kind",
            "polymer",
            "--descriptor",
            "fcfp",
            "--descriptor-param",
            "radius=2",
            "--descriptor-param",
            "counts=false",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert "7 rows, 2048 features, 2 failed (rows [3, 6])" in proc.stdout
    inputs, X, ok, spec = read_features(out)
    # pandas reads the empty string back as NaN, written as "nan"
    assert inputs.tolist()[:5] == SMILES[:5] and inputs[6] == SMILES[6]
    np.testing.assert_array_equal(ok, [True, True, False, True, True, False, True])
    assert spec == get_descriptor("fcfp", radius=2, counts=False).spec()
    assert set(np.unique(X[ok])) == {0.0, 1.0}


def test_featurize_command_structures_and_errors(tmp_path):
    from pymatgen.core import Lattice, Structure

    from shotgun.data import structure_to_input

    assert "structure" in INPUT_KINDS and "structure" not in MATERIAL_CLASSES
    s = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    data = tmp_path / "s.parquet"
    pd.DataFrame({"structure": [structure_to_input(s), "{}"]}).to_parquet(data)
    out = tmp_path / "rdf.parquet"
    args = ["shotgun", "featurize", "--data", str(data), "--input", "structure", "--out", str(out)]
    proc = run(
        args + ["--kind", "structure", "--descriptor", "rdf", "--descriptor-param", "cutoff=8"]
    )
    assert proc.returncode == 0, proc.stderr
    _, X, ok, spec = read_features(out)
    assert X.shape == (2, 80) and ok.tolist() == [True, False] and spec["name"] == "rdf"
    proc = run(args + ["--kind", "molecule", "--descriptor", "rdf"])
    assert proc.returncode == 2 and "accepts structure inputs, not molecule" in proc.stderr
    proc = run(args + ["--kind", "structure", "--descriptor", "ofm", "--descriptor-param", "x=1"])
    assert proc.returncode == 2 and "no parameter x" in proc.stderr
