"""Progress of long work, on stderr: a tqdm bar on a terminal; elsewhere (a log file, a
Snakemake job) a plain line at most every ``interval`` seconds, and one at the end if any was
written, so short work stays quiet.

>>> for item in progress(items, desc="cleaning", unit="datasets"):
...     ...
>>> with Progress(total=120, desc="baselines", unit="fits") as bar:
...     bar.update(4)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 10.0  # seconds between plain lines


class Progress:
    """``total`` units of work named ``desc``; ``update(n)`` as they finish."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", file=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file or sys.stderr
        self.done, self.start = 0, time.monotonic()
        self.last = self.start
        self.lines = 0
        self.bar = None
        if _is_terminal(self.file):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=f" {unit}", file=self.file, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= INTERVAL:
            self.last = now
            self._line()

    def _line(self, end: bool = False) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        took = f"{time.monotonic() - self.start:.0f} s"
        state = f"done in {took}" if end else f"{took} so far"
        print(f"{self.desc}: {self.done}{of} {self.unit}, {state}", file=self.file, flush=True)
        self.lines += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.lines:
            self._line(end=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(
    items: Iterable[T], desc: str, unit: str = "it", total: int | None = None
) -> Iterator[T]:
    """``items``, reporting progress as each is taken."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit) as bar:
        for item in items:
            yield item
            bar.update()


def _is_terminal(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False
