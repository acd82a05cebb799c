import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import run
from shotgun.data import (
    DatasetError,
    canonicalize,
    clean,
    load_dataset,
    load_datasets,
    prepare,
    read_columns,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "data"
CONFIGS = sorted((ROOT / "config" / "datasets").glob("*.yaml"))
# Every bundled source: data/README.md describes each; matbench_mp_is_metal is left out there.
EXPECTED = {
    "qm9",
    "qm8",
    "esol",
    "lipophilicity",
    "radonpy_pi1070",
    "open_polymer_prediction_2025",
    "polyinfo_tg",
    "matbench_mp_e_form",
    "matbench_mp_gap",
    "matbench_log10_gvrh",
    "matbench_log10_kvrh",
    "matbench_perovskites_dhf",
    "matbench_dielectric_n",
    "matbench_expt_gap",
    "matbench_expt_is_metal",
    "matbench_glass",
    "matbench_phonons",
    "matbench_jdft2d",
    "mp_e_hull",
    "mp_mu_b",
    "mp_bulk_modulus",
    "mp_shear_modulus",
    "mp_elastic_anisotropy",
    "aflow_egap",
    "aflow_energy_atom",
    "aflow_ael_bulk_modulus_vrh",
    "aflow_ael_shear_modulus_vrh",
    "aflow_ael_debye_temperature",
    "aflow_agl_thermal_expansion_300k",
    "critexam_ef",
    "critexam_ed",
    "oqmd_bandgap",
    "mp_transport_boltztrap",
    "megnet_bulk_moduli_100",
}


def write_yaml(tmp_path, doc, stem=None):
    path = tmp_path / f"{stem or doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def dataset_doc(name, file, material_class, input_col="smiles", duplicates="mean", **props):
    return {
        "name": name,
        "file": str(file),
        "material_class": material_class,
        "input": input_col,
        "duplicates": duplicates,
        "citation": "test",
        "license": "CC0-1.0",
        "properties": props or {"y": {"unit": "1"}},
    }


def read_quarantine(out):
    return pd.read_csv(out / "quarantine.csv", keep_default_na=False)


def check_counts(report):
    for entry in report["properties"].values():
        assert entry["rows_in"] == report["rows_in"]
        assert (
            entry["rows_in"]
            == entry["kept"] + sum(entry["quarantined"].values()) + entry["subsampled_out"]
        )


# ------------------------------------------------------------------ bundled configs


def test_bundled_configs_are_complete():
    assert set(load_datasets(ROOT / "config" / "datasets")) == EXPECTED


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_bundled_config_matches_file_header(path):
    ds = load_dataset(path)
    header = set(read_columns(ds, ROOT))
    assert ds.input in header
    for prop in ds.properties.values():
        assert prop.column in header, prop.name
        assert prop.unit
    # bundled data live in the repository, next to their provenance
    assert ds.resolve(ROOT).is_relative_to(ROOT / "data")
    assert Path(ds.file).name in (ROOT / "data" / "README.md").read_text()


def test_at_least_80_source_properties():
    datasets = load_datasets(ROOT / "config" / "datasets")
    assert sum(len(d.properties) for d in datasets.values()) >= 80
    assert {d.material_class for d in datasets.values()} == {
        "molecule",
        "polymer",
        "inorganic",
        "structure",
    }
    qm8 = datasets["qm8"].properties
    assert len(qm8) == 12 and qm8["f2_CAM"].column == "f2-CAM"
    assert len(datasets["open_polymer_prediction_2025"].properties) == 5
    assert len(datasets["mp_transport_boltztrap"].properties) == 10


def test_qm9_and_radonpy_declare_properties():
    qm9 = load_dataset(ROOT / "config/datasets/qm9.yaml")
    assert len(qm9.properties) == 12 and qm9.properties["cv"].unit == "cal/mol/K"
    radon = load_dataset(ROOT / "config/datasets/radonpy_pi1070.yaml")
    assert len(radon.properties) >= 12
    for name in ("thermal_diffusivity", "bulk_modulus", "compressibility"):
        assert radon.properties[name].transform == "log10"
    bulk = radon.properties["bulk_modulus"]
    assert (bulk.unit, bulk.raw_unit) == ("log10(Pa)", "Pa")


# ------------------------------------------------------------------- broken YAML


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda d: d["properties"]["y"].pop("unit"), "properties.y.unit"),
        (lambda d: d.update(material_class="alloy"), "material_class"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["properties"]["y"].update(transform="ln"), "properties.y.transform"),
        (lambda d: d.update(name="other"), "name"),
    ],
)
def test_broken_yaml_names_file_and_key(tmp_path, mutate, key):
    doc = dataset_doc("broken", "x.csv", "molecule")
    mutate(doc)
    path = write_yaml(tmp_path, doc, stem="broken")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    assert str(path) in str(exc.value) and key in str(exc.value)


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nproperties: [unclosed\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.yaml: line \d"):
        load_dataset(path)


# --------------------------------------------------------------- canonicalization


def test_canonicalize_reason_codes():
    canon, why = canonicalize(["OCC", "C1CC", "", float("nan")], "molecule")
    assert canon[0] == "CCO" and why == [None, "invalid_smiles", "missing_input", "missing_input"]
    canon, why = canonicalize(["[*]CC[*]", "*CC", "CC"], "polymer")
    assert canon[0] == "*CC*" and why == [None, "polymer_star_count", "polymer_star_count"]
    canon, why = canonicalize(["K4Mn4O8", "Xx2O", "Fe-1O", "Fe0O2", "NaCl"], "inorganic")
    assert canon[0] == "KMnO2" and canon[4] == "NaCl"
    assert why == [None, "invalid_formula", "invalid_formula", "invalid_formula", None]


# ------------------------------------------------------------- prepare, fixtures


def test_prepare_molecule_fixture(tmp_path):
    ds = load_dataset(FIXTURES / "molecules.yaml")
    out = tmp_path / "out"
    report = prepare(ds, out, root=FIXTURES)
    check_counts(report)

    a, b = report["properties"]["a"], report["properties"]["b"]
    assert a["quarantined"] == {
        "invalid_smiles": 1,
        "missing_input": 1,
        "missing_target": 1,
        "non_finite_target": 1,
        "out_of_range": 1,
        "non_numeric_target": 1,
        "duplicate_merged": 2,
    }
    assert a["kept"] == 1  # only CCO (rows 1, 2, 8) survives for "a"
    assert b["quarantined"]["log_of_nonpositive"] == 2 and b["kept"] == 3

    qa = pd.read_parquet(out / "a.parquet")
    assert list(qa.columns) == ["input", "target"] and qa["target"].dtype == np.float64
    # rows 1, 2, 8 are CCO with a = 1, 3, 5 -> mean 3
    assert qa["input"].tolist() == ["CCO"] and qa["target"].item() == pytest.approx(3.0)
    qb = pd.read_parquet(out / "b.parquet").set_index("input")["target"]
    # log10 of 10, 100, 1000 averaged -> 2; benzene keeps log10(5)
    assert qb["CCO"] == pytest.approx(2.0) and qb["c1ccccc1"] == pytest.approx(np.log10(5))

    q = read_quarantine(out)
    assert set(q.columns) == {"row", "property", "input", "reason"}
    reasons = {(r.row, r.property): r.reason for r in q.itertuples()}
    assert reasons[(3, "a")] == reasons[(3, "b")] == "invalid_smiles"
    assert reasons[(4, "a")] == "missing_target"
    assert reasons[(5, "a")] == "non_finite_target" and reasons[(5, "b")] == "log_of_nonpositive"
    assert reasons[(6, "b")] == "missing_input"
    assert reasons[(7, "a")] == "out_of_range" and reasons[(7, "b")] == "log_of_nonpositive"
    assert reasons[(2, "a")] == reasons[(8, "b")] == "duplicate_merged"
    assert reasons[(9, "a")] == "non_numeric_target"
    assert json.loads((out / "report.json").read_text()) == report


def test_prepare_polymer_fixture(tmp_path):
    doc = dataset_doc("polymers", FIXTURES / "polymers.csv", "polymer", duplicates="max")
    report = prepare(load_dataset(write_yaml(tmp_path, doc)), tmp_path / "out", root=tmp_path)
    check_counts(report)
    assert report["properties"]["y"]["quarantined"] == {
        "polymer_star_count": 2,
        "duplicate_merged": 1,
    }
    table = pd.read_parquet(tmp_path / "out" / "y.parquet")
    assert len(table) == 2 and table["input"].iloc[0] == "*CC*"
    assert table["target"].tolist() == [5.0, 3.0]  # max of rows 1 and 5, ordered by first row


@pytest.mark.parametrize(
    "policy, expected, reason",
    [
        ("first", {"KMnO2": 1.0, "NaCl": 6.0}, "duplicate_merged"),
        ("mean", {"KMnO2": 7 / 3, "NaCl": 6.5}, "duplicate_merged"),
        ("min", {"KMnO2": 1.0, "NaCl": 6.0}, "duplicate_merged"),
        ("drop", {}, "duplicate_dropped"),
    ],
)
def test_prepare_inorganic_duplicate_policies(tmp_path, policy, expected, reason):
    doc = dataset_doc("inorganic", FIXTURES / "inorganic.csv", "inorganic", "formula", policy)
    report = prepare(load_dataset(write_yaml(tmp_path, doc)), tmp_path / "out", root=tmp_path)
    check_counts(report)
    entry = report["properties"]["y"]
    assert entry["quarantined"]["invalid_formula"] == 3
    assert entry["quarantined"][reason] == (5 if policy == "drop" else 3)
    table = pd.read_parquet(tmp_path / "out" / "y.parquet")
    assert table.set_index("input")["target"].to_dict() == pytest.approx(expected)


def test_prepare_subsample_is_seeded(tmp_path):
    ds = load_dataset(ROOT / "config/datasets/esol.yaml")
    r1 = prepare(ds, tmp_path / "s1", root=ROOT, max_rows=50, seed=3)
    r2 = prepare(ds, tmp_path / "s2", root=ROOT, max_rows=50, seed=3)
    check_counts(r1)
    assert r1 == r2
    entry = r1["properties"]["logSolubility"]
    assert entry["kept"] == 50 and entry["subsampled_out"] == 1117 - 50
    t1, t2 = (pd.read_parquet(tmp_path / s / "logSolubility.parquet") for s in ("s1", "s2"))
    pd.testing.assert_frame_equal(t1, t2)


# ----------------------------------------------------------------- prepare, real data


def test_prepare_esol(tmp_path):
    ds = load_dataset(ROOT / "config/datasets/esol.yaml")
    report = prepare(ds, tmp_path, root=ROOT)
    check_counts(report)
    entry = report["properties"]["logSolubility"]
    assert (
        report["rows_in"] == 1128
        and entry["kept"] + entry["quarantined"].get("duplicate_merged", 0) == 1128
    )
    table = pd.read_parquet(tmp_path / "logSolubility.parquet")
    assert table["input"].is_unique and len(table) == entry["kept"]
    assert np.isfinite(table["target"]).all()


def test_prepare_kvrh_merges_unit_cell_formulas(tmp_path):
    ds = load_dataset(ROOT / "config/datasets/matbench_log10_kvrh.yaml")
    report = prepare(ds, tmp_path, root=ROOT)
    check_counts(report)
    raw = pd.read_csv(ds.resolve(ROOT))
    raw["canon"] = canonicalize(raw["formula"].tolist(), "inorganic")[0]
    table = pd.read_parquet(tmp_path / "log10_kvrh.parquet").set_index("input")["target"]
    assert table.index.is_unique and len(table) == raw["canon"].nunique()
    assert report["properties"]["log10_kvrh"]["quarantined"]["duplicate_merged"] == len(raw) - len(
        table
    )
    # compositions written with different unit-cell formulas are merged into one mean value
    spellings = raw.groupby("canon")["formula"].nunique()
    multi = spellings[spellings > 1].index
    assert len(multi) > 0
    for canon in multi[:20]:
        assert table[canon] == pytest.approx(raw.loc[raw["canon"] == canon, "target"].mean())


# ------------------------------------------------------------------- file errors


def _prepare_file(tmp_path, content: bytes | None, props=None):
    data = tmp_path / "table.csv"
    if content is not None:
        data.write_bytes(content)
    doc = dataset_doc("table", "table.csv", "molecule", **(props or {}))
    return prepare(load_dataset(write_yaml(tmp_path, doc)), tmp_path / "out", root=tmp_path), data


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"table\.csv: data file not found"):
        _prepare_file(tmp_path, None)


