# Grid expansion (shotgun.training.grid, shared with `shotgun grid`): which shards of which
# (dataset, property, descriptor) cells the config asks for.
import os
import sys

from shotgun.training.grid import declarations_dir, read_datasets, resolve_sources, shards

# Jobs call `shotgun` from the environment running Snakemake, even when it is not activated.
os.environ.update(
    PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
)
ENV = "../../envs/shotgun.yaml"  # every rule's conda environment (relative to workflow/rules)

RESULTS = config["results"]
LIBRARY = config.get("library") or f"{RESULTS}/library"
VERSION = str(config["library_version"])
DATASETS_DIR = declarations_dir(config)
# Explicit per-dataset entries (`all` and `applicable` expanded) for every rule below.
config["sources"] = resolve_sources(config, DATASETS_DIR)
DATASETS = read_datasets(DATASETS_DIR, list(config["sources"]))  # validated declarations
_SHARDS = list(shards(config, config["sources"]))
SHARDS = [s.done(RESULTS) for s in _SHARDS]  # completion markers: the training rule's outputs
SHARD_DIRS = [s.folder(RESULTS) for s in _SHARDS]  # the model folders the library reads
TRAIN_OVERRIDES = [f"trainer={config['accelerator']}", f"seed={config['seed']}"] + list(
    config.get("train_overrides", [])
)


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    property=r"[A-Za-z0-9_.\-]+",
    descriptor=r"[a-z0-9_]+",
    models=r"\d+-\d+",


def shown_in_report(path, caption, name):
    """A transfer output in `snakemake --report`, with its caption under workflow/report/."""
    return report(
        path,
        caption=f"../report/{caption}.rst",
        category="Transfer",
        subcategory="{target}",
        labels={"target": "{target}", "file": name},
    )


def shard_overrides(descriptor):
    """Hydra overrides of a shard: the accelerator and seed, `train_overrides`, then the
    descriptor's own `descriptor_overrides` (e.g. a narrower model space for fingerprints)."""
    return TRAIN_OVERRIDES + list(config.get("descriptor_overrides", {}).get(descriptor, []))
