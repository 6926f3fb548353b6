"""The event store API (section 13), run against both MemoryStore and SqliteStore."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import nova
from nova.errors import (
    ConcurrencyError,
    StoreClosed,
    StoreFull,
    StreamNotFound,
    ValidationError,
)
from nova.store import Cursor, MemoryStore, SqliteStore, StoreStats, StreamInfo

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

Store = MemoryStore | SqliteStore
MakeStore = Callable[..., Store]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    stores: list[Store] = []

    def make(**kwargs: Any) -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore(**kwargs)
        else:
            store = SqliteStore(tmp_path / f"store{len(stores)}.db", **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def any_store(make_store: MakeStore) -> Store:
    return make_store()


def ev(i: int, *, at: float | None = None, type: str = "test.event") -> nova.Event:
    ts = None if at is None else T0 + timedelta(seconds=at)
    return nova.Event(type, {"i": i}, metadata={"n": str(i)}, timestamp=ts)


def data(events: list[nova.Event]) -> list[int]:
    return [e.data["i"] for e in events]


# ---------------------------------------------------------------- append and read


def test_append_returns_the_new_version_and_read_follows_cursors(any_store: Store) -> None:
    assert any_store.append("orders", ev(0), ev(1)) == 2
    assert any_store.append("orders", ev(2)) == 3
    events, cursor = any_store.read("orders", 0, limit=2)
    assert data(events) == [0, 1]
    assert cursor == Cursor("orders", 2)
    events, cursor = any_store.read("orders", cursor)
    assert data(events) == [2]
    assert cursor == Cursor("orders", 3)
    events, cursor = any_store.read("orders", cursor)
    assert events == [] and cursor == Cursor("orders", 3)


def test_read_keeps_every_field(any_store: Store) -> None:
    e = nova.Event(
        "order.created", {"id": 7, "items": [1, 2], "ok": True, "x": None}, metadata={"k": "v"}, timestamp=T0
    )
    any_store.append("s", e)
    [got] = any_store.read_stream("s")
    assert (got.id, got.type, got.data, dict(got.metadata), got.timestamp) == (
        e.id,
        e.type,
        e.data,
        {"k": "v"},
        T0,
    )
    assert isinstance(got, nova.Event)


def test_reading_a_missing_stream_gives_nothing(any_store: Store) -> None:
    assert any_store.read("nope") == ([], Cursor("nope", 0))
    assert any_store.read("nope", 5) == ([], Cursor("nope", 5))
    assert any_store.read_stream("nope") == []


def test_read_limit_zero_and_read_stream_start(any_store: Store) -> None:
    any_store.append("s", *(ev(i) for i in range(5)))
    assert any_store.read("s", 1, limit=0) == ([], Cursor("s", 1))
    assert data(any_store.read_stream("s", 3)) == [3, 4]
    assert data(any_store.read_stream("s", Cursor("s", 4))) == [4]


def test_expected_version(any_store: Store) -> None:
    assert any_store.append("s", ev(0), expected_version=0) == 1
    assert any_store.append("s", ev(1), expected_version=1) == 2
    with pytest.raises(ConcurrencyError) as info:
        any_store.append("s", ev(2), ev(3), expected_version=1)
    assert "'s'" in str(info.value) and "2" in str(info.value)
    assert data(any_store.read_stream("s")) == [0, 1]
    with pytest.raises(ConcurrencyError):
        any_store.append("new", ev(4), expected_version=3)
    with pytest.raises(StreamNotFound):
        any_store.stream_info("new")


def test_empty_append_returns_the_version_without_creating_the_stream(any_store: Store) -> None:
    assert any_store.append("s") == 0
    assert any_store.streams() == []
    any_store.append("s", ev(0))
    assert any_store.append("s", expected_version=1) == 1
    with pytest.raises(ConcurrencyError):
        any_store.append("s", expected_version=0)


@pytest.mark.parametrize("stream", ["", 5, None, b"s"])
def test_bad_stream_names_are_rejected(any_store: Store, stream: Any) -> None:
    with pytest.raises(ValidationError, match="stream"):
        any_store.append(stream, ev(0))


def test_all_is_not_appendable(any_store: Store) -> None:
    with pytest.raises(ValidationError, match=r"\$all"):
        any_store.append("$all", ev(0))


def test_non_events_are_rejected_and_nothing_is_appended(any_store: Store) -> None:
    with pytest.raises(ValidationError, match=r"events\[1\]"):
        any_store.append("s", ev(0), {"type": "x"})  # type: ignore[arg-type]
    assert any_store.read_stream("s") == []
    with pytest.raises(ValidationError, match="expected_version"):
        any_store.append("s", ev(0), expected_version=-1)
    with pytest.raises(ValidationError, match="expected_version"):
        any_store.append("s", ev(0), expected_version=True)


def test_bad_read_arguments(any_store: Store) -> None:
    with pytest.raises(ValidationError, match="cursor"):
        any_store.read("s", -1)
    with pytest.raises(ValidationError, match="cursor"):
        any_store.read("s", Cursor("other", 0))
    with pytest.raises(ValidationError, match="limit"):
        any_store.read("s", 0, limit=-1)
    with pytest.raises(ValidationError, match="start"):
        any_store.read_time_range("yesterday", None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="streams"):
        any_store.read_time_range(None, None, streams=[1])  # type: ignore[list-item]


def test_subclasses(make_store: MakeStore) -> None:
    class OrderCreated(nova.Event):
        pass

    store = make_store()
    e = OrderCreated("order.created", {"n": 1})
    store.append("s", e)
    [got] = store.read_stream("s")
    assert got.type == "order.created" and got == e
    if isinstance(store, MemoryStore):
        assert got is e  # the object itself
    else:
        assert type(got) is nova.Event  # JSON keeps the type name, not the class


# ---------------------------------------------------------------- $all


def test_all_has_global_positions_in_append_order(any_store: Store) -> None:
    any_store.append("a", ev(0))
    any_store.append("b", ev(1), ev(2))
    any_store.append("a", ev(3))
    events, cursor = any_store.read("$all")
    assert data(events) == [0, 1, 2, 3] and cursor == Cursor("$all", 4)
    events, cursor = any_store.read("$all", Cursor("$all", 2), limit=1)
    assert data(events) == [2] and cursor == Cursor("$all", 3)
    assert [s.stream for s in any_store.streams()] == ["a", "b"]
    info = any_store.stream_info("$all")
    assert (info.event_count, info.version) == (4, 4)


# ---------------------------------------------------------------- time ranges, replay


def test_read_time_range_is_in_time_order_with_ties_in_append_order(any_store: Store) -> None:
    any_store.append("a", ev(0, at=5), ev(1, at=1))
    any_store.append("b", ev(2, at=3), ev(3, at=1))
    any_store.append("a", ev(4, at=9))
    assert data(any_store.read_time_range(None, None)) == [1, 3, 2, 0, 4]
    # start inclusive, end exclusive
    assert data(any_store.read_time_range(T0 + timedelta(seconds=1), T0 + timedelta(seconds=5))) == [1, 3, 2]
    assert data(any_store.read_time_range(T0 + timedelta(seconds=3), None, streams=["a"])) == [0, 4]
    assert data(any_store.read_time_range(None, None, streams="b")) == [3, 2]


def test_naive_datetimes_mean_utc(any_store: Store) -> None:
    any_store.append("a", ev(0, at=0), ev(1, at=10))
    naive = (T0 + timedelta(seconds=5)).replace(tzinfo=None)
    assert data(any_store.read_time_range(naive, None)) == [1]
    assert data(list(any_store.replay(None, naive))) == [0]


def test_timestamps_in_other_zones_compare_as_instants(any_store: Store) -> None:
    plus2 = timezone(timedelta(hours=2))
    e = nova.Event("x.y", 1, timestamp=datetime(2024, 5, 1, 14, 0, 30, tzinfo=plus2))
    any_store.append("a", e)  # 12:00:30 UTC
    assert any_store.read_time_range(T0, T0 + timedelta(minutes=1)) == [e]
    assert any_store.read_time_range(T0 + timedelta(minutes=1), None) == []
    [got] = any_store.read_stream("a")
    assert got.timestamp == e.timestamp


def test_replay_streams_in_append_order_and_is_lazy(any_store: Store) -> None:
    for i in range(2500):
        any_store.append("ab"[i % 2], ev(i, at=i))
    it = any_store.replay()
    assert iter(it) is it
    assert [next(it).data["i"] for _ in range(3)] == [0, 1, 2]
    assert data(list(it)) == list(range(3, 2500))
    assert data(list(any_store.replay(streams=["b"], start=T0 + timedelta(seconds=2000)))) == list(
        range(2001, 2500, 2)
    )
    assert data(list(any_store.replay(T0 + timedelta(seconds=10), T0 + timedelta(seconds=13)))) == [
        10,
        11,
        12,
    ]


def test_replay_stops_at_the_events_present_at_the_call(any_store: Store) -> None:
    any_store.append("a", ev(0), ev(1))
    it = any_store.replay()
    any_store.append("a", ev(2))
    assert data(list(it)) == [0, 1]


# ---------------------------------------------------------------- info and stats


def test_stream_info_and_streams(any_store: Store) -> None:
    with pytest.raises(StreamNotFound, match="'ghost'"):
        any_store.stream_info("ghost")
    any_store.append("b", ev(0, at=7), ev(1, at=3))
    any_store.append("a", ev(2, at=1))
    info = any_store.stream_info("b")
    assert info == StreamInfo("b", 2, T0 + timedelta(seconds=7), T0 + timedelta(seconds=3), 2)
    assert any_store.streams() == [any_store.stream_info("a"), info]
    assert isinstance(info.first_timestamp, datetime)
    assert info.first_timestamp.utcoffset() == timedelta(0)


def test_stats_count_reads_and_replays(any_store: Store) -> None:
    assert any_store.stats() == StoreStats(0, 0, 0, 0, 0)
    any_store.append("a", ev(0), ev(1), ev(2))
    any_store.append("b", ev(3))
    any_store.read("a", 0, limit=2)
    any_store.read_stream("b")
    list(any_store.replay())
    any_store.read_time_range(None, None, streams=["a"])
    stats = any_store.stats()
    assert stats == StoreStats(
        total_events=4, total_streams=2, events_appended=4, events_read=2 + 1 + 4 + 3, active_subscriptions=0
    )


def test_value_types_are_frozen() -> None:
    cursor = Cursor("s")
    assert cursor.position == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cursor.position = 3  # type: ignore[misc]
    for cls in (StreamInfo, StoreStats):
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="position"):
        Cursor("s", -1)
    with pytest.raises(ValidationError, match="stream"):
        Cursor("", 0)


# ---------------------------------------------------------------- closing


def test_close_is_idempotent_and_then_everything_raises(make_store: MakeStore) -> None:
    store = make_store()
    store.append("s", ev(0))
    store.close()
    store.close()
    assert store.closed
    calls: list[Callable[[], object]] = [
        lambda: store.append("s", ev(1)),
        lambda: store.read("s"),
        lambda: store.read_stream("s"),
        lambda: store.read_time_range(None, None),
        lambda: store.replay(),
        lambda: store.subscribe("s"),
        lambda: store.subscribe_async("s"),
        lambda: store.stream_info("s"),
        lambda: store.streams(),
        lambda: store.stats(),
    ]
    for call in calls:
        with pytest.raises(StoreClosed, match=store.name):
            call()


def test_context_manager(make_store: MakeStore) -> None:
    with make_store() as store:
        store.append("s", ev(0))
    assert store.closed
    with pytest.raises(StoreClosed):
        store.read("s")


def test_a_replay_in_progress_raises_when_the_store_closes(make_store: MakeStore) -> None:
    store = make_store()
    store.append("s", *(ev(i) for i in range(3000)))
    it = store.replay()
    next(it)
    store.close()
    with pytest.raises(StoreClosed):
        list(it)


# ---------------------------------------------------------------- subscriptions


def test_subscribe_yields_past_then_live_events(any_store: Store) -> None:
    any_store.append("s", ev(0), ev(1), ev(2))
    got: list[int] = []
    with any_store.subscribe("s", 1) as sub:
        assert any_store.stats().active_subscriptions == 1

        def consume() -> None:
            for e in sub:
                got.append(e.data["i"])
                if len(got) == 4:
                    break

        t = threading.Thread(target=consume)
        t.start()
        time.sleep(0.05)
        any_store.append("other", ev(99))
        any_store.append("s", ev(3), ev(4))
        t.join(5)
        assert not t.is_alive()
        assert sub.cursor == Cursor("s", 5)
    assert got == [1, 2, 3, 4]
    assert sub.closed and any_store.stats().active_subscriptions == 0


def test_closing_a_subscription_wakes_a_waiting_thread(any_store: Store) -> None:
    sub = any_store.subscribe("$all")
    done = threading.Event()

    def consume() -> None:
        for _ in sub:
            pass
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    time.sleep(0.05)
    sub.close()
    sub.close()
    assert done.wait(5)


def test_a_subscription_ends_when_the_store_closes(make_store: MakeStore) -> None:
    store = make_store()
    store.append("s", ev(0))
    sub = store.subscribe("s")
    got: list[nova.Event] = []
    done = threading.Event()

    def consume() -> None:
        got.extend(sub)
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    time.sleep(0.05)
    store.close()
    assert done.wait(5)
    assert data(got) == [0]
    assert sub.closed


def test_subscribe_async(any_store: Store) -> None:
    import asyncio

    any_store.append("s", ev(0))

    async def main() -> list[int]:
        async with any_store.subscribe_async("s") as sub:
            got = [(await sub.__anext__()).data["i"]]
            waiting = asyncio.create_task(sub.__anext__())
            # The loop keeps running while the subscription waits: were the wait blocking,
            # this sleep could not end (nothing else would append).
            await asyncio.sleep(0.05)
            assert not waiting.done()
            # an append from another thread, as a bus worker would do, wakes it up
            await asyncio.to_thread(any_store.append, "s", ev(1), ev(2))
            got.append((await asyncio.wait_for(waiting, 5)).data["i"])
            async for e in sub:
                got.append(e.data["i"])
                break
        assert sub.closed
        return got

    assert asyncio.run(main()) == [0, 1, 2]
    assert any_store.stats().active_subscriptions == 0


def test_subscribe_async_ends_when_the_store_closes(make_store: MakeStore) -> None:
    import asyncio

    store = make_store()

    async def main() -> list[nova.Event]:
        sub = store.subscribe_async("$all")

        async def close_soon() -> None:
            await asyncio.sleep(0.05)
            store.close()

        closer = asyncio.create_task(close_soon())
        got = [e async for e in sub]
        await closer
        return got

    assert asyncio.run(asyncio.wait_for(main(), 5)) == []


# ---------------------------------------------------------------- retention


def test_retention_removes_old_events_in_the_background(make_store: MakeStore) -> None:
    store = make_store(retention=0.3)
    now = datetime.now(UTC)
    old = [nova.Event("x.y", i, timestamp=now - timedelta(hours=1)) for i in range(3)]
    store.append("s", old[0], old[1])
    store.append("s", nova.Event("x.y", 10))
    store.append("t", old[2])
    deadline = time.monotonic() + 5
    while store.stats().total_events != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    events, cursor = store.read("s")
    assert [e.data for e in events] == [10]
    assert cursor == Cursor("s", 3)  # positions do not move
    assert store.stream_info("s").event_count == 1
    assert store.stream_info("s").version == 3
    assert store.stream_info("t").event_count == 0
    assert [e.data for e in store.read("$all")[0]] == [10]
    assert store.append("s", nova.Event("x.y", 11)) == 4
    sweeper = store._sweeper
    assert sweeper is not None and sweeper._thread.is_alive()
    store.close()
    assert not sweeper._thread.is_alive()


def test_retention_is_checked(make_store: MakeStore) -> None:
    for bad in (0, -1, float("nan"), "1", True):
        with pytest.raises(ValidationError, match="retention"):
            make_store(retention=bad)


# ---------------------------------------------------------------- MemoryStore limits


def test_memory_limits() -> None:
    with MemoryStore(max_events_per_stream=3, max_streams=2, name="mem") as store:
        store.append("a", ev(0), ev(1))
        with pytest.raises(StoreFull, match="max_events_per_stream") as info:
            store.append("a", ev(2), ev(3))
        assert "mem" in str(info.value)
        assert store.stream_info("a").version == 2
        store.append("a", ev(2))
        store.append("b", ev(3))
        with pytest.raises(StoreFull, match="max_streams"):
            store.append("c", ev(4))
        with pytest.raises(StoreFull):
            store.append("b", ev(5), ev(6), ev(7))
        assert store.stats().total_events == 4
        assert data(store.read("$all")[0]) == [0, 1, 2, 3]
    with pytest.raises(ValidationError, match="max_streams"):
        MemoryStore(max_streams=0)


def test_memory_retention_frees_room_under_the_limit() -> None:
    with MemoryStore(max_events_per_stream=2) as store:
        store.append("a", nova.Event("x.y", 0, timestamp=T0), nova.Event("x.y", 1))
        with pytest.raises(StoreFull):
            store.append("a", nova.Event("x.y", 2))
        assert store._sweep_before(T0 + timedelta(seconds=1)) == 1
        assert store.append("a", nova.Event("x.y", 2)) == 3


def test_memory_retention_over_many_chunks() -> None:
    # Timestamps out of order across several retention chunks: every old one goes.
    with MemoryStore(max_events_per_stream=50_000) as store:
        n = 10_000
        events = [nova.Event("x.y", i, timestamp=T0 + timedelta(seconds=(i * 7919) % n)) for i in range(n)]
        for i in range(0, n, 100):
            store.append("a", *events[i : i + 100])
        cut = n // 2
        assert store._sweep_before(T0 + timedelta(seconds=cut)) == cut
        left = store.read_stream("a")
        assert sorted(e.data for e in left) == sorted(i for i in range(n) if (i * 7919) % n >= cut)
        assert store._sweep_before(T0 + timedelta(seconds=cut)) == 0
        assert store._sweep_before(T0 + timedelta(seconds=n)) == n - cut
        assert store.read_stream("a") == [] and store.read("$all")[0] == []
        assert store.append("a", ev(1)) == n + 1
        assert store.read("$all", 0)[1] == Cursor("$all", n + 1)