def test_missing_column(tmp_path):
    with pytest.raises(
        DatasetError, match=r"table\.csv: line 1 \(header\): missing column\(s\) \['z'\]"
    ):
        _prepare_file(tmp_path, b"smiles,y\nCCO,1\n", {"z": {"unit": "1"}})


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
def test_empty_file(tmp_path, content):
    with pytest.raises(DatasetError, match=r"table\.csv: empty file"):
        _prepare_file(tmp_path, content)


def test_header_only_file(tmp_path):
    with pytest.raises(DatasetError, match=r"table\.csv: no data rows"):
        _prepare_file(tmp_path, b"smiles,y\n")


def test_non_utf8_file(tmp_path):
    with pytest.raises(DatasetError, match=r"table\.csv: line 3 \(data row 2\): not valid UTF-8"):
        _prepare_file(tmp_path, b"smiles,y\nCCO,1\nCC\xff,2\n")


# --------------------------------------------------------- real data, new cleaning options


def _report(name):
    return clean(load_dataset(ROOT / f"config/datasets/{name}.yaml"), ROOT)


def test_sparse_polymer_columns_and_star_count():
    tables, quarantine, report = _report("open_polymer_prediction_2025")
    check_counts(report)
    raw = pd.read_csv(ROOT / "data/polymers/open_polymer_prediction_2025.csv")
    for prop in ("Tg", "FFV", "Tc", "Density", "Rg"):
        entry = report["properties"][prop]
        assert entry["quarantined"]["polymer_star_count"] == 18
        assert (
            entry["kept"] + entry["quarantined"]["polymer_star_count"]
            >= raw[prop].notna().sum() - 18
        )
        assert (tables[prop]["input"].str.count(r"\*") == 2).all()
    assert report["properties"]["Tg"]["kept"] == 511
    assert set(quarantine["reason"]) == {"missing_target", "polymer_star_count"}


