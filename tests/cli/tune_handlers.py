"""Sample handlers for the `nova tune` tests (tests/cli/test_cli.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nova

calls = {"n": 0}


def io_bound(event: Any) -> None:
    """An I/O-bound handler: waits 0.2 ms (the GIL is released while it sleeps)."""
    time.sleep(0.0002)


async def io_bound_async(event: Any) -> None:
    await asyncio.sleep(0.0002)


def sometimes_fails(event: Any) -> None:
    if event.data % 4 == 0:
        raise ValueError("every fourth event is bad")


as_listener = nova.Listener("tuned", io_bound)

not_callable = 42


class Nested:
    @staticmethod
    def handler(event: Any) -> None:
        calls["n"] += 1
