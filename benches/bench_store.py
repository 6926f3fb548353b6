"""pytest-benchmark suite of the event stores: ``pytest benches/bench_store.py --benchmark-only``.

Each append benchmark appends one batch of 100 fresh events per round (made in the setup,
outside the timing); the figures of issue 6 come from ``benches/store_figures.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nova
from nova.store import MemoryStore, SqliteStore

BATCH = 100


def batch(n: int = BATCH) -> tuple[nova.Event, ...]:
    return tuple(
        nova.Event("order.created", {"order_id": i, "amount": 12.5, "sku": "SKU-1"}) for i in range(n)
    )


def append_args(stream: str) -> Any:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (stream, *batch()), {}

    return setup


@pytest.fixture
def memory() -> Iterator[MemoryStore]:
    with MemoryStore(max_events_per_stream=10_000_000) as store:
        yield store


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "bench.db") as store:
        yield store


def filled(store: MemoryStore | SqliteStore, n: int) -> None:
    for _ in range(n // 1000):
        store.append("orders", *batch(1000))


def test_memory_append_batch_100(benchmark: Any, memory: MemoryStore) -> None:
    benchmark.pedantic(memory.append, setup=append_args("orders"), rounds=2000)


def test_sqlite_append_batch_100(benchmark: Any, sqlite: SqliteStore) -> None:
    benchmark.pedantic(sqlite.append, setup=append_args("orders"), rounds=300)


def test_sqlite_append_one_event(benchmark: Any, sqlite: SqliteStore) -> None:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ("orders", nova.Event("order.created", {"n": 1})), {}

    benchmark.pedantic(sqlite.append, setup=setup, rounds=500)


def test_memory_read_100(benchmark: Any, memory: MemoryStore) -> None:
    filled(memory, 10_000)
    benchmark(memory.read, "orders", 5000, 100)


def test_sqlite_read_100(benchmark: Any, sqlite: SqliteStore) -> None:
    filled(sqlite, 10_000)
    benchmark(sqlite.read, "orders", 5000, 100)


def test_sqlite_replay_10k(benchmark: Any, sqlite: SqliteStore) -> None:
    filled(sqlite, 10_000)
    result = benchmark.pedantic(lambda: sum(1 for _ in sqlite.replay()), rounds=5)
    assert result == 10_000


def test_memory_replay_10k(benchmark: Any, memory: MemoryStore) -> None:
    filled(memory, 10_000)
    result = benchmark(lambda: sum(1 for _ in memory.replay()))
    assert result == 10_000
