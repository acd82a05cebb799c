"""config/standard.yaml, scaled down (one model per cell, a few rows and epochs), built through
the real Snakemake workflow: every declared source property appears in the library with every
descriptor the config names."""

import pytest
import yaml

from conftest import ROOT, run
from shotgun.data import load_datasets
from shotgun.library import Library
from shotgun.training.grid import resolve_sources


@pytest.mark.slow
def test_the_standard_config_builds_every_property_with_every_descriptor(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "standard.yaml").read_text())
    for entry in config["sources"].values():
        entry.update(n_models=1, max_rows=40)
    config.update(
        results=str(tmp_path / "results"),
        shard_size=1,
        library_version="0.0.0-standard-test",
        train_overrides=[*config["train_overrides"], "trainer.max_epochs=2", "trainer.patience=1"],
    )
    path = tmp_path / "standard_small.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run(
        ["snakemake", "--profile", "profiles/local", "--configfile", str(path), "--cores", "2"]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    lib = Library.open(tmp_path / "results" / "library")
    planned = {
        (d, p, desc)
        for d, src in resolve_sources(config).items()
        for p in src["properties"]
        for desc in src["descriptors"]
    }
    built = set(zip(lib.index["dataset"], lib.index["property"], lib.index["descriptor"]))
    assert built == planned and lib.manifest.get("failed", []) == []
    declared = {
        (d.name, p)
        for d in load_datasets(ROOT / "config" / "datasets").values()
        for p in d.properties
    }
    assert {(d, p) for d, p, _ in built} == declared  # every bundled source property
    assert set(lib.index["material_class"]) == {"molecule", "polymer", "inorganic", "structure"}
    cells = (tmp_path / "results" / "library_report" / "cells.csv").read_text().splitlines()
    assert len(cells) - 1 == len(planned)
