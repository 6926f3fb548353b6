"""The ``nova`` command line: ``nova bench``, ``nova tune`` and ``nova demo``; see the API
reference, docs/api.md.

Also ``python -m nova ...``. rich (progress bars, tables) and matplotlib (``--plot``) are
optional and imported only when a command uses them; without rich, progress is plain text.
Bad arguments exit with status 2 and one line on stderr naming the bad value, never a
traceback. ``main(argv)`` returns the exit status instead of exiting, so it can be called
from Python.

One module per command (:mod:`~nova.cli.bench`, :mod:`~nova.cli.tune`, :mod:`~nova.cli.demo`),
each with its ``add_parser`` and ``run``; what they share is in
``_common``, and the benchmark workloads, which ``benches/compare.py`` runs too, in
``_workloads``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from . import bench, demo, tune
from ._common import Parser, UsageError, error_line
from .bench import BENCH_NAMES
from .tune import TuneCell, recommend

__all__ = ["main", "BENCH_NAMES", "TuneCell", "recommend"]


class _Command(Protocol):
    """What a command's module provides: its subparser, and the command itself."""

    def add_parser(self, sub: Any) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


_COMMANDS: dict[str, _Command] = {"bench": bench, "tune": tune, "demo": demo}


def _build_parser() -> Parser:
    parser = Parser(
        prog="nova",
        description="Nova, a fast and reliable event system: benchmarks, sizing and a demo.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(_COMMANDS) + "}")
    sub.required = True
    for command in _COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 bad arguments)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    command = next((a for a in args_list if a in _COMMANDS), None)
    prefix = f"nova {command}" if command else "nova"
    try:
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        return _COMMANDS[args.command].run(args)
    except UsageError as exc:
        error_line(f"{prefix}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        error_line(f"{prefix}: interrupted")
        return 130
    except BrokenPipeError:  # `nova bench | head`: the reader went away
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        if os.environ.get("NOVA_DEBUG"):
            raise
        error_line(f"{prefix}: error: {type(exc).__name__}: {exc} (set NOVA_DEBUG=1 for a traceback)")
        return 1
