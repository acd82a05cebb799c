"""The transfer report (shotgun.transfer.report) on an out folder written here, not by
`shotgun transfer`;
`snakemake --report` on the smoke results."""

import base64
import html
import json
import os
import re
import shutil

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from conftest import run
from shotgun.transfer.report import fmt, write_report

PNG = bytes.fromhex(  # a valid 1x1 PNG
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201a5f5a1e40000000049454e44ae426082"
)


def _summary(nested=True, optional=True):
    """A summary.json as a literal (over 80 lines as formatted: it is data, one key a line)."""
    s = {
        "target": {
            "data": "data/targets/esol_demo.csv",
            "input": "smiles",
            "target": "logSolubility",
            "kind": "molecule",
        },
        "n_samples": 97,
        "n_dropped": 3,
        "folds": 5,
        "repeats": 2,
        "split": "random",
        "seed": 7,
        "n_candidates": 12,
        "learners": ["ridge", "random_forest"],
        "seconds": 12.5,
        "best": {
            "model_id": "abc123",
            "dataset": "qm9",
            "property": "gap",
            "descriptor": "ecfp",
            "learner": "ridge",
            "depth": 2,
            "cv_mae": 0.7123,
            "cv_rmse": 0.9876,
            "cv_r2": 0.6543,
        },
        "baseline": {
            "name": "random_forest on ecfp",
            "cv_mae": 0.8111,
            "cv_rmse": 1.0222,
            "cv_r2": 0.5333,
        },
        "library": "results/library",
        "library_version": "0.1.0",
        "note": "best is selected on the folds that score it",
    }
    if optional:
        s["baselines"] = [
            dict(s["baseline"]),
            {"name": "ridge on ecfp", "cv_mae": 0.9444, "cv_rmse": 1.1, "cv_r2": 0.41},
        ]
        s["methods"] = [
            {
                "method": "transfer",
                "name": "qm9/gap d=2 ridge",
                "cv_mae": 0.7123,
                "cv_rmse": 0.9876,
                "cv_r2": 0.6543,
            },
            {
                "method": "stack",
                "name": "mean of top 5",
                "cv_mae": 0.7321,
                "cv_rmse": 0.99,
                "cv_r2": 0.64,
            },
            {
                "method": "fine_tune",
                "name": "abc123 (last layer + head)",
                "cv_mae": 0.7777,
                "cv_rmse": 1.01,
                "cv_r2": 0.6,
            },
            {
                "method": "baseline",
                "name": "random_forest on ecfp",
                "cv_mae": 0.8111,
                "cv_rmse": 1.0222,
                "cv_r2": 0.5333,
            },
        ]
        s["winner"] = "transfer"
        s["saved"] = {**s["methods"][0], "members": ["abc123 d=2 ridge"]}
    s["nested"] = (
        {
            "cv_mae": 0.8567,
            "cv_rmse": 1.0667,
            "cv_r2": 0.5111,
            "chosen": ["abc123", "def456", "abc123", "abc123", "fff999"],
            "baseline": {
                "cv_mae": 0.8333,
                "cv_rmse": 1.05,
                "cv_r2": 0.52,
                "chosen": ["random_forest on ecfp"] * 5,
            },
            "outer_folds": 5,
            "inner_folds": 4,
            "selected": {
                "cv_mae": 0.8444,
                "cv_rmse": 1.0555,
                "cv_r2": 0.5155,
                "chosen": ["transfer", "stack", "baseline", "transfer", "transfer"],
                "chosen_pipelines": [
                    "abc123 d=2 ridge",
                    "abc123 d=1 ridge + def456 d=2 gp",
                    "random_forest on ecfp",
                    "abc123 d=2 ridge",
                    "fff999 d=1 ridge",
                ],
            },
        }
        if nested
        else None
    )
    if optional and nested:
        s["control"] = {
            "cv_mae": 0.8123,
            "cv_rmse": 1.0123,
            "cv_r2": 0.5432,
            "estimate": "nested",
            "n_networks": 12,
            "pretrained_better": False,
            "best": {
                "name": "control of qm9/gap d=1 ridge",
                "cv_mae": 0.6999,
                "cv_rmse": 0.9,
                "cv_r2": 0.7,
            },
            "stack": {"cv_mae": 0.7988, "cv_rmse": 1.0, "cv_r2": 0.55},
            "chosen": ["abc123 d=1 ridge"] * 5,
        }
        s["leakage"] = {
            "max_overlap": 0.01,
            "max_share": 0.4167,
            "n_excluded": 2,
            "n_unknown": 0,
            "excluded": ["qm9m1", "qm9m2"],
            "n_unscored": 3,
        }
    return s


