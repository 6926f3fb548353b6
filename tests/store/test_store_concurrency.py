"""Stores under concurrent use: optimistic concurrency with ``expected_version``, and the
switch from catch-up to live events while other threads append."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nova
from nova.errors import ConcurrencyError
from nova.store import MemoryStore, SqliteStore

Store = MemoryStore | SqliteStore


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    stores: list[Store] = []

    def make() -> Store:
        store: Store = (
            MemoryStore(max_events_per_stream=1_000_000)
            if request.param == "memory"
            else SqliteStore(tmp_path / "c.db")
        )
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def run_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    if errors:
        raise errors[0]


def race_for_versions(stores: list[Store], writers: int = 4, rounds: int = 60) -> None:
    """Each writer reads the version and appends with it as ``expected_version``; exactly
    one append wins per version and the stream holds exactly the winners, in order."""
    wins: list[tuple[int, int, str]] = []  # (expected, returned, event id)
    lock = threading.Lock()

    def writer(i: int) -> None:
        store = stores[i % len(stores)]
        for r in range(rounds):
            try:
                version = store.stream_info("race").version
            except nova.StreamNotFound:
                version = 0
            e = nova.Event("race.won", {"writer": i, "round": r})
            try:
                got = store.append("race", e, expected_version=version)
            except ConcurrencyError:
                continue
            with lock:
                wins.append((version, got, e.id))

    run_threads(writers, writer)
    wins.sort()
    assert [w[0] for w in wins] == list(range(len(wins)))  # one winner per version
    assert all(returned == expected + 1 for expected, returned, _ in wins)
    for store in stores:
        assert store.stream_info("race").version == len(wins)
        assert [e.id for e in store.read_stream("race")] == [w[2] for w in wins]
    assert len(wins) >= rounds  # progress: some round of every version was won


def test_one_winner_per_expected_version(make_store: Callable[[], Store]) -> None:
    race_for_versions([make_store()])


def test_one_winner_per_expected_version_across_sqlite_connections(tmp_path: Path) -> None:
    # Two store objects on one file: SQLite's own locking must keep the promise.
    stores = [SqliteStore(tmp_path / "shared.db") for _ in range(2)]
    try:
        race_for_versions(list(stores), writers=4, rounds=40)
    finally:
        for store in stores:
            store.close()


def test_batches_are_atomic_under_concurrent_appends(make_store: Callable[[], Store]) -> None:
    store = make_store()

    def writer(i: int) -> None:
        for r in range(50):
            store.append("s", *(nova.Event("b.x", {"w": i, "r": r, "k": k}) for k in range(3)))

    run_threads(4, writer)
    events = store.read_stream("s")
    assert len(events) == 4 * 50 * 3
    for j in range(0, len(events), 3):  # every batch contiguous
        batch = [e.data for e in events[j : j + 3]]
        assert [d["k"] for d in batch] == [0, 1, 2]
        assert len({(d["w"], d["r"]) for d in batch}) == 1
    assert [e.id for e in store.read_stream("$all")] == [e.id for e in events]


def collect(sub: Any, n: int, out: list[str]) -> None:
    for e in sub:
        out.append(e.id)
        if len(out) == n:
            break


@pytest.mark.parametrize("stream", ["s", "$all"])
def test_catch_up_then_live_without_gap_or_duplicate(make_store: Callable[[], Store], stream: str) -> None:
    store = make_store()
    before, writers, per_writer = 300, 2, 400
    for i in range(0, before, 10):
        store.append("s", *(nova.Event("t.x", i + k) for k in range(10)))
    total = before + writers * per_writer
    results: list[list[str]] = [[] for _ in range(3)]
    start = threading.Barrier(writers + 3)

    def subscriber(j: int) -> None:
        sub = store.subscribe(stream, 0 if j < 2 else 150)  # two from 0, one mid-way
        guard = threading.Timer(30, sub.close)
        guard.start()
        try:
            start.wait()
            collect(sub, total - (0 if j < 2 else 150), results[j])
        finally:
            guard.cancel()
            sub.close()

    def writer(i: int) -> None:
        start.wait()
        for r in range(per_writer):
            store.append("s", nova.Event("t.x", {"w": i, "r": r}))

    subscribers = [threading.Thread(target=subscriber, args=(j,)) for j in range(3)]
    for t in subscribers:
        t.start()
    run_threads(writers, writer)
    for t in subscribers:
        t.join(60)
    expected = [e.id for e in store.read_stream("s")]
    assert len(expected) == total
    assert results[0] == expected
    assert results[1] == expected
    assert results[2] == expected[150:]
    assert store.stats().active_subscriptions == 0


def test_async_catch_up_then_live_without_gap_or_duplicate(make_store: Callable[[], Store]) -> None:
    store = make_store()
    for i in range(0, 200, 20):
        store.append("s", *(nova.Event("t.x", i + k) for k in range(20)))
    total = 200 + 2 * 300

    def writer(i: int) -> None:
        for r in range(300):
            store.append("s", nova.Event("t.x", {"w": i, "r": r}))

    async def main() -> list[str]:
        got: list[str] = []
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
        async with store.subscribe_async("s") as sub:
            for t in threads:
                t.start()
            async for e in sub:
                got.append(e.id)
                if len(got) == total:
                    break
        for t in threads:
            await asyncio.to_thread(t.join, 60)
        return got

    got = asyncio.run(asyncio.wait_for(main(), 60))
    assert got == [e.id for e in store.read_stream("s")]


def test_many_threads_read_while_others_append(make_store: Callable[[], Store]) -> None:
    store = make_store()

    def worker(i: int) -> None:
        for r in range(100):
            if i % 2:
                store.append(f"s{i}", nova.Event("t.x", r))
            else:
                events, _ = store.read("$all", 0, limit=50)
                assert len({e.id for e in events}) == len(events)

    run_threads(6, worker)
    assert store.stats().total_events == 300
