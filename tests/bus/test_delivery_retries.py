"""Retries through the core: waiting on timers, holding back only the failing subscriber's
partition, dead letters, and nothing lost at shutdown (API sections 6 and 7)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import pytest

import nova
from nova import (
    Backoff,
    Bus,
    DeadLetterConfig,
    DeadLetterQueue,
    DeliveryMode,
    Emitter,
    Event,
    ListenerConfig,
    OnFull,
    RetryPolicy,
)


def fast_retry(attempts: int = 3, delay: float = 0.01) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, initial_delay=delay, backoff=Backoff.FIXED)


def test_at_least_once_default_config_retries_three_times() -> None:
    bus = Bus()
    calls: list[int] = []

    def flaky(e: Event) -> None:
        calls.append(1)
        raise nova.RetryableError("try again")

    bus.subscribe("t", flaky, config=ListenerConfig(retry=fast_retry()))
    bus.publish("t", Event("a.b"))
    assert bus.flush(5)
    s = bus.stats()
    assert len(calls) == 3 and s.failed_events == 1 and s.events_processed == 1
    bus.shutdown()


def test_default_subscriber_config_on_at_least_once_topic_is_three_attempts() -> None:
    bus = Bus()
    calls: list[int] = []
    sub = bus.subscribe("t", lambda e: calls.append(1))
    assert hasattr(sub.listener.handler, "attempt")  # a managed listener
    assert sub.listener.handler.config == ListenerConfig()
    bus.shutdown()


def test_retry_recovers_and_dead_letters_when_exhausted() -> None:
    dlq = DeadLetterQueue()
    bus = Bus()
    attempts: dict[int, int] = defaultdict(int)

    def h(e: Event) -> None:
        attempts[e.data] += 1
        if e.data == 0 and attempts[0] < 2:
            raise nova.RetryableError("once")
        if e.data == 1:
            raise ValueError("always")

    cfg = ListenerConfig(retry=fast_retry(3), dead_letter=DeadLetterConfig(queue=dlq))
    bus.subscribe("orders", nova.Listener("h", h), config=cfg)
    bus.publish("orders", Event("order.created", 0))
    bus.publish("orders", Event("order.created", 1))
    assert bus.flush(5)
    assert attempts == {0: 2, 1: 3}
    [entry] = dlq.list()
    assert (entry.event.data, entry.error_type, entry.attempts, entry.listener, entry.topic) == (
        1,
        "ValueError",
        3,
        "h",
        "orders",
    )
    # redrive hands it back to the bus topic
    calls_before = attempts[1]
    assert dlq.redrive(bus) == 1 and dlq.count() == 0
    assert bus.flush(5)
    assert attempts[1] == calls_before + 3
    bus.shutdown()


def test_permanent_errors_are_not_retried() -> None:
    bus = Bus()
    calls: list[int] = []

    def h(e: Event) -> None:
        calls.append(1)
        raise nova.PermanentError("bad data")

    bus.subscribe("t", h, config=ListenerConfig(retry=fast_retry(5)))
    bus.publish("t", Event("a.b"))
    assert bus.flush(5)
    assert calls == [1]
    bus.shutdown()


def test_a_retry_holds_back_only_its_subscriber_partition_and_keeps_order() -> None:
    bus = Bus(pool=nova.WorkerPool(2))
    bus.create_topic("orders", partitions=4, ordering_key="k", on_full=OnFull.BLOCK)
    got: dict[str, list[int]] = defaultdict(list)
    other: list[int] = []
    lock = threading.Lock()
    failed_once: set[int] = set()

    def slow_to_succeed(e: Event) -> None:
        if e.data % 10 == 0 and e.data not in failed_once:
            failed_once.add(e.data)
            raise nova.RetryableError("later")
        with lock:
            got[e.metadata["k"]].append(e.data)

    bus.subscribe("orders", slow_to_succeed, config=ListenerConfig(retry=fast_retry(3, 0.05)))
    bus.subscribe("orders", lambda e: other.append(e.data), config=ListenerConfig(retry=fast_retry(1)))
    for i in range(200):
        bus.publish("orders", Event("order.created", i, metadata={"k": f"k{i % 7}"}))
    assert bus.flush(10)
    assert sum(map(len, got.values())) == 200
    assert all(v == sorted(v) for v in got.values())
    assert sorted(other) == list(range(200))
    bus.shutdown()


def test_a_failing_retrying_subscriber_does_not_slow_the_others() -> None:
    bus = Bus(pool=nova.WorkerPool(2))
    bus.create_topic("t", partitions=2, on_full=OnFull.BLOCK)
    fast: list[int] = []

    def always_fails(e: Event) -> None:
        raise nova.RetryableError("down")

    bus.subscribe("t", always_fails, config=ListenerConfig(retry=fast_retry(3, 1.0)))
    bus.subscribe("t", lambda e: fast.append(1), config=ListenerConfig(retry=fast_retry(1)))
    started = time.monotonic()
    for i in range(100):
        bus.publish("t", Event("a.b", i))
    deadline = time.monotonic() + 5
    while len(fast) < 100 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(fast) == 100 and time.monotonic() - started < 1.0
    report = bus.shutdown(timeout=0.2)
    # every event of the failing subscriber is still accounted for: waiting for a retry
    assert len(report.undelivered) == 100


def test_exactly_once_marks_only_after_success() -> None:
    bus = Bus()
    bus.create_topic("t", delivery_mode=DeliveryMode.EXACTLY_ONCE)
    calls: list[int] = []

    def h(e: Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise nova.RetryableError("first try fails")

    bus.subscribe("t", h, config=ListenerConfig(retry=fast_retry(3)))
    ev = Event("a.b")
    bus.publish("t", ev)
    assert bus.flush(5)
    bus.publish("t", ev)  # same id again: processed once already
    assert bus.flush(5)
    assert len(calls) == 2
    bus.shutdown()


def test_emitter_async_managed_listener_retries_on_timers() -> None:
    em = Emitter(pool=nova.WorkerPool(1))
    calls: list[float] = []

    def flaky(e: Event) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise nova.RetryableError("again")

    em.subscribe(
        "x.y",
        flaky,
        config=ListenerConfig(
            retry=RetryPolicy(max_attempts=3, initial_delay=0.05, backoff=Backoff.EXPONENTIAL)
        ),
    )
    em.emit_async(Event("x.y"))
    assert em.flush(5)
    assert len(calls) == 3
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert 0.04 <= gaps[0] < 0.5 and 0.09 <= gaps[1] < 0.6
    assert em.stats().failed_events == 0
    em.shutdown()


def test_emitter_sync_emit_runs_the_whole_policy() -> None:
    dlq = DeadLetterQueue()
    em = Emitter()
    em.subscribe(
        "x.y",
        nova.Listener("bad", lambda e: 1 / 0),
        config=ListenerConfig(retry=fast_retry(2), dead_letter=DeadLetterConfig(queue=dlq)),
    )
    with pytest.raises(nova.ListenerError) as info:
        em.emit(Event("x.y"))
    assert isinstance(info.value.__cause__, nova.RetryLimitExceeded)
    assert dlq.count() == 1 and dlq.list()[0].topic is None
    em.shutdown()


def test_shutdown_mid_retry_reports_the_event() -> None:
    em = Emitter()
    em.subscribe("x.y", lambda e: 1 / 0, config=ListenerConfig(retry=fast_retry(3, 5.0)))
    ev = Event("x.y")
    em.emit_async(ev)
    time.sleep(0.1)
    report = em.shutdown(timeout=0.1)
    assert report.undelivered == [ev]


def test_bus_store_and_replay(tmp_path: Any) -> None:
    store = nova.SqliteStore(tmp_path / "events.db")
    bus = Bus(store=store, default_delivery_mode=DeliveryMode.AT_MOST_ONCE)
    bus.subscribe("orders", lambda e: None)
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    events = [Event("order.created", i, timestamp=t0 + timedelta(seconds=i)) for i in range(5)]
    for ev in events:
        bus.publish("orders", ev)
    bus.publish_batch(
        "orders", [Event("order.created", i, timestamp=t0 + timedelta(seconds=i)) for i in (5, 6)]
    )
    bus.publish("other", Event("x.y"))
    assert bus.flush(5)
    seen: list[int] = []
    assert bus.replay("orders", lambda e: seen.append(e.data)) == 7
    assert seen == list(range(7))
    seen.clear()
    assert bus.replay("orders", seen.append, start=events[2].timestamp, end=events[4].timestamp) == 2
    bus.shutdown()
    store.close()
