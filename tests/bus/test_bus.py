"""nova.Bus: topics, partitions, ordering keys, patterns, delivery modes (API section 6)."""

from __future__ import annotations

import contextvars
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

import nova
from nova import Bus, DeliveryMode, Event, OnFull, TopicConfig

AMO = DeliveryMode.AT_MOST_ONCE


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@pytest.fixture
def amo_bus() -> Any:
    b = Bus(name="test-bus", default_delivery_mode=AMO)
    yield b
    b.shutdown(timeout=5)


def test_partition_is_fnv1a_of_the_key() -> None:
    for key in ["", "cust-1", "ünïcode", "x" * 100]:
        for n in (1, 3, 16):
            assert nova._core.partition(key, n) == (fnv1a64(key.encode()) % n if n > 1 else 0)


def _partitions_named_when_full(ordering_key: Any, events: list[Event]) -> list[tuple[Event, int]]:
    """Publish `events` to a 16-partition topic whose one worker is held inside the listener:
    each partition takes one event, and each refused one names its partition."""
    release = threading.Event()
    bus = Bus(pool=nova.WorkerPool(1), default_delivery_mode=AMO)
    bus.create_topic("t", partitions=16, buffer_size=1, delivery_mode=AMO, ordering_key=ordering_key)
    bus.subscribe("t", lambda e: release.wait(10))
    refused = []
    try:
        for ev in events:
            try:
                bus.publish("t", ev)
            except nova.BufferFull as e:
                refused.append((ev, int(str(e).split("partition ")[1].split()[0])))
    finally:
        release.set()
        bus.shutdown(timeout=5)
        bus.pool.close()
    assert len(refused) > len(events) - 20
    return refused


@pytest.mark.parametrize("id_read_first", [False, True])
def test_without_an_ordering_key_the_partition_is_that_of_the_event_id(id_read_first: bool) -> None:
    events = [Event("a.b", i) for i in range(200)]
    if id_read_first:
        assert all(ev.id for ev in events)  # the ids' str objects exist before the publish
    for ev, p in _partitions_named_when_full(None, events):
        assert p == nova._core.partition(ev.id, 16)


def test_topics_are_created_explicitly_or_on_first_use(amo_bus: Bus) -> None:
    amo_bus.create_topic("orders", partitions=4, ordering_key="customer_id")
    amo_bus.create_topic("orders", partitions=4, ordering_key="customer_id")  # same: no-op
    with pytest.raises(nova.ValidationError, match="orders"):
        amo_bus.create_topic("orders", partitions=8)
    amo_bus.publish("auto", Event("a.b"))
    amo_bus.subscribe("auto2", lambda e: None)
    assert amo_bus.topics() == ["auto", "auto2", "orders"]
    info = amo_bus.topic_info("orders")
    assert (info.name, info.partitions, info.delivery_mode, info.subscribers) == ("orders", 4, AMO, 0)
    assert amo_bus.topic_config("auto") == TopicConfig(delivery_mode=AMO)
    amo_bus.create_topic("with-config", TopicConfig(partitions=2, delivery_mode=AMO))
    assert amo_bus.topic_info("with-config").partitions == 2


def test_delete_topic(amo_bus: Bus) -> None:
    seen: list[Event] = []
    sub = amo_bus.subscribe("t", seen.append)
    amo_bus.delete_topic("t")
    assert not sub.active and "t" not in amo_bus.topics()
    with pytest.raises(nova.TopicNotFound):
        amo_bus.delete_topic("t")
    with pytest.raises(nova.TopicNotFound):
        amo_bus.topic_info("t")


def test_drop_policies_need_at_most_once() -> None:
    with pytest.raises(nova.ValidationError, match="AT_MOST_ONCE"):
        TopicConfig(on_full=OnFull.DROP_NEWEST)
    b = Bus()
    with pytest.raises(nova.ValidationError):
        b.create_topic("x", on_full=OnFull.DROP_OLDEST)
    with pytest.raises(nova.ValidationError, match="unknown"):
        b.create_topic("x", partitons=3)
    b.shutdown()


@pytest.mark.parametrize("key", ["customer_id", lambda e: e.metadata["customer_id"]])
def test_per_key_order_across_16_partitions(key: Any) -> None:
    bus = Bus(pool=nova.WorkerPool(4), default_delivery_mode=AMO)
    bus.create_topic("orders", partitions=16, ordering_key=key, on_full=OnFull.BLOCK, delivery_mode=AMO)
    got: dict[str, list[int]] = defaultdict(list)
    threads: set[int] = set()
    lock = threading.Lock()

    def h(e: Event) -> None:
        with lock:
            got[e.metadata["customer_id"]].append(e.data)
            threads.add(threading.get_ident())

    bus.subscribe("orders", h)
    for i in range(5000):
        bus.publish("orders", Event("order.created", i, metadata={"customer_id": f"c{i % 53}"}))
    assert bus.flush(20)
    assert sum(map(len, got.values())) == 5000
    assert all(v == sorted(v) for v in got.values())
    bus.shutdown()


