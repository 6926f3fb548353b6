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

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from ..bus import Bus
from ..emitter import Emitter
from ..store import MemoryStore
from . import ManualClock, RecordingListener

__all__ = ["emitter", "bus", "store", "recorder", "manual_clock"]

#: Seconds a fixture's shutdown may take before what is left is abandoned.
SHUTDOWN_TIMEOUT = 5.0

_C = TypeVar("_C")


def _until_torn_down(component: _C, tear_down: Callable[[_C], object]) -> Iterator[_C]:
    """The body of a fixture: hand ``component`` to the test, then ``tear_down(component)``
    however the test ended."""
    try:
        yield component
    finally:
        tear_down(component)


def _shut_down_with_pool(component: Emitter | Bus) -> None:
    component.shutdown(timeout=SHUTDOWN_TIMEOUT)
    component.pool.close(timeout=SHUTDOWN_TIMEOUT)


@pytest.fixture
def emitter() -> Iterator[Emitter]:
    """A fresh ``nova.Emitter`` (own pool), shut down after the test."""
    yield from _until_torn_down(Emitter(name="test-emitter"), _shut_down_with_pool)


@pytest.fixture
def bus() -> Iterator[Bus]:
    """A fresh in-process ``nova.Bus`` (own pool), shut down after the test."""
    yield from _until_torn_down(Bus(name="test-bus"), _shut_down_with_pool)


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    """A fresh ``MemoryStore``, closed after the test."""
    yield from _until_torn_down(MemoryStore(name="test-store"), MemoryStore.close)


@pytest.fixture
def recorder() -> RecordingListener:
    """A ``RecordingListener`` named ``recorder``."""
    return RecordingListener()


@pytest.fixture
def manual_clock() -> ManualClock:
    """A ``ManualClock`` at 0 s: pass it as ``ListenerManager(clock=manual_clock)``."""
    return ManualClock()
