import numpy as np
import pytest

from shotgun.descriptors import featurize, get_descriptor

FINGERPRINTS = ["ecfp", "fcfp", "atom_pair", "torsion", "rdkit_fp", "maccs"]


@pytest.mark.parametrize("name", FINGERPRINTS)
def test_fingerprints_basic_and_polymer_star(name):
    d = get_descriptor(name)
    inputs = [
        "OCC",
        "CCO",
        "*CC*",
        "CC",
        "*CC(C)*",
        "*C(C)C*",
        "*c1ccc(*)cc1",
        "c1ccccc1",
        "",
        "not_smiles",
    ]
    X, ok = d.featurize(inputs)
    np.testing.assert_array_equal(ok, [True] * 8 + [False] * 2)
    assert X.dtype == np.float32 and X.shape == (len(inputs), d.n_features)
    assert len(d.feature_names()) == d.n_features
    assert np.isnan(X[~ok]).all() and np.isfinite(X[ok]).all()
    assert (X[ok] >= 0).all() and (X[ok] == np.round(X[ok])).all()
    np.testing.assert_array_equal(X[0], X[1])  # two spellings of ethanol
    np.testing.assert_array_equal(X[4], X[5])  # two spellings of polypropylene
    # `*` is kept as a dummy atom: attachment points change the fingerprint
    assert not np.array_equal(X[2], X[3])
    assert not np.array_equal(X[6], X[7])


@pytest.mark.parametrize("name", ["ecfp", "fcfp", "atom_pair", "torsion", "rdkit_fp"])
def test_counts_and_bits_agree(name):
    smiles = ["CC(C)CO", "c1ccccc1CCN", "*CC(*)c1ccccc1"]
    Xc, _ = get_descriptor(name, counts=True, n_bits=1024).featurize(smiles)
    Xb, _ = get_descriptor(name, counts=False, n_bits=1024).featurize(smiles)
    assert Xc.shape == (3, 1024) and set(np.unique(Xb)) <= {0.0, 1.0}
    assert Xc.max() > 1
    if name in ("atom_pair", "torsion"):  # bits use RDKit's count simulation
        assert Xb.sum(axis=1).min() > (Xc > 0).sum(axis=1).min()
    else:
        np.testing.assert_array_equal(Xb > 0, Xc > 0)


def test_fcfp_uses_pharmacophoric_invariants():
    # F and Cl are both halogens for FCFP (radius 0), distinct atoms for ECFP
    e, _ = get_descriptor("ecfp", radius=0).featurize(["CF", "CCl"])
    f, _ = get_descriptor("fcfp", radius=0).featurize(["CF", "CCl"])
    assert not np.array_equal(e[0], e[1])
    np.testing.assert_array_equal(f[0], f[1])


def test_maccs_matches_rdkit_keys():
    from rdkit import Chem
    from rdkit.Chem import MACCSkeys

    X, ok = get_descriptor("maccs").featurize(["c1ccccc1O"])
    keys = MACCSkeys.GenMACCSKeys(Chem.MolFromSmiles("c1ccccc1O"))
    assert X.shape == (1, 167) and X[0, 0] == 0
    assert np.flatnonzero(X[0]).tolist() == list(keys.GetOnBits())


def test_parameters_change_fingerprints():
    smi = ["CCCCCCCCCCCC(=O)O"]
    a, _ = get_descriptor("atom_pair", max_distance=30).featurize(smi)
    b, _ = get_descriptor("atom_pair", max_distance=3).featurize(smi)
    assert a.sum() > b.sum()
    r2, _ = get_descriptor("rdkit_fp", max_path=2).featurize(smi)
    r7, _ = get_descriptor("rdkit_fp").featurize(smi)
    assert r7.sum() > r2.sum()
    with pytest.raises(ValueError):
        get_descriptor("ecfp", radius=-1)
    with pytest.raises(ValueError, match="n_bits"):
        get_descriptor("torsion", n_bits=0)


def test_rdkit_2d_values_and_polymer_capping():
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    d = get_descriptor("rdkit_2d")
    names = d.feature_names()
    assert d.n_features == len(Descriptors.descList) >= 200
    assert {"MolWt", "TPSA", "MolLogP", "NumHDonors"} <= set(names)
    X, ok = d.featurize(["CCO", "*CC*", "CC", "*c1ccc(*)cc1", "c1ccccc1", "*CC(*)C(=O)O", "bad(("])
    np.testing.assert_array_equal(ok, [True] * 6 + [False])
    col = {n: j for j, n in enumerate(names)}
    assert X[0, col["MolWt"]] == pytest.approx(
        Descriptors.MolWt(Chem.MolFromSmiles("CCO")), rel=1e-6
    )
    # `*` is capped with H: a repeat unit is described by the molecule of its atoms
    np.testing.assert_allclose(X[1], X[2], rtol=1e-6)
    np.testing.assert_allclose(X[3], X[4], rtol=1e-6)
    acrylic = Descriptors.MolWt(Chem.MolFromSmiles("CCC(=O)O"))
    assert X[5, col["MolWt"]] == pytest.approx(acrylic, rel=1e-6)
    assert X[5, col["NumHDonors"]] == 1
    assert np.isfinite(X[ok]).all() and np.isnan(X[~ok]).all()


def test_rdkit_2d_non_finite_values_flag_the_row(monkeypatch):
    from shotgun.descriptors import rdkit_2d

    funcs = rdkit_2d.descriptor_list()
    bad = (funcs[0][0], lambda mol: float("nan") if mol.GetNumAtoms() > 2 else 1.0)
    huge = (funcs[1][0], lambda mol: 1e300 if mol.GetNumAtoms() > 5 else 2.0)
    monkeypatch.setattr(rdkit_2d, "descriptor_list", lambda: (bad, huge) + funcs[2:])
    d = get_descriptor("rdkit_2d")
    X, ok = d.featurize(["CC", "CCC", "CCCCCCC", "CO"])
    np.testing.assert_array_equal(ok, [True, False, False, True])
    assert d.last_failures == {funcs[0][0]: 2, funcs[1][0]: 1}
    assert np.isnan(X[~ok]).all() and np.isfinite(X[ok]).all()


def test_parallel_fingerprints_equal_serial():
    rng = np.random.default_rng(1)
    base = ["CCO", "c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "*CC(*)c1ccccc1", "bad((", "C" * 300]
    smiles = [base[i] for i in rng.integers(0, len(base), 2500)]
    d = get_descriptor("ecfp")
    X1, ok1 = d.featurize(smiles)
    X2, ok2 = featurize(d, smiles, n_workers=2, chunk_size=600)
    np.testing.assert_array_equal(ok1, ok2)
    np.testing.assert_array_equal(X1, X2)  # NaN rows compare equal too
    assert np.nanmax(X1) > 255  # counts beyond uint8 travel back exactly