def test_missing_metadata_key_uses_the_empty_key(amo_bus: Bus) -> None:
    amo_bus.create_topic("k", partitions=8, ordering_key="absent", delivery_mode=AMO, on_full=OnFull.BLOCK)
    got: list[int] = []
    amo_bus.subscribe("k", lambda e: got.append(e.data))
    for i in range(200):
        amo_bus.publish("k", Event("a.b", i))
    assert amo_bus.flush(5)
    assert got == list(range(200))  # one partition: one order


def test_callable_key_must_return_str(amo_bus: Bus) -> None:
    amo_bus.create_topic("k", partitions=4, ordering_key=lambda e: 42, delivery_mode=AMO)
    with pytest.raises(nova.ValidationError, match="str"):
        amo_bus.publish("k", Event("a.b"))


def test_pattern_subscriptions_see_existing_and_future_topics(amo_bus: Bus) -> None:
    seen: list[tuple[str, str]] = []
    amo_bus.create_topic("orders.eu", delivery_mode=AMO)
    sub = amo_bus.subscribe_pattern(r"orders\..*", lambda e: seen.append(("p", e.type)))
    amo_bus.create_topic("orders.us", delivery_mode=AMO)
    amo_bus.create_topic("ordersx", delivery_mode=AMO)
    amo_bus.publish("orders.eu", Event("a.eu"))
    amo_bus.publish("orders.us", Event("a.us"))
    amo_bus.publish("ordersx", Event("a.x"))
    amo_bus.publish("orders.new", Event("a.new"))  # created by publish
    assert amo_bus.flush(5)
    assert sorted(seen) == [("p", "a.eu"), ("p", "a.new"), ("p", "a.us")]
    sub.unsubscribe()
    amo_bus.publish("orders.eu", Event("a.after"))
    assert amo_bus.flush(5) and len(seen) == 3


def test_invalid_pattern_names_the_position(amo_bus: Bus) -> None:
    with pytest.raises(nova.ValidationError) as info:
        amo_bus.subscribe_pattern("orders.(eu", print)
    assert "^" in str(info.value) and "orders.(eu" in str(info.value)


def test_pathological_pattern_stays_fast(amo_bus: Bus) -> None:
    amo_bus.subscribe_pattern("(a+)+$", lambda e: None)
    name = "a" * 5000 + "b"
    started = time.perf_counter()
    amo_bus.create_topic(name, delivery_mode=AMO)
    assert time.perf_counter() - started < 1.0
    assert amo_bus.topic_info(name).subscribers == 0


def test_at_most_once_failures_are_counted_and_dropped(amo_bus: Bus) -> None:
    amo_bus.create_topic("t", delivery_mode=AMO)
    calls: list[int] = []

    def bad(e: Event) -> None:
        calls.append(e.data)
        raise RuntimeError("nope")

    amo_bus.subscribe("t", nova.Listener("bad", bad))
    for i in range(3):
        amo_bus.publish("t", Event("a.b", i))
    assert amo_bus.flush(5)
    s = amo_bus.stats()
    assert calls == [0, 1, 2]
    assert (s.failed_events, s.dropped_events, s.events_processed) == (3, 3, 3)


def test_on_error_is_called_on_the_bus(amo_bus: Bus) -> None:
    handled: list[str] = []
    amo_bus.subscribe("t", nova.Listener("l", lambda e: 1 / 0, on_error=lambda e, x: handled.append(e.id)))
    ev = Event("a.b")
    amo_bus.publish("t", ev)
    assert amo_bus.flush(5)
    assert handled == [ev.id] and amo_bus.stats().failed_events == 0


def test_exactly_once_deduplicates_by_id() -> None:
    bus = Bus()
    bus.create_topic("t", delivery_mode=DeliveryMode.EXACTLY_ONCE, partitions=2, dedup_window=10)
    seen: list[str] = []
    bus.subscribe("t", lambda e: seen.append(e.id), config=_no_retry())
    ev = Event("a.b")
    for _ in range(3):
        bus.publish("t", ev)
    assert bus.flush(5)
    assert seen == [ev.id]
    bus.shutdown()


