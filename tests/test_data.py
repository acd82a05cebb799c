import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from shotgun.data import DatasetError, canonicalize, load_dataset, load_datasets, prepare

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "data"
CONFIGS = sorted((ROOT / "config" / "datasets").glob("*.yaml"))
EXPECTED = {
    "qm9", "esol", "radonpy_pi1070", "matbench_mp_e_form",
    "matbench_mp_gap", "matbench_log10_gvrh", "matbench_log10_kvrh",
}


def write_yaml(tmp_path, doc, stem=None):
    path = tmp_path / f"{stem or doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def dataset_doc(name, file, material_class, input_col="smiles", duplicates="mean", **props):
    return {
        "name": name, "file": str(file), "material_class": material_class, "input": input_col,
        "duplicates": duplicates, "citation": "test", "license": "CC0-1.0",
        "properties": props or {"y": {"unit": "1"}},
    }


def read_quarantine(out):
    return pd.read_csv(out / "quarantine.csv", keep_default_na=False)


def check_counts(report):
    for entry in report["properties"].values():
        assert entry["rows_in"] == report["rows_in"]
        assert entry["rows_in"] == entry["kept"] + sum(entry["quarantined"].values()) + entry["subsampled_out"]


# ------------------------------------------------------------------ bundled configs


def test_bundled_configs_are_complete():
    assert set(load_datasets(ROOT / "config" / "datasets")) == EXPECTED


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_bundled_config_matches_file_header(path):
    ds = load_dataset(path)
    header = set(pd.read_csv(ds.resolve(ROOT), nrows=0).columns)
    assert ds.input in header
    for prop in ds.properties.values():
        assert prop.column in header, prop.name
        assert prop.unit


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
        "invalid_smiles": 1, "missing_input": 1, "missing_target": 1, "non_finite_target": 1,
        "out_of_range": 1, "non_numeric_target": 1, "duplicate_merged": 2,
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
    assert report["properties"]["y"]["quarantined"] == {"polymer_star_count": 2, "duplicate_merged": 1}
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
    assert report["rows_in"] == 1128 and entry["kept"] + entry["quarantined"].get("duplicate_merged", 0) == 1128
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
    assert report["properties"]["log10_kvrh"]["quarantined"]["duplicate_merged"] == len(raw) - len(table)
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
    with pytest.raises(DatasetError, match=r"table\.csv: line 1 \(header\): missing column\(s\) \['z'\]"):
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
