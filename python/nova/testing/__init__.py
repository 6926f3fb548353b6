"""Helpers for testing code built on Nova.

- :class:`RecordingListener`: a listener that records every event it is called with
  (thread-safe) and lets a test wait for N of them with a timeout; it can also fail on
  purpose (``side_effect=``) to exercise retries and dead letters.
- :class:`ManualClock`: the resilience layer's injectable clock that moves only when told,
  for deterministic retry, circuit-breaker and health tests
  (``ListenerManager(clock=ManualClock())``).
- A pytest plugin (:mod:`nova.testing.plugin`, registered through the ``pytest11`` entry
  point) with the fixtures ``emitter``, ``bus``, ``store``, ``recorder`` and ``manual_clock``.

Nothing here is imported by ``import nova``; pytest is only needed for the plugin.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from .._core import Event
from ..resilience.clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock

__all__ = ["RecordingListener", "ManualClock", "Clock", "SystemClock", "SYSTEM_CLOCK"]

_DEFAULT_TIMEOUT = 5.0


class RecordingListener:
    """A listener that records the events it receives.

    Subscribe it like any callable (``emitter.subscribe("order.created", rec)``); Nova names
    it ``name``. Every call is recorded, in arrival order, before the side effect runs, so
    with retries each attempt appears once.

    ``side_effect`` makes the listener do more than record:

    - an exception instance or class: raised on every call;
    - a callable: called with the event, its return value returned (it may raise);
    - an iterable: one item per call, each an exception (raised), a callable (called) or
      ``None`` (succeed); once it is used up, calls succeed.

    Thread-safe: listeners run on worker threads, the test waits in its own.
    """

    def __init__(self, name: str = "recorder", *, side_effect: Any = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"RecordingListener: name must be a non-empty str, got {name!r}")
        self.name = name
        # The core names a plain callable by its __qualname__.
        self.__qualname__ = name
        self.__name__ = name
        self._cond = threading.Condition()
        self._events: list[Event] = []
        self._effects: Iterator[Any] | None = None
        self._effect: Any = None
        if side_effect is not None and not _is_exception(side_effect) and not callable(side_effect):
            if not isinstance(side_effect, Iterable):
                raise ValueError(
                    "RecordingListener: side_effect must be an exception, a callable or an "
                    f"iterable of those (or None items), got {side_effect!r}"
                )
            self._effects = iter(list(side_effect))
        else:
            self._effect = side_effect

    # -- the listener ----------------------------------------------------------------------

    def __call__(self, event: Event) -> Any:
        with self._cond:
            self._events.append(event)
            effect = self._effect
            if self._effects is not None:
                effect = next(self._effects, None)
            self._cond.notify_all()
        if effect is None:
            return None
        if _is_exception(effect):
            raise effect
        return effect(event)

    # -- what was recorded -----------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        """A copy of the events received so far, in arrival order."""
        with self._cond:
            return list(self._events)

    @property
    def types(self) -> list[str]:
        """The types of the events received so far."""
        return [e.type for e in self.events]

    @property
    def ids(self) -> list[str]:
        """The ids of the events received so far."""
        return [e.id for e in self.events]

    @property
    def last(self) -> Event | None:
        """The latest event received, or None."""
        with self._cond:
            return self._events[-1] if self._events else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._events)

    def clear(self) -> None:
        """Forget the events recorded so far (the side effect keeps its place)."""
        with self._cond:
            self._events.clear()

    # -- waiting ---------------------------------------------------------------------------

    def wait_for(self, n: int = 1, timeout: float | None = _DEFAULT_TIMEOUT) -> bool:
        """Wait until at least ``n`` events were received; False if ``timeout`` seconds
        passed first (``None``: wait as long as it takes)."""
        _check_count(n)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._events) < n:
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait(self, n: int = 1, timeout: float | None = _DEFAULT_TIMEOUT) -> list[Event]:
        """Wait for ``n`` events and return the first ``n``; raises ``AssertionError``
        (with what did arrive) if they did not within ``timeout`` seconds."""
        if not self.wait_for(n, timeout):
            got = self.events
            raise AssertionError(
                f"RecordingListener {self.name!r}: expected {n} event(s) within {timeout} s, "
                f"got {len(got)}: {[e.type for e in got][:10]}"
            )
        with self._cond:
            return list(self._events[:n])

    async def wait_async(self, n: int = 1, timeout: float | None = _DEFAULT_TIMEOUT) -> list[Event]:
        """:meth:`wait` for asyncio code: waits without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.wait, n, timeout)

    def __repr__(self) -> str:
        return f"RecordingListener(name={self.name!r}, events={len(self)})"


def _is_exception(obj: Any) -> bool:
    return isinstance(obj, BaseException) or (isinstance(obj, type) and issubclass(obj, BaseException))


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"RecordingListener: n must be an integer >= 0, got {n!r}")
