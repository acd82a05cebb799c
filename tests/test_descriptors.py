from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shotgun.descriptors import DESCRIPTORS, featurize, for_kind, from_spec, get_descriptor
from shotgun.descriptors.composition import (
    CLASSIC_STATS,
    STATS,
    load_element_table,
    mean_shift,
    parse_formula,
)
from shotgun.descriptors.element_table import MAGPIE_CORE, MAGPIE_EXTRA

DATA = Path(__file__).parents[1] / "data"
MAGPIE_22 = [
    "Number",
    "MendeleevNumber",
    "AtomicWeight",
    "MeltingT",
    "Column",
    "Row",
    "CovalentRadius",
    "Electronegativity",
    "NsValence",
    "NpValence",
    "NdValence",
    "NfValence",
    "NValence",
    "NsUnfilled",
    "NpUnfilled",
    "NdUnfilled",
    "NfUnfilled",
    "NUnfilled",
    "GSvolume_pa",
    "GSbandgap",
    "GSmagmom",
    "SpaceGroupNumber",
]


@pytest.fixture(scope="module")
def formulas():
    return pd.read_csv(DATA / "inorganic" / "matbench_mp_e_form.csv.gz")["formula"].tolist()


@pytest.fixture(scope="module")
def qm9_smiles():
    return pd.read_csv(DATA / "molecules" / "qm9.csv.gz", usecols=["smiles"])["smiles"].tolist()


def element_frame():
    symbols, columns, values = load_element_table()
    return pd.DataFrame(values, index=symbols, columns=columns)


# ---------------------------------------------------------------- registry / spec


def test_registry_and_spec_round_trip():
    assert set(DESCRIPTORS) == {
        "composition",
        "organic_composition",
        "ecfp",
        "fcfp",
        "maccs",
        "atom_pair",
        "torsion",
        "rdkit_fp",
        "rdkit_2d",
        "rdf",
        "ofm",
    }
    for d in [get_descriptor(name) for name in DESCRIPTORS] + [
        get_descriptor("composition", stats=["mean", "gmean", "hmean"]),
        get_descriptor("ecfp", radius=2, n_bits=1024, counts=False),
        get_descriptor("atom_pair", n_bits=512, max_distance=10),
        get_descriptor("rdf", cutoff=10, bin_size=0.5),
    ]:
        spec = d.spec()
        assert set(spec) == {"name", "version", "params"}
        rebuilt = from_spec(spec)
        assert rebuilt == d and rebuilt.feature_names() == d.feature_names()
    d = get_descriptor("ecfp")
    assert d.params == {"radius": 3, "n_bits": 2048, "counts": True}
    assert d.kinds == ("molecule", "polymer")
    assert get_descriptor("composition").kinds == ("inorganic",)
    assert d != get_descriptor("ecfp", radius=2)
    with pytest.raises(ValueError, match="version"):
        from_spec({**d.spec(), "version": "0"})


def test_library_specs_rebuild_unchanged():
    """Specs stored with existing models keep rebuilding the same descriptors."""
    comp = from_spec(
        {
            "name": "composition",
            "version": "1",
            "params": {"stats": ["mean", "sum", "var", "max", "min"]},
        }
    )
    assert comp == get_descriptor("composition") and comp.n_features == 290
    ecfp = from_spec(
        {"name": "ecfp", "version": "1", "params": {"radius": 3, "n_bits": 2048, "counts": True}}
    )
    assert ecfp == get_descriptor("ecfp") and ecfp.n_features == 2048
    # gmean/hmean now cover every column: a deliberate new version
    assert get_descriptor("composition", stats=list(STATS)).version == "2"
    with pytest.raises(ValueError, match="version"):
        from_spec({"name": "composition", "version": "1", "params": {"stats": ["gmean"]}})


def test_organic_composition_shares_feature_space():
    for stats in (CLASSIC_STATS, STATS, ["mean", "hmean"]):
        comp = get_descriptor("composition", stats=list(stats))
        org = get_descriptor("organic_composition", stats=list(stats))
        assert org.feature_space() == comp.feature_space()
        assert org.feature_names() == comp.feature_names()
        assert for_kind(comp.spec(), "molecule") == org
        assert for_kind(org.spec(), "inorganic") == comp
        assert for_kind(comp.spec(), "inorganic") == comp
    assert for_kind(get_descriptor("ecfp").spec(), "inorganic") is None
    assert get_descriptor("ecfp").feature_space() != get_descriptor("fcfp").feature_space()
    assert (
        get_descriptor("composition").feature_space()
        != get_descriptor("composition", stats=["mean"]).feature_space()
    )


