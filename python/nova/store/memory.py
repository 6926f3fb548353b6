"""MemoryStore: an event store in this process's memory, bounded by limits.

Each stream is a list of the events themselves (nothing is copied or serialised), and a
global log holds every event in append order for ``"$all"``. Positions never move: retention
leaves a hole (``None``) where it removed an event and trims holes at the front of a list,
keeping the position of the first element in ``base``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import cast

from .._core import Event
from ..errors import ConcurrencyError, StoreFull, ValidationError
from ._base import ALL, BaseStore, StreamInfo
from ._time import in_range, utc

__all__ = ["MemoryStore"]

# Retention summarises each full chunk of positions by its oldest timestamp, so a sweep only
# rescans chunks that hold expired events plus what was appended since the last sweep.
_CHUNK = 4096
# Events copied per lock hold by replay.
_REPLAY_PAGE = 1024


class _Log:
    """The events of one stream (or of ``$all``) by position, with holes left by retention."""

    __slots__ = ("events", "names", "base", "count", "mins", "scanned")

    def __init__(self, with_names: bool = False) -> None:
        self.events: list[Event | None] = []
        # For $all: the stream of each event, parallel to ``events``.
        self.names: list[str] | None = [] if with_names else None
        self.base = 0  # position of events[0]
        self.count = 0  # events held (not holes)
        self.mins: dict[int, datetime] = {}  # chunk -> oldest timestamp held in it
        self.scanned = 0  # positions below this are summarised in ``mins``

    @property
    def version(self) -> int:
        return self.base + len(self.events)

    def page(self, position: int, limit: int) -> tuple[list[Event], Sequence[int]]:
        events, base = self.events, self.base
        i = max(position - base, 0)
        if self.count == len(events):  # no holes: a slice
            out = cast("list[Event]", events[i : i + limit])
            return out, range(base + i, base + i + len(out))
        out, positions = [], []
        n = len(events)
        while i < n and len(out) < limit:
            event = events[i]
            if event is not None:
                out.append(event)
                positions.append(base + i)
            i += 1
        return out, positions

    def first_last(self) -> tuple[Event | None, Event | None]:
        if not self.count:
            return None, None
        first = next(e for e in self.events if e is not None)
        last = next(e for e in reversed(self.events) if e is not None)
        return first, last

    def expire(self, cutoff: datetime) -> int:
        """Remove the events older than ``cutoff``; return how many."""
        end = self.version
        todo = [chunk for chunk, oldest in self.mins.items() if oldest < cutoff]
        while self.scanned + _CHUNK <= end:
            todo.append(self.scanned // _CHUNK)
            self.scanned += _CHUNK
        removed = 0
        for chunk in todo:
            oldest, n = self._scan(chunk * _CHUNK, (chunk + 1) * _CHUNK, cutoff)
            removed += n
            if oldest is None:
                self.mins.pop(chunk, None)
            else:
                self.mins[chunk] = oldest
        removed += self._scan(self.scanned, end, cutoff)[1]
        self.count -= removed
        events = self.events
        k, n = 0, len(events)
        while k < n and events[k] is None:
            k += 1
        if k:
            del events[:k]
            if self.names is not None:
                del self.names[:k]
            self.base += k
        return removed

    def _scan(self, lo: int, hi: int, cutoff: datetime) -> tuple[datetime | None, int]:
        events, base = self.events, self.base
        oldest: datetime | None = None
        removed = 0
        for i in range(max(lo - base, 0), min(hi - base, len(events))):
            event = events[i]
            if event is None:
                continue
            ts = event.timestamp
            if ts < cutoff:
                events[i] = None
                removed += 1
            elif oldest is None or ts < oldest:
                oldest = ts
        return oldest, removed


def _limit(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{field} must be an int >= 1, got {value!r}")
    return value


class MemoryStore(BaseStore):
    """An event store in memory. Thread-safe; events are kept as the objects appended
    (their class and ``data`` untouched).

    ``max_events_per_stream`` bounds the events a stream holds and ``max_streams`` the
    number of streams; an append that would pass either raises
    :class:`~nova.errors.StoreFull` and appends nothing. ``retention`` (seconds) removes
    events whose timestamp is older, sweeping every ``retention / 10`` seconds.
    """

    def __init__(
        self,
        *,
        max_events_per_stream: int = 100_000,
        max_streams: int = 10_000,
        retention: float | None = None,
        name: str = "memory-store",
    ) -> None:
        super().__init__(name=name, retention=retention)
        self.max_events_per_stream = _limit(max_events_per_stream, "max_events_per_stream")
        self.max_streams = _limit(max_streams, "max_streams")
        self._lock = threading.Lock()
        self._streams: dict[str, _Log] = {}
        self._all = _Log(with_names=True)
        self._start_retention()

    def __repr__(self) -> str:
        return (
            f"MemoryStore(name={self.name!r}, streams={len(self._streams)}, "
            f"events={self._all.count}{', closed' if self._closed else ''})"
        )

    # ----------------------------------------------------------------- primitives

    def _append(self, stream: str, events: tuple[Event, ...], expected_version: int | None) -> int:
        n = len(events)
        with self._lock:
            if self._closed:
                self._raise_closed()
            log = self._streams.get(stream)
            version = 0 if log is None else log.base + len(log.events)
            if expected_version is not None and expected_version != version:
                raise ConcurrencyError(
                    f"{self.name}: stream {stream!r} is at version {version}, not the "
                    f"expected {expected_version}; nothing was appended. Read the stream "
                    "again and retry with its current version"
                )
            if not n:
                return version
            new = log is None
            if log is None:
                if len(self._streams) >= self.max_streams:
                    raise StoreFull(
                        f"{self.name}: a new stream {stream!r} would pass max_streams="
                        f"{self.max_streams}; nothing was appended. Raise max_streams"
                    )
                log = _Log()
                held = 0
            else:
                held = log.count
            if held + n > self.max_events_per_stream:
                raise StoreFull(
                    f"{self.name}: appending {n} event(s) to stream {stream!r}, which holds "
                    f"{held}, would pass max_events_per_stream={self.max_events_per_stream}; "
                    "nothing was appended. Raise the limit or set a retention"
                )
            if new:
                self._streams[stream] = log
            log.events.extend(events)
            log.count += n
            every = self._all
            every.events.extend(events)
            every.names.extend([stream] * n)  # type: ignore[union-attr]
            every.count += n
            self._events_appended += n
        self._signal.bump()
        return version + n

    def _page(self, stream: str, position: int, limit: int) -> tuple[list[Event], Sequence[int]]:
        with self._lock:
            if self._closed:
                self._raise_closed()
            log = self._all if stream == ALL else self._streams.get(stream)
            if log is None:
                return [], ()
            return log.page(position, limit)

    def _time_range(
        self, start: datetime | None, end: datetime | None, streams: frozenset[str] | None
    ) -> list[Event]:
        with self._lock:
            if self._closed:
                self._raise_closed()
            events = list(self._all.events)
            names = list(self._all.names) if streams is not None else None  # type: ignore
        if names is None:
            out = [e for e in events if e is not None and in_range(e.timestamp, start, end)]
        else:
            out = [
                e
                for e, s in zip(events, names)
                if e is not None
                and s in streams  # type: ignore[operator]
                and in_range(e.timestamp, start, end)
            ]
        out.sort(key=lambda e: e.timestamp)  # stable: ties keep append order
        return out

    def _replay(
        self, start: datetime | None, end: datetime | None, streams: frozenset[str] | None
    ) -> Iterator[Event]:
        with self._lock:
            if self._closed:
                self._raise_closed()
            stop = self._all.version
        return self._replay_pages(stop, start, end, streams)

    def _replay_pages(
        self, stop: int, start: datetime | None, end: datetime | None, streams: frozenset[str] | None
    ) -> Iterator[Event]:
        position = 0
        while position < stop:
            with self._lock:
                if self._closed:
                    self._raise_closed()
                log = self._all
                lo = max(position - log.base, 0)
                hi = min(stop - log.base, lo + _REPLAY_PAGE)
                if hi <= lo:
                    return
                events = log.events[lo:hi]
                names = log.names[lo:hi] if streams is not None else None  # type: ignore
                position = log.base + hi
            if names is None:
                for event in events:
                    if event is not None and (
                        (start is None and end is None) or in_range(event.timestamp, start, end)
                    ):
                        yield event
            else:
                for event, s in zip(events, names):
                    if (
                        event is not None
                        and s in streams  # type: ignore[operator]
                        and in_range(event.timestamp, start, end)
                    ):
                        yield event

    @staticmethod
    def _info(stream: str, log: _Log) -> StreamInfo:
        first, last = log.first_last()
        return StreamInfo(
            stream=stream,
            event_count=log.count,
            first_timestamp=None if first is None else utc(first.timestamp),
            last_timestamp=None if last is None else utc(last.timestamp),
            version=log.version,
        )

    def _stream_info(self, stream: str) -> StreamInfo | None:
        with self._lock:
            if self._closed:
                self._raise_closed()
            log = self._all if stream == ALL else self._streams.get(stream)
            return None if log is None else self._info(stream, log)

    def _stream_infos(self) -> list[StreamInfo]:
        with self._lock:
            if self._closed:
                self._raise_closed()
            return [self._info(name, self._streams[name]) for name in sorted(self._streams)]

    def _totals(self) -> tuple[int, int]:
        with self._lock:
            return self._all.count, len(self._streams)

    def _sweep_before(self, cutoff: datetime) -> int:
        with self._lock:
            if self._closed:
                self._raise_closed()
            removed = 0
            for log in self._streams.values():
                removed += log.expire(cutoff)
            self._all.expire(cutoff)
            return removed

    def _close(self) -> None:
        with self._lock:
            self._streams = {}
            self._all = _Log(with_names=True)
