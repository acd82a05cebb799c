"""Progress on long work: quiet when short, plain periodic lines in logs, a bar on a terminal."""

import io
import os
from pathlib import Path

import pytest

import shotgun.progress
from shotgun.progress import Progress, progress

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "datasets"


def test_short_work_writes_nothing_to_a_log():
    log = io.StringIO()
    with Progress(3, "work", "items", file=log) as bar:
        bar.update(3)
    assert log.getvalue() == ""


def test_long_work_writes_counts_and_a_last_line(monkeypatch):
    monkeypatch.setattr(shotgun.progress, "INTERVAL", 0.0)
    log = io.StringIO()
    with Progress(4, "baselines", "fits", file=log) as bar:
        bar.update(1)
        bar.update(3)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("baselines: 1/4 fits, ") and lines[0].endswith("s so far")
    assert lines[1].startswith("baselines: 4/4 fits, ")
    assert lines[-1].startswith("baselines: 4/4 fits, done in ")
    assert len(lines) == 3


def test_a_terminal_gets_a_bar():
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        assert tty.isatty()
        with Progress(5, "screening library models", "models", file=tty) as bar:
            bar.update(5)
        tty.flush()
        shown = os.read(master, 65536).decode()
    os.close(master)
    assert "\rscreening library models:   0%|" in shown and "0/5 [" in shown


def test_cleaning_for_datasets_list_reports_progress(tmp_path, monkeypatch, capsys):
    """The first `datasets list` cleans every dataset: that work is reported as it goes."""
    from shotgun.data.summaries import list_records

    monkeypatch.setattr(shotgun.progress, "INTERVAL", 0.0)
    records, problems = list_records(TINY, ROOT, cache_dir=tmp_path)
    assert len(records) == 2 and not problems
    err = capsys.readouterr().err
    assert "cleaning uncached datasets (counts are cached afterwards): 2/2 datasets, done" in err
    list_records(TINY, ROOT, cache_dir=tmp_path)  # cached now: nothing to report
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("items", [[1, 2, 3], iter([1, 2, 3])])
def test_progress_yields_every_item(items):
    assert list(progress(items, "work")) == [1, 2, 3]
