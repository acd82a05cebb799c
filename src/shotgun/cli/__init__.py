"""The ``shotgun`` command line: one verb per stage of the factory.

Every verb is a :class:`shotgun.cli.command.Command` (its parser and its handler) registered
below; user mistakes print one ``shotgun: error: ...`` message and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import ShotgunError
from .data import COMMANDS as DATA
from .library import COMMANDS as LIBRARY
from .training import COMMANDS as TRAINING
from .transfer import COMMANDS as TRANSFER

COMMANDS = [*DATA, *TRAINING, *LIBRARY, *TRANSFER]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shotgun",
        description="Factory of pretrained materials-property models for shotgun transfer "
        "learning.",
    )
    p.add_argument("--version", action="version", version=f"shotgun {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ShotgunError, FileNotFoundError, ValueError) as err:
        for line in str(err).splitlines() or [type(err).__name__]:  # one line per problem
            print(f"shotgun: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
