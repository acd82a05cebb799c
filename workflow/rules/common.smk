# Grid expansion: which shards of which (dataset, property, descriptor) cells the config asks for.
import os
import sys

import yaml

# Jobs call `shotgun` from the environment running Snakemake, even when it is not activated.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]

RESULTS = config["results"]
LIBRARY = config.get("library") or f"{RESULTS}/library"
VERSION = str(config["library_version"])
DATASETS = {}  # name -> declaration (plain YAML: the package validates it in each job)
for _name in config["sources"]:
    with open(f"config/datasets/{_name}.yaml") as _f:
        DATASETS[_name] = yaml.safe_load(_f)


def _properties(name, source):
    props = source.get("properties", "all")
    declared = list(DATASETS[name]["properties"])
    if props == "all":
        return declared
    unknown = sorted(set(props) - set(declared))
    if unknown:
        raise ValueError(f"config: sources.{name}: undeclared properties {unknown}")
    return props


def _shards():
    size = config["shard_size"]
    for name, source in config["sources"].items():
        for prop in _properties(name, source):
            for desc in source["descriptors"]:
                n = source["n_models"]
                for lo in range(0, n, size):
                    yield f"{RESULTS}/models/{name}/{prop}/{desc}/{lo}-{min(lo + size, n) - 1}"


SHARDS = list(_shards())
TARGETS = list(config.get("transfer", {}))
TRAIN_OVERRIDES = [f"trainer={config['accelerator']}", f"seed={config['seed']}"] + list(
    config.get("train_overrides", [])
)


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    property=r"[A-Za-z0-9_.\-]+",
    descriptor=r"[a-z0-9_]+",
    models=r"\d+-\d+",