def _out(tmp_path, summary, curve="nested"):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps(summary))
    ranking = pd.DataFrame(
        {
            "model_id": [f"m{i:02d}" for i in range(14)],
            "dataset": "qm9",
            "property": "gap",
            "material_class": "molecule",
            "descriptor": "ecfp",
            "architecture": "2048-512-1:relu",
            "learner": "ridge",
            "depth": 1,
            "n_features": 512,
            "cv_mae": [0.7123 + 0.01 * i for i in range(14)],
            "cv_rmse": 1.0,
            "cv_r2": 0.5,
        }
    )
    ranking.sample(frac=1, random_state=0).to_csv(out / "ranking.csv", index=False)
    (out / "parity.png").write_bytes(PNG)
    if curve == "nested":
        pd.DataFrame(
            {
                "n": [10, 10, 40, 40],
                "method": ["transfer", "baseline"] * 2,
                "mae": [1.234, 1.456, 0.9012, 0.9345],
                "rmse": 1.0,
                "r2": 0.5,
            }
        ).to_csv(out / "learning_curve.csv", index=False)
        (out / "learning_curve.png").write_bytes(PNG)
    elif curve == "empty":  # nested CV off: a header and an empty plot
        (out / "learning_curve.csv").write_text("n,method,mae,rmse,r2\n")
        (out / "learning_curve.png").write_bytes(PNG)
    return out


def test_report_states_the_numbers_and_embeds_the_plots(tmp_path):
    s = _summary()
    out = _out(tmp_path, s)
    paths = write_report(out)
    assert paths == [out / "report.md", out / "report.html"]
    md, page = (p.read_text() for p in paths)
    for text in (md, page):
        for value in (
            s["nested"]["cv_mae"],
            s["nested"]["baseline"]["cv_mae"],
            s["best"]["cv_mae"],
            s["baseline"]["cv_mae"],
            s["methods"][1]["cv_mae"],
            s["methods"][2]["cv_mae"],
            s["baselines"][1]["cv_mae"],
            1.234,
            0.9345,
        ):
            assert fmt(value) in text
        assert "selection-optimistic" in text and "nested estimate" in text.lower()
        assert "Matbench" in text
        assert "def456" in text and "fff999" in text  # chosen per outer fold
        assert fmt(s["nested"]["selected"]["cv_mae"]) in text
        assert "stack: abc123 d=1 ridge + def456 d=2 gp" in text  # method chosen per outer fold
        assert "saved under model/ (shotgun predict --model): transfer, qm9/gap d=2 ridge" in text
        assert (
            "Pretrained features did not beat random ones on this target: nested MAE 0.8567 "
            "against 0.8123" in text
        )
        assert fmt(s["control"]["stack"]["cv_mae"]) in text
        assert "trained on up to 41.7% of the target" in text
        assert "2 above 1.0% left out (qm9m1, qm9m2)" in text
        assert "the 3 target rows the kept ones saw are used for fitting only, never" in text
        assert "m09" in text and "m10" not in text  # top 10 of the ranking only
    # Self-contained HTML: both PNGs inline, no link to a file beside it.
    inline = base64.b64encode(PNG).decode()
    assert page.count(f"data:image/png;base64,{inline}") == 2
    assert 'src="parity.png"' not in page
    assert "](parity.png)" in md and "](learning_curve.png)" in md
    # Top-10 rows appear best first.
    assert md.index("| 1 | m00 |") < md.index("| 10 | m09 |")


@pytest.mark.parametrize("curve", [None, "empty"])
def test_report_without_nested_or_optional_parts(tmp_path, curve):
    s = _summary(nested=False, optional=False)
    out = _out(tmp_path, s, curve=curve)
    md, page = (p.read_text() for p in write_report(out))
    for text in (md, page):
        assert "Nested cross-validation was off" in text
        assert "No control networks were screened" in text
        assert "overlap with the target: not checked" in text
        assert fmt(s["best"]["cv_mae"]) in text and fmt(s["baseline"]["cv_mae"]) in text
        assert "Methods" not in text
        assert ("No learning curve" in text) == (curve == "empty")
    assert page.count("data:image/png;base64,") == 1  # the parity plot only


