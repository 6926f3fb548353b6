"""What Nova's middleware needs from an event, shared by nova.logging and nova.tracing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, Self

# Nested dispatches (a listener emitting synchronously) stack per-context middleware state; a
# stack deeper than this can only come from dispatches whose ``after`` never ran, so the
# oldest entries are abandoned.
MAX_NESTED_DISPATCHES = 64


class EventLike(Protocol):
    """The read side of ``nova.Event`` (and its subclasses)."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def metadata(self) -> Mapping[str, str]: ...


class ReplaceableEvent(EventLike, Protocol):
    """An event that can be copied with more metadata (``nova.Event.with_metadata``)."""

    def with_metadata(self, **pairs: str) -> Self: ...
