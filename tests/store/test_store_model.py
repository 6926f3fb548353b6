"""Both stores against a plain model, driven by a hypothesis state machine.

The model is the API's meaning written as naively as possible: a dict of streams mapping
positions to events, and a dict of global positions for ``$all``. Every step runs the same
call on a MemoryStore, a SqliteStore and the model, and compares what comes back.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import nova
from nova.errors import ConcurrencyError, StreamNotFound
from nova.store import Cursor, MemoryStore, SqliteStore, StreamInfo

UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC)
STREAMS = ["a", "b", "c d", "ö'; --"]

# JSON-friendly data, so the SQLite round trip is exact.
json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
# Few distinct instants, so ties in time are common; some in another zone.
timestamps = st.builds(
    lambda s, z: (T0 + timedelta(seconds=s)).astimezone(timezone(timedelta(hours=z))),
    st.integers(0, 20),
    st.sampled_from([0, 0, 2, -5]),
)
events = st.builds(
    lambda t, d, m, ts: nova.Event(t, d, metadata=m, timestamp=ts),
    st.sampled_from(["order.created", "order.paid", "x"]),
    json_data,
    st.dictionaries(st.sampled_from(["k", "trace"]), st.text(max_size=5), max_size=2),
    timestamps,
)
bounds = st.none() | st.integers(-1, 22).map(lambda s: T0 + timedelta(seconds=s))
stream_sets = st.none() | st.lists(st.sampled_from(STREAMS), max_size=3)


def key(e: nova.Event) -> tuple[Any, ...]:
    return (e.id, e.type, e.data, dict(e.metadata), e.timestamp, e.timestamp.utcoffset())


def keys(events: Any) -> list[tuple[Any, ...]]:
    return [key(e) for e in events]


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="nova-store-model-")
        self.stores: list[MemoryStore | SqliteStore] = [
            MemoryStore(),
            SqliteStore(Path(self.dir) / "model.db"),
        ]
        self.versions: dict[str, int] = {}
        self.streams: dict[str, dict[int, nova.Event]] = {}
        self.all: dict[int, tuple[str, nova.Event]] = {}
        self.global_version = 0

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ writes

    @rule(
        stream=st.sampled_from(STREAMS),
        batch=st.lists(events, max_size=4),
        expect=st.sampled_from(["none", "right", "wrong"]),
    )
    def append(self, stream: str, batch: list[nova.Event], expect: str) -> None:
        version = self.versions.get(stream, 0)
        expected = {"none": None, "right": version, "wrong": version + 1}[expect]
        for store in self.stores:
            if expect == "wrong":
                try:
                    store.append(stream, *batch, expected_version=expected)
                except ConcurrencyError:
                    continue
                raise AssertionError("no ConcurrencyError")
            assert store.append(stream, *batch, expected_version=expected) == version + len(batch)
        if expect == "wrong" or not batch:
            return
        held = self.streams.setdefault(stream, {})
        for i, e in enumerate(batch):
            held[version + i] = e
            self.all[self.global_version + i] = (stream, e)
        self.versions[stream] = version + len(batch)
        self.global_version += len(batch)

    @rule(cut=st.integers(0, 22))
    def expire(self, cut: int) -> None:
        cutoff = T0 + timedelta(seconds=cut)
        gone = sum(1 for _, e in self.all.values() if e.timestamp < cutoff)
        for store in self.stores:
            assert store._sweep_before(cutoff) == gone
        self.all = {p: (s, e) for p, (s, e) in self.all.items() if e.timestamp >= cutoff}
        for held in self.streams.values():
            for p in [p for p, e in held.items() if e.timestamp < cutoff]:
                del held[p]

    # ------------------------------------------------------------ reads

    def model_read(self, stream: str, position: int, limit: int) -> tuple[list[nova.Event], int]:
        if stream == "$all":
            held = {p: e for p, (_, e) in self.all.items()}
        else:
            held = self.streams.get(stream, {})
        found = sorted(p for p in held if p >= position)[:limit]
        return [held[p] for p in found], (found[-1] + 1 if found else position)

    @rule(
        stream=st.sampled_from([*STREAMS, "$all", "never"]),
        position=st.integers(0, 12),
        limit=st.integers(0, 5),
        as_cursor=st.booleans(),
    )
    def read(self, stream: str, position: int, limit: int, as_cursor: bool) -> None:
        expected, after = self.model_read(stream, position, limit)
        cursor: Cursor | int = Cursor(stream, position) if as_cursor else position
        for store in self.stores:
            got, next_cursor = store.read(stream, cursor, limit=limit)
            assert keys(got) == keys(expected)
            assert next_cursor == Cursor(stream, after)

    @rule(stream=st.sampled_from([*STREAMS, "$all"]), position=st.integers(0, 12))
    def read_stream(self, stream: str, position: int) -> None:
        expected, _ = self.model_read(stream, position, 10**9)
        for store in self.stores:
            assert keys(store.read_stream(stream, position)) == keys(expected)

    def selected(
        self, streams: list[str] | None, start: datetime | None, end: datetime | None
    ) -> list[nova.Event]:
        return [
            e
            for _, (s, e) in sorted(self.all.items())
            if (streams is None or s in streams)
            and (start is None or e.timestamp >= start)
            and (end is None or e.timestamp < end)
        ]

    @rule(start=bounds, end=bounds, streams=stream_sets)
    def read_time_range(
        self, start: datetime | None, end: datetime | None, streams: list[str] | None
    ) -> None:
        expected = sorted(self.selected(streams, start, end), key=lambda e: e.timestamp)
        for store in self.stores:
            assert keys(store.read_time_range(start, end, streams=streams)) == keys(expected)

    @rule(start=bounds, end=bounds, streams=stream_sets)
    def replay(self, start: datetime | None, end: datetime | None, streams: list[str] | None) -> None:
        expected = self.selected(streams, start, end)
        for store in self.stores:
            assert keys(store.replay(start, end, streams=streams)) == keys(expected)

    def model_info(self, stream: str) -> StreamInfo:
        if stream == "$all":
            held = {p: e for p, (_, e) in self.all.items()}
            version = self.global_version
        else:
            held, version = self.streams[stream], self.versions[stream]
        order = sorted(held)
        return StreamInfo(
            stream=stream,
            event_count=len(held),
            first_timestamp=held[order[0]].timestamp.astimezone(UTC) if order else None,
            last_timestamp=held[order[-1]].timestamp.astimezone(UTC) if order else None,
            version=version,
        )

    @rule(stream=st.sampled_from([*STREAMS, "$all"]))
    def stream_info(self, stream: str) -> None:
        for store in self.stores:
            if stream != "$all" and stream not in self.versions:
                try:
                    store.stream_info(stream)
                except StreamNotFound:
                    continue
                raise AssertionError("no StreamNotFound")
            assert store.stream_info(stream) == self.model_info(stream)

    @precondition(lambda self: self.global_version > 0)
    @rule(data=st.data())
    def subscribe_catches_up(self, data: st.DataObject) -> None:
        stream = data.draw(st.sampled_from([s for s in self.versions] + ["$all"]))
        position = data.draw(st.integers(0, 6))
        expected, _ = self.model_read(stream, position, 10**9)
        for store in self.stores:
            with store.subscribe(stream, position) as sub:
                guard = threading.Timer(5.0, sub.close)  # a wrong store fails, not hangs
                guard.start()
                try:
                    got = [e for _, e in zip(expected, sub)]
                finally:
                    guard.cancel()
            assert keys(got) == keys(expected)

    @invariant()
    def listings_and_totals_agree(self) -> None:
        expected = [self.model_info(s) for s in sorted(self.versions)]
        for store in self.stores:
            assert store.streams() == expected
            stats = store.stats()
            assert (stats.total_events, stats.total_streams) == (len(self.all), len(self.versions))

    @invariant()
    def reopened_sqlite_store_agrees(self) -> None:
        # Cheap enough to do now and then: every 7th step reopen the file.
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps % 7:
            return
        sqlite = self.stores[1]
        assert isinstance(sqlite, SqliteStore)
        sqlite.close()
        self.stores[1] = SqliteStore(sqlite.path)
        assert keys(self.stores[1].read_stream("$all")) == keys(e for _, (_, e) in sorted(self.all.items()))


StoreModel.TestCase.settings = settings(max_examples=75, stateful_step_count=30, deadline=None)
TestStoreModel = StoreModel.TestCase