def _no_retry() -> Any:
    from nova.resilience import ListenerConfig, RetryPolicy

    return ListenerConfig(retry=RetryPolicy(max_attempts=1))


def test_buffer_full_and_batch_all_or_nothing() -> None:
    pool = nova.WorkerPool(1)
    gate = threading.Event()
    bus = Bus(pool=pool, default_delivery_mode=AMO)
    bus.create_topic("t", buffer_size=2, delivery_mode=AMO)
    got: list[int] = []
    bus.subscribe("t", lambda e: (gate.wait(10), got.append(e.data)))
    bus.publish("t", Event("a.b", -1))
    deadline = time.monotonic() + 5
    while bus.topic_info("t").queued and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(nova.BufferFull, match="nothing was published"):
        bus.publish_batch("t", [Event("a.b", i) for i in range(3)])
    bus.publish_batch("t", [Event("a.b", 0), Event("a.b", 1)])
    with pytest.raises(nova.BufferFull, match="partition 0 of topic 't'"):
        bus.publish("t", Event("a.b", 2))
    gate.set()
    assert bus.flush(5)
    assert got == [-1, 0, 1]
    bus.shutdown()


def test_shutdown_reports_undelivered_and_closes() -> None:
    pool = nova.WorkerPool(1)
    gate = threading.Event()
    bus = Bus(pool=pool, default_delivery_mode=AMO)
    bus.subscribe("t", lambda e: gate.wait(10))
    first = Event("a.b")
    bus.publish("t", first)
    time.sleep(0.05)
    rest = [Event("a.b") for _ in range(4)]
    for ev in rest:
        bus.publish("t", ev)
    report = bus.shutdown(timeout=0.1)
    gate.set()
    assert report.undelivered == rest and report.in_flight == 1
    with pytest.raises(nova.BusClosed):
        bus.publish("t", Event("a.b"))
    with pytest.raises(nova.BusClosed):
        bus.subscribe("t", print)
    assert bus.shutdown().undelivered == []
    pool.close(5)


def test_validator_and_non_events(amo_bus: Bus) -> None:
    b = Bus(validator=nova.strict_type_names, default_delivery_mode=AMO)
    with pytest.raises(nova.ValidationError):
        b.publish("t", Event("NotDomainAction"))
    with pytest.raises(nova.ValidationError, match="nova.Event"):
        amo_bus.publish("t", {"type": "a.b"})  # type: ignore[arg-type]
    b.shutdown()


def test_middleware_runs_on_the_bus_with_current_topic(amo_bus: Bus) -> None:
    seen: list[Any] = []
    amo_bus.use(nova.middleware(before=lambda e: seen.append(nova._core.current_topic())))
    amo_bus.subscribe("orders", lambda e: None)
    amo_bus.publish("orders", Event("a.b"))
    assert amo_bus.flush(5)
    assert seen == ["orders"] and nova._core.current_topic() is None


def test_bus_stats(amo_bus: Bus) -> None:
    amo_bus.subscribe("a", lambda e: None)
    amo_bus.subscribe("a", lambda e: None)
    amo_bus.subscribe("b", lambda e: None)
    for _ in range(5):
        amo_bus.publish("a", Event("x.y"))
    assert amo_bus.flush(5)
    s = amo_bus.stats()
    assert (s.events_published, s.events_processed, s.active_topics, s.active_subscribers) == (5, 10, 2, 3)


def test_apublish_waits_for_room() -> None:
    import asyncio

    async def main() -> list[int]:
        bus = Bus(default_delivery_mode=AMO)
        bus.create_topic("t", buffer_size=1, delivery_mode=AMO)
        got: list[int] = []
        bus.subscribe("t", lambda e: (time.sleep(0.001), got.append(e.data)))
        for i in range(20):
            await bus.apublish("t", Event("a.b", i))
        while not bus.flush(0):
            await asyncio.sleep(0.01)
        bus.shutdown()
        return got

    assert asyncio.run(main()) == list(range(20))


def test_listener_context_changes_do_not_leak_between_events_of_a_partition() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("bus-counter", default=0)
    bus = nova.Bus()
    bus.create_topic("t", partitions=1, delivery_mode=nova.DeliveryMode.AT_MOST_ONCE)
    seen: list[tuple[int, int]] = []

    def h(e: nova.Event) -> None:
        seen.append((e.data, var.get()))
        var.set(var.get() + 100)

    bus.subscribe("t", h)
    var.set(1)
    for i in range(3):
        bus.publish("t", nova.Event("x", i))
    var.set(2)
    bus.publish("t", nova.Event("x", 3))
    assert bus.flush(timeout=5)
    assert seen == [(0, 1), (1, 1), (2, 1), (3, 2)]
    bus.shutdown(timeout=1)


