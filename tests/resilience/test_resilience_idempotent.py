"""nova.idempotent: skip events already processed, in memory or SQLite."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import nova
from nova.errors import ValidationError
from nova.resilience import (
    ListenerConfig,
    ListenerManager,
    ManualClock,
    MemorySeenSet,
    RetryPolicy,
    SqliteSeenSet,
    idempotent,
)


def recorder() -> Any:
    calls: list[str] = []

    def process_order(event: nova.Event) -> None:
        calls.append(event.id)

    process_order.calls = calls  # type: ignore[attr-defined]
    return process_order


def test_keeps_the_name_and_skips_duplicates() -> None:
    handler = recorder()
    wrapped = idempotent(handler)
    assert isinstance(wrapped, nova.Listener)
    assert wrapped.name == handler.__qualname__
    named = idempotent(nova.Listener("order-processor", handler))
    assert named.name == "order-processor"
    event = nova.Event("order.created")
    wrapped.handler(event)
    wrapped.handler(event)
    wrapped.handler(nova.Event("order.created", id=event.id))  # same id, a redelivery
    assert handler.calls == [event.id]
    assert event.id in wrapped.seen


def test_through_an_emitter() -> None:
    handler = recorder()
    em = nova.Emitter()
    sub = em.subscribe("order.created", idempotent(nova.Listener("order-processor", handler)))
    assert sub.listener.name == "order-processor"
    event = nova.Event("order.created")
    for _ in range(3):
        em.emit(event)
    em.emit(nova.Event("order.created"))
    assert len(handler.calls) == 2
    em.shutdown()


def test_a_failed_attempt_is_not_marked() -> None:
    attempts: list[int] = []

    def flaky(event: nova.Event) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("down")

    wrapped = idempotent(flaky)
    event = nova.Event("x")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            wrapped.handler(event)
    assert event.id not in wrapped.seen
    wrapped.handler(event)
    wrapped.handler(event)
    assert len(attempts) == 3


def test_with_retries_in_a_manager() -> None:
    attempts: list[int] = []

    def flaky(event: nova.Event) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("down")

    mgr = ListenerManager(clock=ManualClock())
    managed = mgr.register(
        idempotent(nova.Listener("l", flaky)), ListenerConfig(retry=RetryPolicy(max_attempts=3))
    )
    event = nova.Event("x")
    managed(event)
    managed(event)  # redelivered after success: skipped
    assert len(attempts) == 2
    assert managed.name == "l"


def test_on_error_that_handles_counts_as_processed() -> None:
    handled: list[BaseException] = []

    def bad(event: nova.Event) -> None:
        raise ValueError("x")

    wrapped = idempotent(nova.Listener("l", bad, on_error=lambda e, exc: handled.append(exc)))
    event = nova.Event("x")
    wrapped.handler(event)
    wrapped.handler(event)
    assert len(handled) == 1


def test_custom_key() -> None:
    handler = recorder()
    wrapped = idempotent(handler, key=lambda e: e.data["order_id"])
    wrapped.handler(nova.Event("x", {"order_id": 1}))
    wrapped.handler(nova.Event("x", {"order_id": 1}))  # a different event, same order
    wrapped.handler(nova.Event("x", {"order_id": 2}))
    assert len(handler.calls) == 2


def test_sqlite_seen_set_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    handler = recorder()
    event = nova.Event("x")
    first = idempotent(handler, seen=path)
    first.handler(event)
    first.seen.close()
    second = idempotent(handler, seen=str(path))
    second.handler(event)
    second.handler(nova.Event("x"))
    assert len(handler.calls) == 2
    assert len(second.seen) == 2
    second.seen.close()


def test_memory_seen_set_is_bounded() -> None:
    seen = MemorySeenSet(max_size=3)
    for k in "abcd":
        seen.add(k)
    assert "a" not in seen and all(k in seen for k in "bcd")
    assert len(seen) == 3
    with pytest.raises(ValidationError):
        MemorySeenSet(max_size=0)
    unbounded = MemorySeenSet(max_size=None)
    for i in range(1000):
        unbounded.add(i)
    assert len(unbounded) == 1000


def test_shared_seen_set_object() -> None:
    seen = MemorySeenSet()
    a, b = recorder(), recorder()
    event = nova.Event("x")
    idempotent(a, seen=seen).handler(event)
    idempotent(b, seen=seen).handler(event)
    assert len(a.calls) == 1 and b.calls == []


def test_bad_arguments() -> None:
    with pytest.raises(ValidationError, match="seen"):
        idempotent(recorder(), seen=42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="key"):
        idempotent(recorder(), key="id")  # type: ignore[arg-type]


def test_concurrent_duplicates_run_once() -> None:
    calls: list[int] = []

    def slow(event: nova.Event) -> None:
        calls.append(1)
        time.sleep(0.05)

    wrapped = idempotent(slow)
    event = nova.Event("x")
    threads = [threading.Thread(target=wrapped.handler, args=(event,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1]


def test_async_listener() -> None:
    calls: list[str] = []

    async def handler(event: nova.Event) -> None:
        await asyncio.sleep(0)
        calls.append(event.id)

    wrapped = idempotent(handler)
    event = nova.Event("x")
    mgr = ListenerManager()
    managed = mgr.register(wrapped)
    managed(event)
    managed(event)
    assert calls == [event.id]
    em = nova.Emitter()
    em.subscribe("x", wrapped)
    em.emit(event)
    assert calls == [event.id]
    em.shutdown()


def test_sqlite_seen_set_direct(tmp_path: Path) -> None:
    with SqliteSeenSet(tmp_path / "s.db") as seen:
        seen.add("k")
        assert "k" in seen and "j" not in seen
        seen.discard("k")
        assert "k" not in seen
        seen.add(5)
        assert "5" in seen and 5 in seen
        seen.clear()
        assert len(seen) == 0