@pytest.mark.parametrize(
    "value, text",
    [(0.712345, "0.7123"), (3, "3"), (None, "-"), (float("nan"), "-"), ("ridge", "ridge")],
)
def test_fmt(value, text):
    assert fmt(value) == text


def test_snakemake_report_of_the_smoke_results(smoke, tmp_path):
    """`snakemake --report` collects the transfer outputs and the map without running anything."""
    page = tmp_path / "report.html"
    proc = run(
        [
            "snakemake",
            "--profile",
            "profiles/local",
            "--configfile",
            "config/smoke.yaml",
            "--config",
            f"results={smoke}",
            "--report",
            str(page),
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = page.read_text(errors="replace")
    for name in (
        "esol_demo",
        "parity.png",
        "learning_curve.png",
        "report.html",
        "ranking.csv",
        "transfer_map.png",
        "r2.png",
        "cells.csv",
    ):
        assert name in text


def test_summary_reads_and_writes_through_one_definition(tmp_path):
    """summary.json round-trips through TransferSummary unchanged (parts absent from an older
    summary read as their defaults); the report reads it that way."""
    from shotgun.transfer.summary import TransferSummary

    full = _summary()
    full["target"]["unit"] = "log10(mol/L)"
    full["nested"]["chosen_pipelines"] = ["abc123 d=2 ridge"] * 5
    full["nested"]["stack"] = {"cv_mae": 0.8, "cv_rmse": 1.0, "cv_r2": 0.5}
    s = TransferSummary.from_dict(full)
    assert s.nested.stack.cv_mae == 0.8 and s.best.depth == 2 and s.methods[1].method == "stack"
    again = s.to_dict()
    assert {k: again[k] for k in full} == full  # every given key, same value
    assert again["fine_tune"] is None and again["subsample"] is None
    s.write(tmp_path / "summary.json")
    assert TransferSummary.read(tmp_path / "summary.json") == s
    bare = TransferSummary.from_dict(_summary(nested=False, optional=False))
    assert bare.nested is None and bare.methods == [] and bare.to_dict()["nested"] is None


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
# Loads a page into a 1,200 px wide frame and writes what it finds into its own DOM, which
# `chromium --dump-dom` prints: whether the page scrolls sideways, and its images' sizes.
PROBE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="page" src="{src}" style="width:1200px;height:900px;border:0"></iframe>
<pre id="result"></pre><script>
document.getElementById("page").addEventListener("load", () => {{
  const frame = document.getElementById("page"), doc = frame.contentDocument;
  const root = doc.documentElement;
  const images = [...doc.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]);
  document.getElementById("result").textContent = JSON.stringify(
    {{width: frame.contentWindow.innerWidth, scrollWidth: root.scrollWidth,
      clientWidth: root.clientWidth, images}});
}});
</script></body></html>"""


def _in_browser(page, tmp_path) -> dict:
    """What a headless Chromium sees of ``page`` at 1,200 px."""
    if BROWSER is None:
        if os.environ.get("SHOTGUN_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    probe = tmp_path / f"probe-{page.stem}.html"
    probe.write_text(PROBE.format(src=page.resolve().as_uri()))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    proc = run([BROWSER, *flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()])
    found = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    assert found and found.group(1), proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_transfer_report_renders_in_a_real_browser(smoke, tmp_path):
    """The smoke run's report.html at 1,200 px: nothing hidden sideways, every plot loaded, and
    a screenshot that is not blank. A bare page with a long unbroken table cell
    is the control: the probe must see it overflow."""
    page = smoke / "transfer" / "esol_demo" / "report.html"
    seen = _in_browser(page, tmp_path)
    assert seen["width"] == 1200 and seen["scrollWidth"] <= seen["clientWidth"], seen
    assert len(seen["images"]) == 2  # parity and learning curve
    assert all(done and w > 100 and h > 100 for done, w, h in seen["images"]), seen

    wide = tmp_path / "wide.html"
    wide.write_text(f"<table><tr><td>{'x' * 3000}</td></tr></table>")
    control = _in_browser(wide, tmp_path)
    assert control["scrollWidth"] > control["clientWidth"], control

    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    proc = run([BROWSER, *flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()])
    assert shot.exists(), proc.stderr[-2000:]
    pixels = plt.imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels[..., :3].std() > 0.05  # text, tables and plots, not an empty page