def test_qm8_oscillator_strengths_are_nonnegative():
    tables, _, report = _report("qm8")
    check_counts(report)
    assert report["properties"]["f1_CC2"]["quarantined"] == {
        "duplicate_merged": 20,
        "out_of_range": 38,
    }
    assert all((tables[p]["target"] >= 0).all() for p in tables if p.startswith("f"))
    assert tables["E1_CC2"]["target"].between(0.05, 0.6).all()  # Hartree, not eV


def test_unit_conversion_and_ground_state_policy():
    tables, _, report = _report("matbench_perovskites_dhf")
    check_counts(report)
    raw = pd.read_csv(ROOT / "data/inorganic/matbench_perovskites_dhf.csv")
    raw["canon"] = canonicalize(raw["formula"].tolist(), "inorganic")[0]
    expected = raw.groupby("canon")["target"].min() / 5  # eV per 5-atom cell -> eV/atom
    got = tables["dhf"].set_index("input")["target"]
    assert report["properties"]["dhf"]["unit"] == "eV/atom" and len(got) == 9646
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)


def test_abs_and_bounds_quarantine(tmp_path):
    assert load_dataset(ROOT / "config/datasets/mp_mu_b.yaml").properties["mu_b"].transform == "abs"
    (tmp_path / "m.csv").write_text("formula,m\nFe3O4,-4.0\nFe6O8,4.2\nNiO,2\n")
    doc = dataset_doc("m", "m.csv", "inorganic", "formula", m={"unit": "mu_B", "transform": "abs"})
    tables, _, _ = clean(load_dataset(write_yaml(tmp_path, doc)), tmp_path)
    assert tables["m"].set_index("input")["target"].to_dict() == pytest.approx(
        {"Fe3O4": 4.1, "NiO": 2.0}
    )
    _, q, report = _report("aflow_energy_atom")
    check_counts(report)
    assert report["properties"]["energy_atom"]["quarantined"] == {"out_of_range": 10}
    assert "Gd1Ni5" in set(q["input"])
    _, _, report = _report("mp_elastic_anisotropy")
    assert report["properties"]["elastic_anisotropy"]["quarantined"] == {"out_of_range": 376}


