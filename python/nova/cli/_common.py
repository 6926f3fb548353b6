"""What the ``nova`` commands share: argument errors and types, the one-line error report,
progress on stderr, tables on stdout, and percentiles."""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

__all__ = [
    "UsageError",
    "Parser",
    "positive_int",
    "positive_float",
    "error_line",
    "Progress",
    "table",
    "percentile",
]


class UsageError(Exception):
    """A bad argument: reported in one line on stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    # argparse prints usage and exits on a bad argument; main() reports it in one line instead.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def error_line(text: str) -> None:
    line = " ".join(text.split())  # exactly one line
    print(line, file=sys.stderr, flush=True)


class Progress:
    """A progress bar on stderr: rich's when installed and stderr is a terminal, else one
    plain line per step."""

    def __init__(self, title: str, total: int, *, enabled: bool = True) -> None:
        self.title = title
        self.total = total
        self.enabled = enabled
        self.done = 0
        self._rich: Any = None
        self._task: Any = None
        if not enabled or not sys.stderr.isatty():
            return  # plain lines: a log or a pipe gets one line per step
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress
        except ImportError:
            return
        console = Console(stderr=True)
        self._rich = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.start()
            self._task = self._rich.add_task(self.title, total=self.total)
        return self

    def step(self, label: str) -> None:
        """Announce the step about to run."""
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, description=f"{self.title}: {label}")
        else:
            print(f"{self.title}: [{self.done + 1}/{self.total}] {label} ...", file=sys.stderr, flush=True)

    def advance(self) -> None:
        self.done += 1
        if self._rich is not None:
            self._rich.update(self._task, advance=1)

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """A table on ``out``: rich's when installed, else aligned plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        print(title, file=out)
        for cells in (headers, *rows):  # the first column left-aligned, the others right
            print(
                "  "
                + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))),
                file=out,
            )
        return
    console = Console(file=out, width=max(100, shutil.get_terminal_size().columns))
    console.print(title, markup=False, highlight=False)
    rich_table = Table()
    for i, h in enumerate(headers):
        rich_table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        rich_table.add_row(*row)
    console.print(rich_table)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]