def test_organic_composition_counts_atoms():
    org = get_descriptor("organic_composition", stats=list(STATS))
    comp = get_descriptor("composition", stats=list(STATS))
    smiles = [
        "CCO",
        "*CC*",
        "*c1ccc(*)cc1",
        "[NH4+].[Cl-]",
        "C[Si](C)(C)O*",
        "[2H]C([2H])[2H]",
        "*",
        "",
        "bad((",
        "[Cf]",
    ]
    X, ok = org.featurize(smiles)
    np.testing.assert_array_equal(ok, [True] * 6 + [False] * 4)
    Xc, okc = comp.featurize(["C2H6O", "C2H4", "C6H4", "NH4Cl", "C3H9OSi", "CH4"])
    assert okc.all()
    np.testing.assert_allclose(X[ok], Xc, rtol=1e-6, atol=1e-9)
    assert np.isnan(X[~ok]).all()


def test_unknown_descriptor_names_known_ones():
    with pytest.raises(ValueError, match="composition"):
        get_descriptor("nope")
    with pytest.raises(ValueError):
        get_descriptor("composition", stats=["median"])


# ---------------------------------------------------------------- composition


def test_element_table_matches_matminer_magpie():
    from matminer.utils.data import MagpieData

    table = element_frame()
    assert table.shape == (94, 58)
    assert table.index[0] == "H" and table.index[-1] == "Pu"
    assert np.isfinite(table.to_numpy()).all()
    raw = MagpieData(impute_nan=False).all_elemental_props
    for col in MAGPIE_22:
        ref = np.array([raw[col][s] for s in table.index])
        known = ~np.isnan(ref)
        assert known.sum() >= 90
        np.testing.assert_array_equal(table[col].to_numpy()[known], ref[known], err_msg=col)


def test_composition_matches_matminer(formulas):
    """500 random formulas, every Magpie column: mean, min, max, var (from std_dev), and the
    geometric/harmonic means (Hölder means p=0, -1) where the column is positive."""
    from matminer.featurizers.composition import ElementProperty
    from matminer.utils.data import MagpieData
    from pymatgen.core import Composition

    rng = np.random.default_rng(0)
    sample = [formulas[i] for i in rng.choice(len(formulas), 500, replace=False)]
    d = get_descriptor("composition", stats=list(STATS))
    X, ok = d.featurize(sample)
    assert ok.all() and np.isfinite(X).all()
    col = {name: j for j, name in enumerate(d.feature_names())}

    columns = load_element_table()[1]
    magpie = MAGPIE_CORE + list(MAGPIE_EXTRA)
    positive = [m for m in magpie if mean_shift()[columns.index(MAGPIE_EXTRA.get(m, m))] == 0]
    data = MagpieData(impute_nan=False)
    featurizers = [
        ElementProperty(data, magpie, ["mean", "minimum", "maximum", "std_dev"], impute_nan=False),
        ElementProperty(data, positive, ["holder_mean::0", "holder_mean::-1"], impute_nan=False),
    ]
    comps = [Composition(f) for f in sample]
    # matminer's std_dev is the unbiased weighted estimator over atomic fractions w:
    # std^2 = sum w (f - mean)^2 / (1 - sum w^2); ours is the population variance.
    unbias = np.array([1 - sum(w**2 for w in c.fractional_composition.values()) for c in comps])
    ours_for = {
        "mean": "mean",
        "minimum": "min",
        "maximum": "max",
        "std_dev": "var",
        "holder_mean::0": "gmean",
        "holder_mean::-1": "hmean",
    }
    n_compared = n_total = 0
    for ep in featurizers:
        ref = np.array([ep.featurize(c) for c in comps], dtype=float)
        for j, label in enumerate(ep.feature_labels()):
            _, stat, feature = label.split(" ")
            ours = X[:, col[f"{ours_for[stat]}:{MAGPIE_EXTRA.get(feature, feature)}"]]
            expected = ref[:, j] ** 2 * unbias if stat == "std_dev" else ref[:, j]
            known = ~np.isnan(expected)
            n_compared += known.sum()
            np.testing.assert_allclose(
                ours[known], expected[known], rtol=1e-6, atol=1e-6, err_msg=label
            )
        n_total += ref.size
    assert n_compared > 0.8 * n_total


