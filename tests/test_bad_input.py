"""The bad-input corpus (tests/data/bad/): every bad row is quarantined with its reason, every
bad file is refused with an error naming the file, the row and the reason. Bad configs and a
closed pipe end the command line with one line, not a traceback."""

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
