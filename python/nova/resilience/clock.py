"""The clock the resilience layer reads and sleeps on, injectable for deterministic tests.

Everything time-dependent in :mod:`nova.resilience` (retry delays, circuit-breaker timeouts and
sliding windows, the one-minute health window) goes through a :class:`Clock`. Production code
uses :data:`SYSTEM_CLOCK` (``time.monotonic`` / ``time.sleep``); tests pass a
:class:`ManualClock`, whose ``sleep`` advances its time at once instead of waiting.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK", "ManualClock"]


@runtime_checkable
class Clock(Protocol):
    """What the resilience layer needs from time: a monotonic reading and a way to wait."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (the origin is arbitrary)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a manual clock advances instead)."""
        ...


class SystemClock:
    """Real time: :func:`time.monotonic` and :func:`time.sleep`."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told: ``advance(seconds)`` or ``sleep(seconds)``.

    ``sleep`` returns at once after advancing the time, and records the requested duration
    in :attr:`sleeps`, so a test can check the delays a retry loop waited without waiting.
    Thread-safe.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._now += seconds

    def advance(self, seconds: float) -> None:
        """Move the time forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"ManualClock.advance: seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"ManualClock(now={self.monotonic()!r})"