def test_composition_sum_and_var_by_hand():
    table = element_frame()
    d = get_descriptor("composition")
    X, ok = d.featurize(["Fe2O3"])
    assert ok.all() and X.dtype == np.float32 and X.shape == (1, 290)
    row = dict(zip(d.feature_names(), X[0].astype(float)))
    fe, o = table.loc["Fe"], table.loc["O"]
    mean = 0.4 * fe + 0.6 * o
    for feature in ["AtomicWeight", "Electronegativity", "MeltingT", "VdWRadius"]:
        assert row[f"sum:{feature}"] == pytest.approx(2 * fe[feature] + 3 * o[feature], rel=1e-6)
        var = 0.4 * (fe[feature] - mean[feature]) ** 2 + 0.6 * (o[feature] - mean[feature]) ** 2
        assert row[f"var:{feature}"] == pytest.approx(var, rel=1e-5)
        assert row[f"max:{feature}"] == pytest.approx(max(fe[feature], o[feature]), rel=1e-6)
    assert row["mean:AtomicWeight"] == pytest.approx((2 * 55.845 + 3 * 15.9994) / 5, rel=1e-6)


def test_gmean_hmean_cover_every_column():
    table = element_frame()
    d = get_descriptor("composition", stats=["gmean", "hmean"])
    names = d.feature_names()
    assert names == [f"gmean:{c}" for c in table.columns] + [f"hmean:{c}" for c in table.columns]
    shift = dict(zip(table.columns, mean_shift()))
    assert shift["AtomicWeight"] == 0 and shift["GSbandgap"] == 1.0
    assert shift["GSenergy_pa"] == pytest.approx(1 - table["GSenergy_pa"].min())
    assert sum(c > 0 for c in shift.values()) == 14
    X, ok = d.featurize(["Fe2O3", "NaCl", "Fe"])
    assert ok.all() and np.isfinite(X).all()
    row = dict(zip(names, X[0].astype(float)))
    fe, o = table.loc["Fe", "AtomicWeight"], table.loc["O", "AtomicWeight"]
    assert row["gmean:AtomicWeight"] == pytest.approx(fe**0.4 * o**0.6, rel=1e-6)
    assert row["hmean:AtomicWeight"] == pytest.approx(1 / (0.4 / fe + 0.6 / o), rel=1e-6)
    # shifted means: in the column's unit, ordered like plain means, f itself for one element
    fe, o, c = table.loc["Fe", "GSenergy_pa"], table.loc["O", "GSenergy_pa"], shift["GSenergy_pa"]
    assert row["gmean:GSenergy_pa"] == pytest.approx((fe + c) ** 0.4 * (o + c) ** 0.6 - c, rel=1e-5)
    assert row["hmean:GSenergy_pa"] == pytest.approx(
        1 / (0.4 / (fe + c) + 0.6 / (o + c)) - c, rel=1e-5
    )
    full = get_descriptor("composition", stats=list(STATS))
    Xf, _ = full.featurize(["Fe2O3", "NaCl", "Fe"])
    s = {
        stat: Xf[:, [j for j, n in enumerate(full.feature_names()) if n.startswith(stat + ":")]]
        for stat in STATS
    }
    tol = 1e-4 * (1 + np.abs(s["mean"]))
    assert (s["min"] <= s["hmean"] + tol).all() and (s["hmean"] <= s["gmean"] + tol).all()
    assert (s["gmean"] <= s["mean"] + tol).all() and (s["mean"] <= s["max"] + tol).all()
    for stat in ("mean", "gmean", "hmean", "max", "min"):
        np.testing.assert_allclose(s[stat][2], table.loc["Fe"].to_numpy(), rtol=1e-5, atol=1e-5)