def test_subscribe_and_unsubscribe_while_workers_are_mid_batch() -> None:
    # Workers keep their subscriber list for a whole batch and re-read it when it changes:
    # every event published after subscribe() returns reaches the new subscriber, and none
    # published after unsubscribe() returns reaches the old one, while a publisher runs on.
    bus = Bus(pool=nova.WorkerPool(4), default_delivery_mode=AMO)
    bus.create_topic(
        "t", partitions=4, ordering_key="k", on_full=OnFull.BLOCK, buffer_size=100_000, delivery_mode=AMO
    )
    started = [0]  # seq of the last publish that has started
    stop = threading.Event()

    def publisher() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            started[0] = seq
            bus.publish("t", Event("a.b", seq, metadata={"k": f"k{seq % 7}"}))
            if seq % 4 == 0:
                time.sleep(0)  # the workers keep up

    # Gives up the GIL on every event, so subscribe() and unsubscribe() land mid-batch.
    bus.subscribe("t", lambda e: time.sleep(0))
    th = threading.Thread(target=publisher)
    th.start()
    windows = []  # (received, first that must arrive, last that must arrive, last allowed)
    try:
        for _ in range(30):
            got: list[int] = []
            sub = bus.subscribe("t", lambda e, got=got: got.append(e.data))
            after_subscribe = started[0]  # every later seq started after subscribe() returned
            time.sleep(0.01)
            published = started[0] - 1  # this one's publish has returned
            assert bus.flush(10)  # delivered before the unsubscribe
            sub.unsubscribe()
            after_unsubscribe = started[0]
            windows.append((got, after_subscribe + 1, published, after_unsubscribe))
    finally:
        stop.set()
        th.join()
    assert bus.flush(10)
    bus.shutdown(timeout=5)
    bus.pool.close()
    for got, first, published, last in windows:
        assert not [s for s in got if s > last], "delivered after unsubscribe() returned"
        assert set(range(first, published + 1)) <= set(got), "missed after subscribe() returned"
        assert len(got) == len(set(got))


def test_shutdown_accounts_for_every_event_a_stuck_worker_holds() -> None:
    # A partition's worker may hold the event it delivers and the next one, popped ahead:
    # both are in flight at the deadline, delivered once the listener returns, never lost
    # and never also reported undelivered.
    pool = nova.WorkerPool(1)
    gate = threading.Event()
    delivered: list[int] = []
    bus = Bus(pool=pool, default_delivery_mode=AMO)
    bus.create_topic("t", partitions=1, delivery_mode=AMO)

    def stuck(e: Event) -> None:
        gate.wait(10)
        delivered.append(e.data)

    bus.subscribe("t", stuck)
    for i in range(10):
        bus.publish("t", Event("a.b", i))
    time.sleep(0.05)
    report = bus.shutdown(timeout=0.1)
    gate.set()
    assert pool.close(5)
    undelivered = [e.data for e in report.undelivered]
    assert report.drained + len(undelivered) + report.in_flight == 10
    assert sorted(delivered + undelivered) == list(range(10))
    assert len(delivered) == report.in_flight >= 1


def test_the_local_bus_and_the_redis_backend_are_both_bus_backends() -> None:
    from nova.backends import BusBackend
    from nova.backends.redis import RedisBackend

    bus = nova.Bus()
    assert isinstance(bus, BusBackend)  # the in-process implementation of the interface
    assert issubclass(RedisBackend, BusBackend)
    bus.shutdown(1)


def test_a_bus_subclass_with_a_backend_keeps_its_own_methods() -> None:
    calls: list[tuple[str, Any]] = []

    class Recording:
        def create_topic(self, name: str, config: Any) -> None:
            calls.append(("create_topic", name))

        def publish(self, topic: str, event: nova.Event) -> None:
            calls.append(("publish", event.data))

        def shutdown(self, timeout: float | None = 30.0) -> Any:
            calls.append(("shutdown", timeout))
            return nova.ShutdownReport(0, [], 0)

    class MyBus(nova.Bus):
        def hello(self) -> str:
            return "hi"

    bus = MyBus(backend=Recording())
    assert isinstance(bus, MyBus) and bus.hello() == "hi" and type(bus).__name__ == "MyBus"
    bus.create_topic("orders")
    bus.publish("orders", nova.Event("order.created", 1))
    bus.shutdown(2)
    assert calls == [("create_topic", "orders"), ("publish", 1), ("shutdown", 2)]
    assert bus.closed
