"""What every event store shares: the value types (:class:`Cursor`, :class:`StreamInfo`,
:class:`StoreStats`) and :class:`BaseStore`, which implements the public API — argument
checks, closing, statistics, subscriptions, retention — on top of a handful of primitives
that each store provides (``_append``, ``_page``, ``_time_range``, ``_replay`` ...).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from types import TracebackType
from typing import Any, TypeVar

from .._core import Event
from ..errors import StoreClosed, StreamNotFound, ValidationError
from ._retention import Sweeper, check_retention
from ._subscription import AsyncStoreSubscription, Signal, StoreSubscription
from ._time import UTC, time_range

ALL = "$all"
"""The name of the read-only stream of every event in append order."""

_S = TypeVar("_S", bound="BaseStore")


def _is_position(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class Cursor:
    """A place in a stream: ``position`` is the position of the next event to read."""

    stream: str
    position: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.stream, str) or not self.stream:
            raise ValidationError(f"Cursor.stream must be a non-empty str, got {self.stream!r}")
        if not _is_position(self.position):
            raise ValidationError(f"Cursor.position must be an int >= 0, got {self.position!r}")


@dataclass(frozen=True)
class StreamInfo:
    """A stream at a glance. ``event_count`` is how many events it holds now (retention may
    have removed some), ``version`` how many were ever appended; the timestamps (UTC) are
    those of its first and last held events by position, ``None`` when it holds none."""

    stream: str
    event_count: int
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    version: int


@dataclass(frozen=True)
class StoreStats:
    """``total_events`` and ``total_streams`` describe the store's content; the counters
    ``events_appended`` and ``events_read`` (events returned by reads, replays and
    subscriptions) count since this store object was opened; ``active_subscriptions`` is
    how many subscriptions are open."""

    total_events: int
    total_streams: int
    events_appended: int
    events_read: int
    active_subscriptions: int


class BaseStore(ABC):
    """The public API of an event store (see docs/api.md, Event store, and :mod:`nova.store`)."""

    # Read by subscriptions (see _subscription.Pager).
    _reads_block = False
    _poll_interval: float | None = None

    def __init__(self, *, name: str, retention: float | None) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self.retention = check_retention(retention)
        self._closed = False
        self._signal = Signal()
        self._counter_lock = threading.Lock()
        self._events_appended = 0  # incremented by the stores under their own write lock
        self._events_read = 0
        self._sweeper: Sweeper | None = None

    # ----------------------------------------------------------------- primitives

    @abstractmethod
    def _append(self, stream: str, events: tuple[Event, ...], expected_version: int | None) -> int:
        """Append atomically (arguments are checked); return the new version."""

    @abstractmethod
    def _page(self, stream: str, position: int, limit: int) -> tuple[list[Event], Sequence[int]]:
        """Up to ``limit`` events of ``stream`` (or ``$all``) from ``position`` on, with their
        positions. Does not count them as read."""

    @abstractmethod
    def _time_range(
        self, start: datetime | None, end: datetime | None, streams: frozenset[str] | None
    ) -> list[Event]:
        """Events with ``start <= timestamp < end`` in time order (ties in append order)."""

    @abstractmethod
    def _replay(
        self, start: datetime | None, end: datetime | None, streams: frozenset[str] | None
    ) -> Iterator[Event]:
        """Events in append order, page by page, up to the last one present at the call."""

    @abstractmethod
    def _stream_info(self, stream: str) -> StreamInfo | None:
        """Info of a stream, or of ``$all``; None for a stream never written."""

    @abstractmethod
    def _stream_infos(self) -> list[StreamInfo]:
        """Info of every stream written, by name."""

    @abstractmethod
    def _totals(self) -> tuple[int, int]:
        """(events held, streams written)."""

    @abstractmethod
    def _sweep_before(self, cutoff: datetime) -> int:
        """Remove every event whose timestamp is before ``cutoff``; return how many."""

    @abstractmethod
    def _close(self) -> None:
        """Release resources; called once, after the store is marked closed."""

    # ----------------------------------------------------------------- helpers

    def _start_retention(self) -> None:
        if self.retention is not None:
            self._sweeper = Sweeper(self, BaseStore._sweep_expired, self.retention / 10, self.name)
            self._sweeper.start()

    def _sweep_expired(self) -> int:
        assert self.retention is not None
        cutoff = datetime.now(UTC).timestamp() - self.retention
        return self._sweep_before(datetime.fromtimestamp(cutoff, UTC))

    def _raise_closed(self) -> None:
        raise StoreClosed(f"{self.name}: the store is closed; open a new one to use it")

    def _note_read(self, n: int) -> None:
        with self._counter_lock:
            self._events_read += n

    def _check_stream(self, stream: Any, *, writable: bool = False) -> str:
        if not isinstance(stream, str) or not stream:
            raise ValidationError(f"{self.name}: stream must be a non-empty str, got {stream!r}")
        if writable and stream == ALL:
            raise ValidationError(
                f"{self.name}: stream '$all' is read-only (every stream together); append to a named stream"
            )
        return stream

    def _check_events(self, events: tuple[Any, ...]) -> None:
        # The common case at C speed (a bus's store writer appends thousands a call); the loop
        # only to name the first bad one.
        if all(map(isinstance, events, repeat(Event))):
            return
        for i, event in enumerate(events):
            if not isinstance(event, Event):
                raise ValidationError(
                    f"{self.name}: events[{i}] must be a nova.Event, got "
                    f"{type(event).__name__}; wrap it, e.g. Event('order.created', data)"
                )

    def _check_expected(self, expected_version: Any) -> None:
        if expected_version is not None and not _is_position(expected_version):
            raise ValidationError(
                f"{self.name}: expected_version must be an int >= 0 or None, got {expected_version!r}"
            )

    def _position(self, stream: str, cursor: Any, field: str) -> int:
        if isinstance(cursor, Cursor):
            if cursor.stream != stream:
                raise ValidationError(
                    f"{self.name}: {field} is a Cursor of stream {cursor.stream!r}, not of {stream!r}"
                )
            return cursor.position
        if not _is_position(cursor):
            raise ValidationError(f"{self.name}: {field} must be a Cursor or an int >= 0, got {cursor!r}")
        return int(cursor)

    def _check_streams(self, streams: Any) -> frozenset[str] | None:
        if streams is None:
            return None
        if isinstance(streams, str):
            streams = (streams,)
        try:
            names = frozenset(streams)
        except TypeError:
            raise ValidationError(
                f"{self.name}: streams must be an iterable of stream names or None, "
                f"got {type(streams).__name__}"
            ) from None
        for s in names:
            if not isinstance(s, str) or not s:
                raise ValidationError(f"{self.name}: streams must hold non-empty str names, got {s!r}")
        return None if ALL in names else names

    # ----------------------------------------------------------------- public API

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def append(self, stream: str, *events: Event, expected_version: int | None = None) -> int:
        """Append ``events`` to ``stream``, all or nothing, and return its new version.

        With ``expected_version`` set and different from the stream's current version, raises
        :class:`~nova.errors.ConcurrencyError` and appends nothing; a batch that would pass a
        limit raises :class:`~nova.errors.StoreFull` and appends nothing.
        """
        if type(stream) is not str or not stream or stream == ALL:
            self._check_stream(stream, writable=True)
        self._check_events(events)
        if expected_version is not None:
            self._check_expected(expected_version)
        return self._append(stream, events, expected_version)

    def read(self, stream: str, cursor: Cursor | int = 0, limit: int = 100) -> tuple[list[Event], Cursor]:
        """Up to ``limit`` events of ``stream`` from ``cursor`` on, and the cursor after the
        last one read (the same cursor when nothing was read)."""
        self._check_stream(stream)
        position = self._position(stream, cursor, "cursor")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValidationError(f"{self.name}: limit must be an int >= 0, got {limit!r}")
        if self._closed:
            self._raise_closed()
        if limit == 0:
            return [], Cursor(stream, position)
        events, positions = self._page(stream, position, limit)
        if events:
            self._note_read(len(events))
            position = positions[-1] + 1
        return events, Cursor(stream, position)

    def read_stream(self, stream: str, start: Cursor | int = 0) -> list[Event]:
        """Every event of ``stream`` from position ``start`` on."""
        self._check_stream(stream)
        position = self._position(stream, start, "start")
        if self._closed:
            self._raise_closed()
        out: list[Event] = []
        while True:
            events, positions = self._page(stream, position, 4096)
            if not events:
                break
            out.extend(events)
            position = positions[-1] + 1
        self._note_read(len(out))
        return out

    def read_time_range(
        self, start: datetime | None, end: datetime | None, *, streams: Iterable[str] | None = None
    ) -> list[Event]:
        """Events whose timestamp is in ``[start, end)`` across ``streams`` (all by default),
        in time order; events of equal timestamps keep their append order. Naive datetimes
        mean UTC; ``None`` leaves a side open."""
        lo, hi = time_range(start, end)
        names = self._check_streams(streams)
        if self._closed:
            self._raise_closed()
        events = self._time_range(lo, hi, names)
        self._note_read(len(events))
        return events

    def replay(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        streams: Iterable[str] | None = None,
    ) -> Iterator[Event]:
        """Iterate, in append order, over the events whose timestamp is in ``[start, end)``
        across ``streams`` (all by default). Streams page by page, never loading everything;
        events appended after the call are not included."""
        lo, hi = time_range(start, end)
        names = self._check_streams(streams)
        if self._closed:
            self._raise_closed()
        return self._counted(self._replay(lo, hi, names))

    def _counted(self, events: Iterator[Event]) -> Iterator[Event]:
        n = 0
        try:
            for event in events:
                n += 1
                if n == 1024:
                    self._note_read(n)
                    n = 0
                yield event
        finally:
            self._note_read(n)

    def subscribe(self, stream: str, cursor: Cursor | int = 0) -> StoreSubscription:
        """Iterate over ``stream``'s events from ``cursor`` on: past ones, then live ones as
        they are appended, with no gap and no duplicate. Ends when the store closes or the
        iterator's ``close()`` is called; a context manager."""
        self._check_stream(stream)
        position = self._position(stream, cursor, "cursor")
        if self._closed:
            self._raise_closed()
        return StoreSubscription(self, stream, position)

    def subscribe_async(self, stream: str, cursor: Cursor | int = 0) -> AsyncStoreSubscription:
        """:meth:`subscribe` as an async iterator (``async for``); waiting never blocks the
        event loop. Ends when the store closes or ``aclose()`` is awaited."""
        self._check_stream(stream)
        position = self._position(stream, cursor, "cursor")
        if self._closed:
            self._raise_closed()
        return AsyncStoreSubscription(self, stream, position)

    def stream_info(self, stream: str) -> StreamInfo:
        """A stream's :class:`StreamInfo`; :class:`~nova.errors.StreamNotFound` for a stream
        never written. ``"$all"`` gives the whole store, with global positions."""
        self._check_stream(stream)
        if self._closed:
            self._raise_closed()
        info = self._stream_info(stream)
        if info is None:
            raise StreamNotFound(
                f"{self.name}: stream {stream!r} was never written; streams() lists the streams there are"
            )
        return info

    def streams(self) -> list[StreamInfo]:
        """A :class:`StreamInfo` for every stream ever written, sorted by name (not
        ``"$all"``)."""
        if self._closed:
            self._raise_closed()
        return self._stream_infos()

    def stats(self) -> StoreStats:
        if self._closed:
            self._raise_closed()
        total_events, total_streams = self._totals()
        with self._counter_lock:
            appended, read = self._events_appended, self._events_read
        return StoreStats(
            total_events=total_events,
            total_streams=total_streams,
            events_appended=appended,
            events_read=read,
            active_subscriptions=self._signal.subscriptions,
        )

    def close(self) -> None:
        """Close the store (idempotent): subscriptions end, the retention thread stops, and
        every later call raises :class:`~nova.errors.StoreClosed`."""
        with self._counter_lock:
            if self._closed:
                return
            self._closed = True
        self._signal.close()
        if self._sweeper is not None:
            self._sweeper.stop()
        self._close()

    def __enter__(self: _S) -> _S:
        if self._closed:
            self._raise_closed()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
