"""The package's layout keeps its promises: the Snakefile's and the command line's imports stay
light, and no module reaches into another module's private names."""

import ast
import json
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "lightning", "mlflow")


def _imported(code: str) -> list[str]:
    """Top-level packages imported by ``code`` in a fresh interpreter."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code + "\nimport sys, json\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_command_line_and_the_grid_import_no_torch_lightning_or_mlflow():
    for code in (
        "import shotgun.cli; shotgun.cli.build_parser()",
        "from shotgun.training.grid import resolve_sources, shards",
        "from shotgun.transfer.options import TransferOptions, declared_target",
    ):
        loaded = _imported(code)
        assert "shotgun" in loaded
        assert not set(HEAVY) & set(loaded), (code, set(HEAVY) & set(loaded))
    # The packages' heavy names still resolve on first use.
    assert "torch" in _imported("from shotgun.nn import MLP")


def test_every_help_text_renders(tmp_path):
    from shotgun.cli import COMMANDS, build_parser

    parser = build_parser()
    verbs = [[c.name] for c in COMMANDS if not hasattr(c, "commands")]
    verbs += [[c.name, s.name] for c in COMMANDS for s in getattr(c, "commands", ())]
    for verb in verbs:
        proc = subprocess.run(
            [sys.executable, "-m", "shotgun", *verb, "--help"], capture_output=True, text=True
        )
        assert proc.returncode == 0, (verb, proc.stderr)
        assert proc.stdout.startswith("usage: shotgun " + " ".join(verb)), verb
    assert parser.prog == "shotgun"


DOCUMENTED = {"os._exit"}  # standard library API whose name starts with an underscore


def _private_uses(path):
    """(line, name) of every private name of another module this file uses."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield node.lineno, f"from {node.module} import {alias.name}"
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            name = f"{ast.unparse(node.value)}.{node.attr}"
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "ctx")
            if not own and name not in DOCUMENTED:
                yield node.lineno, name


def test_no_module_uses_another_modules_private_names():
    found = [
        f"{p.relative_to(ROOT)}:{line}: {name}"
        for folder in ("src", "benchmarks", "tests")
        for p in sorted((ROOT / folder).rglob("*.py"))
        for line, name in _private_uses(p)
    ]
    assert found == []
