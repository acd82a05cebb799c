"""The ``shotgun`` command line: one verb per stage of the factory.

Every verb is a :class:`shotgun.cli.command.Command` (its parser and its handler) registered
below; user mistakes and unreadable files print one ``shotgun: error: ...`` line and exit with
status 2, warnings print as ``shotgun: warning: ...``, and a reader that stops early
(``shotgun ... | head``) ends the command quietly with status 141, as SIGPIPE would.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .. import __version__
from ..errors import ShotgunError, ShotgunWarning
from .command import HelpFormatter
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
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"shotgun {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def _error(message: str) -> int:
    for line in message.splitlines() or ["unknown error"]:  # one line per problem
        print(f"shotgun: error: {line}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    shown = warnings.showwarning

    def show(message, category, *rest, **kw):
        if issubclass(category, ShotgunWarning):
            print(f"shotgun: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", ShotgunWarning)
            warnings.showwarning = show
            status = args.func(args) or 0
            sys.stdout.flush()  # a closed pipe fails here, not at exit
        return status
    except BrokenPipeError:  # the reader stopped (`shotgun ... | head`): exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ShotgunError, ValueError) as err:
        return _error(str(err) or type(err).__name__)
    except OSError as err:  # a file that cannot be read or written
        return _error(f"{err.filename}: {err.strerror}" if err.filename else str(err))


def console() -> None:
    """The ``shotgun`` command: :func:`main`, then an exit that skips the interpreter's teardown.
    Arrow's thread pools (Parquet reads and writes) can abort the process at teardown after the
    work is done ("terminate called without an active exception", SIGABRT; apache/arrow#34314),
    so once the command has returned, with its files closed, streams are flushed and the
    process ends with the command's status."""
    import logging

    try:
        status = main()
    except SystemExit as done:  # --help, usage errors
        status = done.code
    if isinstance(status, str):
        print(status, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe
            pass
    os._exit(0 if status is None else int(status))


if __name__ == "__main__":
    console()
