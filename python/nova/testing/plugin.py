"""The pytest plugin of :mod:`nova.testing` (entry point ``pytest11``: ``nova``).

Fixtures, each new per test and shut down cleanly after it:

- ``emitter``: a :class:`nova.Emitter` with its own worker pool (named ``test-emitter``);
- ``bus``: a :class:`nova.Bus` with its own worker pool (named ``test-bus``);
- ``store``: a :class:`nova.store.MemoryStore` (named ``test-store``);
- ``recorder``: a :class:`nova.testing.RecordingListener`;
- ``manual_clock``: a :class:`nova.testing.ManualClock` starting at 0.

A test may shut a component down itself (to check its report); the fixture's own shutdown
is then a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..bus import Bus
from ..emitter import Emitter
from ..store import MemoryStore
from . import ManualClock, RecordingListener

__all__ = ["emitter", "bus", "store", "recorder", "manual_clock"]

#: Seconds a fixture's shutdown may take before what is left is abandoned.
SHUTDOWN_TIMEOUT = 5.0


@pytest.fixture
def emitter() -> Iterator[Emitter]:
    """A fresh ``nova.Emitter`` (own pool), shut down after the test."""
    em = Emitter(name="test-emitter")
    try:
        yield em
    finally:
        em.shutdown(timeout=SHUTDOWN_TIMEOUT)
        em.pool.close(timeout=SHUTDOWN_TIMEOUT)


@pytest.fixture
def bus() -> Iterator[Bus]:
    """A fresh in-process ``nova.Bus`` (own pool), shut down after the test."""
    b = Bus(name="test-bus")
    try:
        yield b
    finally:
        b.shutdown(timeout=SHUTDOWN_TIMEOUT)
        b.pool.close(timeout=SHUTDOWN_TIMEOUT)


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    """A fresh ``MemoryStore``, closed after the test."""
    s = MemoryStore(name="test-store")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def recorder() -> RecordingListener:
    """A ``RecordingListener`` named ``recorder``."""
    return RecordingListener()


@pytest.fixture
def manual_clock() -> ManualClock:
    """A ``ManualClock`` at 0 s: pass it as ``ListenerManager(clock=manual_clock)``."""
    return ManualClock()
