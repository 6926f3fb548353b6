"""Retention: a daemon thread that removes expired events from a store on a fixed period.

The period is ``retention / 10`` seconds (at least a millisecond), so an event is gone at most
``1.1 * retention`` seconds after its timestamp. The thread holds only a weak reference to the
store, so a store dropped without ``close()`` is still collected (and the thread then ends).
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..errors import StoreClosed, ValidationError

_log = logging.getLogger("nova")


def check_retention(value: Any) -> float | None:
    """``retention`` as a float of seconds, or ``None`` (keep everything)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"retention must be a number of seconds or None, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(f"retention must be a positive number of seconds, got {value!r}")
    return float(value)


class Sweeper:
    """Calls ``sweep(store)`` every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(self, store: object, sweep: Callable[[Any], object], interval: float, name: str) -> None:
        self._stop = threading.Event()
        self._interval = max(interval, 0.001)
        self._thread = threading.Thread(
            target=self._run, args=(weakref.ref(store), sweep), name=f"{name}-retention", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for a sweep in progress to finish (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self, ref: weakref.ref[object], sweep: Callable[[Any], object]) -> None:
        while not self._stop.wait(self._interval):
            store = ref()
            if store is None:
                return
            try:
                sweep(store)
            except StoreClosed:
                return
            except Exception:  # keep sweeping; a later sweep may succeed
                _log.exception("nova store retention sweep failed")
            del store
