"""``nova demo``: the order-processing flow of the best-practice guide end to end (see
:mod:`nova.demo`), on the embedded defaults or, with ``--redis URL``, on Redis Streams."""

from __future__ import annotations

import argparse
from typing import Any
import importlib.util
from urllib.parse import urlsplit

from ._common import UsageError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add ``nova demo`` and its options to the subcommands of the ``nova`` parser."""
    parser = sub.add_parser(
        "demo",
        help="the order-processing flow end to end, with a summary",
        description="The order-processing flow of the best-practice guide on the embedded "
        "defaults (in-process bus, SQLite store and dead letters), or on Redis.",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="run the bus on Redis Streams, e.g. redis://localhost:6379/0",
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()


def _check_redis_url(url: str) -> None:
    shown = _redact(url)
    try:
        parts = urlsplit(url)
        parts.port  # reading it raises ValueError for a port that is not a number
    except ValueError as exc:
        raise UsageError(f"--redis: {shown!r} is not a valid Redis URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise UsageError(f"--redis: {shown!r} is not a Redis URL (use redis://, rediss:// or unix://)")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise UsageError(f"--redis: {shown!r} has no host (e.g. redis://localhost:6379/0)")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise UsageError(f"--redis: {shown!r}: the database {db!r} is not a number")
    if importlib.util.find_spec("redis") is None:
        raise UsageError("--redis needs the redis package: pip install 'nova-events[redis]'")


def run(args: argparse.Namespace) -> int:
    """``nova demo`` with its parsed arguments; returns the exit status."""
    from ..demo import run_demo
    from ..errors import BackendError, ValidationError

    if args.redis is not None:
        _check_redis_url(args.redis)
    try:
        run_demo(args.redis)
    except (BackendError, ValidationError) as exc:
        if args.redis is None:
            raise
        raise UsageError(f"--redis {_redact(args.redis)!r}: {exc}") from None
    return 0