def test_boltztrap_units_and_logs():
    ds = load_dataset(ROOT / "config/datasets/mp_transport_boltztrap.yaml")
    assert ds.input == "pretty_formula"
    assert ds.properties["sigma_p"].unit == "log10(S/m)" and ds.properties["S_n"].unit == "uV/K"
    assert ds.properties["kappa_n"].unit == "log10(W/(m K))"
    tables, _, report = clean(ds, ROOT)
    check_counts(report)
    raw = pd.read_csv(ds.resolve(ROOT))
    cs = raw[raw["pretty_formula"] == "Cs"]
    sigma = tables["sigma_p"].set_index("input")["target"]["Cs"]
    assert sigma == pytest.approx(
        np.log10(cs["sigma_p"] * 100).mean()
    )  # geometric mean of polymorphs
    for p in ds.properties:
        assert (
            report["properties"][p]["kept"] == raw["pretty_formula"].nunique() - 1
        )  # Co2O3 spelled twice
    # the declared units are consistent: PF = S^2 sigma (uV/K, 1/(Ohm cm) -> uW/(cm K^2))
    ratio = raw["PF_p"] / (raw["S_p"] ** 2 * raw["sigma_p"] * 1e-6)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)


def test_structure_dataset_from_json():
    from pymatgen.core import Structure

    ds = load_dataset(ROOT / "config/datasets/megnet_bulk_moduli_100.yaml")
    assert ds.material_class == "structure"
    tables, _, report = clean(ds, ROOT)
    check_counts(report)
    table = tables["bulk_modulus"]
    assert len(table) == 100
    raw = json.loads((ROOT / ds.file).read_text())
    first = Structure.from_dict(json.loads(table["input"].iloc[0]))
    assert (
        first.composition.reduced_formula
        == Structure.from_dict(raw["structures"][0]).composition.reduced_formula
    )
    assert table["target"].iloc[0] == pytest.approx(raw["bulk_moduli"][0])


