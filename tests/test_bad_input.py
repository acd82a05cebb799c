"""The bad-input corpus (tests/data/bad/): every bad row is quarantined with its reason, every
bad file is refused with an error naming the file, the row and the reason. Inputs of another
kind than expected are refused or counted; bad configs and a closed pipe end the command line
with one line, not a traceback."""

import json
import os
import re
import subprocess

import pandas as pd
import pytest

from conftest import BIN, ROOT, run

BAD = ROOT / "tests" / "data" / "bad"

ROW_REASONS = {  # dataset -> {data row: reason}
    "molecules": {
        2: "invalid_smiles",
        3: "invalid_smiles",
        4: "missing_target",
        5: "non_finite_target",
        6: "missing_input",
        7: "duplicate_merged",
        8: "non_finite_target",
    },
    "polymers": {2: "polymer_star_count", 3: "polymer_star_count", 4: "polymer_star_count"},
    "inorganic": {
        2: "invalid_formula",
        3: "invalid_formula",
        4: "invalid_formula",
        5: "duplicate_merged",
        6: "non_numeric_target",
    },
}


def prepare(name, out):
    return run(
        [
            "shotgun",
            "prepare",
            "--dataset",
            str(BAD / f"{name}.yaml"),
            "--root",
            str(BAD),
            "--out",
            str(out),
        ]
    )


@pytest.mark.parametrize("name", sorted(ROW_REASONS))
def test_bad_rows_are_quarantined_with_reasons(name, tmp_path):
    proc = prepare(name, tmp_path)
    assert proc.returncode == 0, proc.stderr
    q = pd.read_csv(tmp_path / "quarantine.csv", keep_default_na=False)
    assert dict(zip(q["row"], q["reason"])) == ROW_REASONS[name]
    report = json.loads((tmp_path / "report.json").read_text())
    n_rows = len(pd.read_csv(BAD / f"{name}.csv", keep_default_na=False))
    ((prop, counts),) = report["properties"].items()
    kept = pd.read_parquet(tmp_path / f"{prop}.parquet")
    assert counts["rows_in"] == n_rows == len(kept) + len(q) + counts["subsampled_out"]


def test_conflicting_duplicates_are_merged_by_the_declared_policy(tmp_path):
    assert prepare("inorganic", tmp_path).returncode == 0
    kept = pd.read_parquet(tmp_path / "e_form.parquet").set_index("input")["target"]
    assert kept["NaCl"] == pytest.approx((-2.0 + -2.4) / 2)  # NaCl and Na2Cl2: mean
    assert kept["KMnO2"] == pytest.approx(-1.8)  # K4Mn4O8 reduced


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing_column", "missing column(s) ['logS']"),
        ("empty", "empty file"),
        ("header_only", "no data rows"),
        ("latin1", "line 3 (data row 2): not valid UTF-8"),
    ],
)
def test_bad_files_are_refused(name, message, tmp_path):
    proc = prepare(name, tmp_path)
    assert proc.returncode == 2
    assert f"{name}.csv" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "report.json").exists()


def _column(path, column):
    from shotgun.data.tables import read_strings

    return read_strings(path)[column].tolist()


def test_inputs_read_as_their_kind():
    """Every input of the bundled formula, SMILES and polymer tables reads as its class; SMILES
    are not read as formulas (`CCO` is ethanol, not C2O) unless they also are one (`CO`)."""
    from shotgun.data import check_kinds, reads_as

    for path, column, kind in (
        (ROOT / "data/inorganic/matbench_log10_kvrh.csv", "formula", "inorganic"),
        (ROOT / "data/molecules/esol.csv", "smiles", "molecule"),
        (ROOT / "data/polymers/polyinfo_tg.csv", "Smiles", "polymer"),
    ):
        inputs = _column(path, column)
        misread = [s for s in inputs if kind not in reads_as(s)]
        assert misread == [], (path.name, misread[:5])
        assert check_kinds(inputs, [kind], path.name).fits.all()
    structure = json.dumps(
        json.loads((ROOT / "data/structures/megnet_bulk_moduli_100.json").read_text())[
            "structures"
        ][0]
    )
    assert reads_as(structure) == {"structure"}
    assert reads_as("CCO") == {"molecule"} and reads_as("c1ccccc1O") == {"molecule"}
    assert reads_as("*CC(*)c1ccccc1") == {"polymer"}
    assert reads_as("Fe2O3") == reads_as("NaN") == reads_as("Ca(OH)2") == {"inorganic"}
    assert reads_as("CO") == {"molecule", "inorganic"}
    assert reads_as("not a material") == reads_as("") == frozenset()