def test_bad_formulas_are_flagged():
    d = get_descriptor("composition")
    inputs = ["Fe2O3", "Xx2O", "", "Fe-1O", "Fe0O", "Am2O3", "NaCl)", "K4Mn4O8", "Fe2O3(H2O)3"]
    X, ok = d.featurize(inputs)
    np.testing.assert_array_equal(ok, [True, False, False, False, False, False, False, True, True])
    assert np.isnan(X[~ok]).all()
    assert np.isfinite(X[ok]).all()
    X_good, _ = d.featurize(["Fe2O3", "K4Mn4O8"])
    np.testing.assert_array_equal(X[[0, 7]], X_good)


def test_parser_agrees_with_pymatgen(formulas):
    from pymatgen.core import Composition

    symbols = load_element_table()[0]
    for f in formulas[::500] + ["Fe2O3(H2O)3", "Ca(OH)2", "Li0.5CoO2", "C1Pt1"]:
        idx, amt = parse_formula(f)
        expected = Composition(f).get_el_amt_dict()
        assert {symbols[i]: a for i, a in zip(idx, amt)} == pytest.approx(expected)


# ---------------------------------------------------------------- ecfp


def test_ecfp_radius0_counts_by_hand():
    from rdkit import Chem

    smiles = "CC(C)CO"
    mol = Chem.MolFromSmiles(smiles)
    invariants = {}
    for atom in mol.GetAtoms():
        key = (
            atom.GetAtomicNum(),
            atom.GetDegree(),
            atom.GetTotalNumHs(),
            atom.GetFormalCharge(),
            atom.IsInRing(),
        )
        invariants[key] = invariants.get(key, 0) + 1
    # CH3 x2, CH x1, CH2 x1, OH x1
    assert sorted(invariants.values()) == [1, 1, 1, 2]

    X, ok = get_descriptor("ecfp", radius=0, n_bits=2048).featurize([smiles])
    counts = X[0][X[0] > 0]
    assert ok.all() and counts.sum() == mol.GetNumHeavyAtoms() == 5
    assert sorted(counts.astype(int).tolist()) == sorted(invariants.values())
    Xb, _ = get_descriptor("ecfp", radius=0, counts=False).featurize([smiles])
    assert set(np.unique(Xb)) == {0.0, 1.0} and Xb.sum() == len(invariants)
    np.testing.assert_array_equal(Xb[0] > 0, X[0] > 0)


def test_ecfp_canonical_equivalence_and_invalid():
    d = get_descriptor("ecfp")
    X, ok = d.featurize(["OCC", "CCO", "c1ccccc1O", "Oc1ccccc1", "C1CC", "", "not_smiles"])
    np.testing.assert_array_equal(ok, [True, True, True, True, False, False, False])
    np.testing.assert_array_equal(X[0], X[1])
    np.testing.assert_array_equal(X[2], X[3])
    assert not np.array_equal(X[0], X[2])
    assert np.isnan(X[~ok]).all() and np.isfinite(X[ok]).all()
    assert X.dtype == np.float32 and X.shape == (7, 2048)
    assert len(d.feature_names()) == 2048


def test_ecfp_polymer_attachment_points():
    d = get_descriptor("ecfp")
    inputs = ["*CC*", "CC", "*CC(C)*", "*C(C)C*", "*CCC(*)C", "*CC(C)C*"]
    X, ok = d.featurize(inputs)
    assert ok.all()
    assert not np.array_equal(X[0], X[1])  # attachment points are seen
    np.testing.assert_array_equal(X[2], X[3])  # two spellings of polypropylene
    assert not np.array_equal(X[4], X[5])  # same atoms, different attachment positions


# ---------------------------------------------------------------- parallel


def test_parallel_featurize_equals_serial(qm9_smiles):
    d = get_descriptor("ecfp")
    smiles = qm9_smiles[:3000] + ["invalid(("]
    X1, ok1 = d.featurize(smiles)
    X2, ok2 = featurize(d, smiles, n_workers=2)
    np.testing.assert_array_equal(ok1, ok2)
    np.testing.assert_array_equal(X1, X2)
    assert not ok2[-1]


def test_distributed_scheduler_composition(formulas):
    from dask.distributed import LocalCluster

    d = get_descriptor("composition")
    inputs = formulas[:2500] + ["Xx2O"]
    X1, ok1 = d.featurize(inputs)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        X2, ok2 = featurize(d, inputs, scheduler_address=cluster.scheduler_address, chunk_size=700)
    np.testing.assert_array_equal(ok1, ok2)
    np.testing.assert_array_equal(X1, X2)