def test_canonical_structure_is_site_order_invariant():
    from pymatgen.core import Lattice, Structure

    coords = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    shifted = [[0.5 + x for x in c] for c in coords]
    a = Structure(Lattice.cubic(5.6), ["Na"] * 4 + ["Cl"] * 4, coords + shifted)
    b = Structure(Lattice.cubic(5.6), ["Cl"] * 4 + ["Na"] * 4, shifted[::-1] + coords[::-1])
    canon, why = canonicalize(
        [json.dumps(a.as_dict()), json.dumps(b.as_dict()), "{}", "not json"], "structure"
    )
    assert canon[0] == canon[1] and why == [None, None, "invalid_structure", "invalid_structure"]
    assert Structure.from_str(canon[0], fmt="json") == a


def test_json_table_of_records(tmp_path):
    (tmp_path / "t.json").write_text(
        json.dumps(
            [{"smiles": "CCO", "y": 1.5}, {"smiles": "C1CC", "y": 2}, {"smiles": "c1ccccc1"}]
        )
    )
    doc = dataset_doc("t", "t.json", "molecule")
    _, q, report = clean(load_dataset(write_yaml(tmp_path, doc)), tmp_path)
    check_counts(report)
    assert report["properties"]["y"]["quarantined"] == {"invalid_smiles": 1, "missing_target": 1}
    (tmp_path / "t.json").write_text('{"smiles": ["CCO"], "y": [1, 2]}')
    with pytest.raises(DatasetError, match=r"t\.json: column arrays differ in length"):
        clean(load_dataset(write_yaml(tmp_path, doc)), tmp_path)


def test_placeholders_fail_validation(tmp_path):
    doc = dataset_doc("todo", "x.csv", "molecule", y={"unit": "TODO"})
    doc["license"] = "TODO: licence"
    with pytest.raises(DatasetError) as exc:
        load_dataset(write_yaml(tmp_path, doc))
    assert "properties.y.unit: placeholder 'TODO' must be filled in" in str(exc.value)
    assert "license: placeholder" in str(exc.value)


def test_conversion_keeps_units_true(tmp_path):
    doc = dataset_doc(
        "conv",
        "c.csv",
        "inorganic",
        "formula",
        k={"unit": "Pa", "convert": {"factor": 1e-9, "unit": "GPa"}, "transform": "log10"},
    )
    (tmp_path / "c.csv").write_text("formula,k\nNaCl,2.5e10\nMgO,1.6e11\n")
    ds = load_dataset(write_yaml(tmp_path, doc))
    assert (ds.properties["k"].unit, ds.properties["k"].raw_unit) == ("log10(GPa)", "Pa")
    tables, _, _ = clean(ds, tmp_path)
    assert tables["k"]["target"].tolist() == pytest.approx([np.log10(25), np.log10(160)])
    doc["properties"]["k"]["convert"] = {"factor": 0, "unit": "GPa"}
    with pytest.raises(DatasetError, match="properties.k.convert.factor"):
        load_dataset(write_yaml(tmp_path, doc))