def test_inputs_of_another_kind_are_refused_or_counted():
    from shotgun.data import InputKindError, InputKindWarning, check_kinds

    smiles = _column(ROOT / "data/targets/esol_demo.csv", "smiles")
    with pytest.raises(InputKindError) as err:
        check_kinds(smiles, ["inorganic"], "esol_demo.csv")
    assert re.match(
        r"esol_demo\.csv: \d+ of 100 inputs read as formulas; \d+ as SMILES", str(err.value)
    )
    formulas = ["NaCl", "Fe2O3", "MgO", "CCO", "KCl", "c1ccccc1", "Xx2"]
    with pytest.warns(InputKindWarning, match=r"2 of 7 inputs read as SMILES, not as formulas"):
        check = check_kinds(formulas, ["inorganic"])
    assert check.fits.tolist() == [True, True, True, False, True, False, False]
    smiles_or_units = "SMILES or polymer repeat units"
    with pytest.raises(
        InputKindError, match=f"0 of 3 inputs read as {smiles_or_units}; 3 as formulas"
    ):
        check_kinds(["NaCl", "Fe2O3", "MgO"], ["molecule", "polymer"])
    with pytest.warns(InputKindWarning, match=r"1 of 2 inputs have no \* \(attachment point\)"):
        assert check_kinds(["CCO", "*CC*"], ["polymer"]).fits.all()


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "nope.yaml: file not found"),
        ("sources: [unclosed\n", "invalid YAML"),
        ("seed: 0\nshard_sise: 4\n", "shard_sise"),
        ("folder", "Is a directory"),
    ],
)
def test_a_bad_grid_config_is_one_line(tmp_path, text, message):
    path = tmp_path / "nope.yaml"
    if text == "folder":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    proc = run(["shotgun", "grid", "--configfile", str(path)])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith(f"shotgun: error: {path}") for line in lines), lines
    assert message in proc.stderr


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`shotgun grid ... | head -1`: the grid of the MDL config in shards of one model is
    megabytes, far more than a pipe holds."""
    config = (ROOT / "config" / "mdl.yaml").read_text()
    (tmp_path / "big.yaml").write_text(re.sub(r"(?m)^shard_size: .*$", "shard_size: 1", config))
    proc = subprocess.Popen(
        ["shotgun", "grid", "--configfile", str(tmp_path / "big.yaml")],
        cwd=ROOT,
        env=dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert len(proc.stdout.readline().split()) == 4  # dataset property descriptor models
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and stderr == ""


def test_help_shows_defaults():
    for verb, default in (
        (["transfer"], "(default: 5)"),
        (["transfer-map"], "(default: 50)"),
        (["library", "query"], "(default: table)"),
        (["datasets", "list"], "(default: config/datasets)"),
    ):
        proc = run(["shotgun", *verb, "--help"])
        assert proc.returncode == 0 and default in " ".join(proc.stdout.split()), verb
        assert "(default: None)" not in proc.stdout and "(default: False)" not in proc.stdout


@pytest.mark.parametrize("name, content", [("table.parquet", b"not parquet"), ("table.csv", b"")])
def test_an_unreadable_table_is_one_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    predict = ["shotgun", "predict", "--model", str(tmp_path)]
    proc = run([*predict, "--data", str(path), "--input", "smiles"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"shotgun: error: {path}: cannot read as a table: ")
    assert proc.stderr.count("\n") == 1
