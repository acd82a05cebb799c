"""envs/shotgun.yaml (conda, for --software-deployment-method conda) lists exactly the
dependencies of pyproject.toml."""

import tomllib

import yaml

from conftest import ROOT


def test_conda_env_equals_pyproject_dependencies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "shotgun.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(deps)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.startswith("python=3.1")