# ------------------------------------------------------------------- summaries and CLI

TINY = FIXTURES / "datasets"


def test_summary_is_cached_by_content(tmp_path):
    src = tmp_path / "datasets"
    shutil.copytree(TINY, src)
    ds = load_dataset(src / "tiny_esol.yaml")
    first = summarize(ds, ROOT, tmp_path / "cache")
    assert summarize(ds, ROOT, tmp_path / "cache", compute=False) == first
    entries = list((tmp_path / "cache" / "datasets" / "tiny_esol").glob("*.json"))
    assert len(entries) == 1
    # a changed declaration is a new key: the old entry no longer answers
    text = (
        (src / "tiny_esol.yaml")
        .read_text()
        .replace("    unit: log10(mol/L)", "    unit: log10(mol/L)\n    max: -3")
    )
    (src / "tiny_esol.yaml").write_text(text)
    ds = load_dataset(src / "tiny_esol.yaml")
    assert summarize(ds, ROOT, tmp_path / "cache", compute=False) is None
    second = summarize(ds, ROOT, tmp_path / "cache")
    assert second["properties"]["logSolubility"]["quarantined"]["out_of_range"] > 0
    assert len(list(entries[0].parent.glob("*.json"))) == 1


@pytest.fixture
def shotgun(capsys):
    """The command line, in this process: (exit code, stdout, stderr)."""
    from shotgun.cli import main

    def call(*args):
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return call


def test_cli_datasets_list_json(tmp_path, shotgun):
    rc, out, err = shotgun(
        "datasets",
        "list",
        "--datasets",
        TINY,
        "--root",
        ROOT,
        "--cache-dir",
        tmp_path,
        "--format",
        "json",
    )
    assert rc == 0, err
    records = json.loads(out)
    assert [(r["dataset"], r["property"]) for r in records] == [
        ("tiny_esol", "logSolubility"),
        ("tiny_kvrh", "log10_kvrh"),
    ]
    assert all(
        set(r) == {"dataset", "property", "material_class", "unit", "rows", "quarantined"}
        for r in records
    )
    assert (
        records[0]["rows"] == 60
        and records[0]["quarantined"] == 0
        and records[1]["material_class"] == "inorganic"
    )
    rc, out, _ = shotgun(
        "datasets", "list", "--datasets", TINY, "--root", ROOT, "--cache-dir", tmp_path
    )
    assert rc == 0 and "tiny_kvrh" in out and "2 datasets, 2 properties" in out


def test_cli_datasets_list_registers_every_bundled_property():
    proc = run(["shotgun", "datasets", "list", "--no-counts", "--format", "json"])
    rc, out, err = proc.returncode, proc.stdout, proc.stderr
    assert rc == 0, err
    records = json.loads(out)
    assert len(records) >= 80 and {r["dataset"] for r in records} == EXPECTED
    assert all(r["rows"] is None for r in records)


def test_cli_datasets_validate(shotgun):
    rc, out, err = shotgun("datasets", "validate", "--root", ROOT, *CONFIGS)
    assert rc == 0, err
    assert out.count(": ok (") == len(CONFIGS)


def test_cli_datasets_validate_reports_bad_files(tmp_path, shotgun):
    doc = dataset_doc("bad", ROOT / "data/molecules/esol.csv", "molecule", y={"unit": "1"})
    rc, _, err = shotgun(
        "datasets", "validate", "--root", ROOT, write_yaml(tmp_path, doc), TINY / "tiny_esol.yaml"
    )
    assert rc == 1 and "bad.yaml: columns ['y'] are not in" in err
    doc["material_class"] = "alloy"
    rc, _, err = shotgun("datasets", "validate", write_yaml(tmp_path, doc))
    assert rc == 1 and "bad.yaml: material_class:" in err


