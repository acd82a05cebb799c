"""The pattern of every verb: a :class:`Command` declares its parser and handles its arguments;
a :class:`Group` gathers sub-verbs (``shotgun library ...``). Flags that several verbs share are
added by the helpers below, so they are spelled the same everywhere.

A handler raises :class:`shotgun.errors.ShotgunError` (or ``ValueError``, ``OSError``) for a
user's mistake: ``shotgun`` prints it as one ``shotgun: error: ...`` message and exits 2. Every
parser formats help with :class:`HelpFormatter`, which shows each option's default.
Handlers import what they need when they run: ``shotgun --help`` loads no torch, Lightning or
MLflow.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import INPUT_KINDS


class HelpFormatter(argparse.HelpFormatter):
    """Help texts that end with the option's default, where it has one worth showing (not
    None, a flag's False or an empty list)."""

    def _get_help_string(self, action) -> str:
        text, default = action.help or "", action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default == []
        ):
            return text
        return f"{text} (default: %(default)s)"


class Command:
    """One verb: ``name``, ``help`` (and ``description``), its flags and its handler."""

    name: str
    help: str
    description: str | None = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the verb's flags."""

    def run(self, args: argparse.Namespace) -> int | None:
        """Handle the parsed arguments; the exit status (None: 0)."""
        raise NotImplementedError

    def register(self, sub) -> argparse.ArgumentParser:
        parser = sub.add_parser(
            self.name,
            help=self.help,
            description=self.description or self.help[:1].upper() + self.help[1:],
            formatter_class=HelpFormatter,
        )
        self.add_arguments(parser)
        parser.set_defaults(func=self.run)
        return parser


class Group(Command):
    """A verb with sub-verbs (``commands``)."""

    commands: Sequence[Command] = ()

    def register(self, sub) -> argparse.ArgumentParser:
        parser = sub.add_parser(
            self.name, help=self.help, description=self.description, formatter_class=HelpFormatter
        )
        inner = parser.add_subparsers(dest=f"{self.name}_command", required=True)
        for command in self.commands:
            command.register(inner)
        return parser


def add_kind(parser, help: str, choices: Sequence[str] = INPUT_KINDS, required: bool = False):
    """``--kind``: a material class or input kind (molecule, polymer, inorganic, structure)."""
    parser.add_argument("--kind", choices=choices, required=required, help=help)


def add_tracking(parser, results_required: bool = False) -> None:
    """``--results`` (the folder of the embedded store) and ``--tracking-uri``."""
    parser.add_argument(
        "--results",
        required=results_required,
        default=None if results_required else "results",
        help="results folder (holds the embedded MLflow store; a moved or copied folder's store "
        "is rebound to its own mlartifacts/)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: the sqlite store in --results)",
    )


def add_library_version(parser, required: bool = True) -> None:
    parser.add_argument(
        "--library-version",
        required=required,
        default=None if required else "0",
        help="library version (one MLflow experiment per version)",
    )