def test_cli_datasets_add_then_validate(tmp_path, shotgun):
    csv = tmp_path / "my_polymers.csv"
    pd.DataFrame(
        {
            "id": [1, 2, 3],
            "repeat_unit": ["*CC*", "*CC(*)C", "*CC(*)c1ccccc1"],
            "Tg": [-20.0, 5.0, 100.0],
            "note": ["a", "b", "c"],
        }
    ).to_csv(csv, index=False)
    out_dir = tmp_path / "datasets"
    rc, out, err = shotgun("datasets", "add", csv, "--datasets", out_dir, "--root", tmp_path)
    assert rc == 0, err
    path = out_dir / "my_polymers.yaml"
    doc = yaml.safe_load(path.read_text())
    assert (doc["input"], doc["material_class"], doc["file"]) == (
        "repeat_unit",
        "polymer",
        "my_polymers.csv",
    )
    assert list(doc["properties"]) == ["Tg"] and doc["properties"]["Tg"]["unit"] == "TODO"
    rc, _, err = shotgun("datasets", "validate", path, "--root", tmp_path)
    assert rc == 1 and "properties.Tg.unit: placeholder" in err and "citation: placeholder" in err
    rc, _, err = shotgun("datasets", "add", csv, "--datasets", out_dir, "--root", tmp_path)
    assert rc == 2 and "exists" in err
    rc, out, err = shotgun(
        "datasets",
        "add",
        csv,
        "--datasets",
        out_dir,
        "--root",
        tmp_path,
        "--force",
        "--unit",
        "Tg=degC",
        "--description",
        "three polymers",
        "--citation",
        "lab notebook",
        "--license",
        "CC0-1.0",
    )
    assert rc == 0, err
    rc, out, err = shotgun("datasets", "validate", path, "--root", tmp_path)
    assert rc == 0, err
    report = prepare(load_dataset(path), tmp_path / "out", root=tmp_path)
    assert report["properties"]["Tg"]["kept"] == 3


def test_cli_datasets_add_guesses_formulas(tmp_path, shotgun):
    out_dir = tmp_path / "datasets"
    rc, out, err = shotgun(
        "datasets",
        "add",
        FIXTURES / "tiny_kvrh.csv",
        "--datasets",
        out_dir,
        "--name",
        "kv",
        "--unit",
        "target=log10(GPa)",
        "--root",
        ROOT,
    )
    assert rc == 0, err
    doc = yaml.safe_load((out_dir / "kv.yaml").read_text())
    assert (doc["input"], doc["material_class"]) == ("formula", "inorganic")
    assert (
        doc["file"] == "tests/data/tiny_kvrh.csv"
        and doc["properties"]["target"]["unit"] == "log10(GPa)"
    )
    rc, _, err = shotgun(
        "datasets", "add", FIXTURES / "tiny_kvrh.csv", "--datasets", out_dir, "--unit", "nope=1"
    )
    assert rc == 2 and "nope" in err


# ------------------------------------------------------------------------ the workflow


def _planned(stdout):
    """(rule, dataset) of every job in a Snakemake dry-run listing."""
    jobs = set()
    for block in stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        m = re.search(r"wildcards: dataset=([A-Za-z0-9_]+)", block)
        jobs.add((rule, m.group(1) if m else None))
    return jobs


@pytest.mark.slow
def test_adding_a_source_trains_only_its_cells(tmp_path):
    config = {
        "results": str(tmp_path / "results"),
        "library_version": "0.0.0-test",
        "seed": 0,
        "accelerator": "cpu",
        "shard_size": 1,
        "train_overrides": ["trainer.max_epochs=2"],
        "datasets_dir": str(TINY.relative_to(ROOT)),
        "sources": {"tiny_esol": {"descriptors": ["ecfp"], "n_models": 1}},
    }
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(config))
    proc = run(["snakemake", "--profile", "profiles/local", "--configfile", first, "--cores", "2"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shard = tmp_path / "results/models/tiny_esol/logSolubility/ecfp/0-0"
    assert shard.is_dir()

    config["sources"]["tiny_kvrh"] = {"descriptors": ["composition"], "n_models": 1}
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(config))
    proc = run(
        ["snakemake", "--profile", "profiles/local", "--configfile", second, "--cores", "2", "-n"]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _planned(proc.stdout)
    data_jobs = {j for j in jobs if j[0] in ("prepare", "featurize", "train_shard")}
    assert data_jobs == {
        ("prepare", "tiny_kvrh"),
        ("featurize", "tiny_kvrh"),
        ("train_shard", "tiny_kvrh"),
    }
    assert ("library", None) in jobs  # the library is reassembled with the new shard
