"""RedisBackend in one process, against a real redis-server (tests/support/redis_server.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import nova
from nova import DeliveryMode, Event, TopicConfig
from nova.resilience import ListenerConfig, RetryPolicy
from nova.backends.redis import JsonSerializer, RedisBackend


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture()
def make_bus(redis_url: str) -> Iterator[Callable[..., nova.Bus]]:
    buses: list[nova.Bus] = []

    def make(group: str = "g", **kwargs: Any) -> nova.Bus:
        kwargs.setdefault("lease_ttl", 2.0)
        bus = nova.Bus(backend=RedisBackend(redis_url, group=group, **kwargs))
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.shutdown(5)


@pytest.fixture()
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def __len__(self) -> int:
        with self.lock:
            return len(self.events)


def test_round_trip_keeps_per_key_order_over_16_partitions(
    make_bus: Callable[..., nova.Bus], client: redis.Redis
) -> None:
    bus = make_bus()
    bus.create_topic("orders", partitions=16, ordering_key="customer")
    rec = Recorder()
    sub = bus.subscribe("orders", nova.Listener("billing", rec))
    events = [Event("order.created", {"n": i}, metadata={"customer": f"c{i % 40}"}) for i in range(3000)]
    bus.publish_batch("orders", events[:2500])
    for e in events[2500:]:
        bus.publish("orders", e)
    assert bus.flush(30)
    assert len(rec) == len(events)
    assert {e.id for e in rec.events} == {e.id for e in events}
    by_key: dict[str, list[int]] = {}
    for e in rec.events:
        by_key.setdefault(e.metadata["customer"], []).append(e.data["n"])
    assert all(ns == sorted(ns) for ns in by_key.values())
    # Same partitioning as the in-process bus, stream by stream.
    for p in range(16):
        for _id, fields in client.xrange(f"nova:orders:{p}"):
            ev = Event.from_json(fields[b"event"])
            assert nova._core.partition(ev.metadata["customer"], 16) == p
    assert client.xlen("nova:orders:0") > 0
    stats = bus.stats()
    assert stats.events_published == 3000 and stats.events_processed == 3000
    assert stats.active_subscribers == 1 and stats.active_topics == 1
    info = bus.topic_info("orders")
    assert (info.name, info.partitions, info.subscribers, info.queued) == ("orders", 16, 1, 0)
    assert sub.active and sub.topic == "orders" and sub.listener.name == "billing"
    assert isinstance(sub.id, str) and sub.id


def test_events_keep_their_fields(make_bus: Callable[..., nova.Bus]) -> None:
    bus = make_bus()
    rec = Recorder()
    bus.subscribe("t", rec)
    ev = Event("a.b", {"x": [1, 2.5, "s", None]}, metadata={"k": "v"})
    bus.publish("t", ev)
    assert bus.flush(10)
    got = rec.events[0]
    assert (got.id, got.type, got.data, dict(got.metadata), got.timestamp) == (
        ev.id,
        ev.type,
        ev.data,
        dict(ev.metadata),
        ev.timestamp,
    )


def test_topic_configs_are_shared_and_checked(make_bus: Callable[..., nova.Bus], client: redis.Redis) -> None:
    a, b = make_bus(), make_bus()
    a.create_topic("t", partitions=4, ordering_key="k")
    b.create_topic("t", partitions=4, ordering_key="k")  # same config: no-op
    with pytest.raises(nova.ValidationError, match="partitions"):
        b.create_topic("t", partitions=8, ordering_key="k")
    assert b.topic_config("t") == TopicConfig(partitions=4, ordering_key="k")
    assert json.loads(client.get("nova:t:config"))["partitions"] == 4
    assert a.topics() == ["t"]
    # A publish to an unknown topic creates it with TopicConfig() defaults.
    b.publish("fresh", Event("x"))
    assert a.topic_config("fresh") == TopicConfig()
    assert a.topics() == ["fresh", "t"]
    a.delete_topic("fresh")
    assert a.topics() == ["t"]
    assert client.exists("nova:fresh:0") == 0
    with pytest.raises(nova.TopicNotFound):
        a.delete_topic("fresh")
    with pytest.raises(nova.TopicNotFound):
        a.topic_info("nope")
    assert a.topic_config("nope") is None


def by_region(event: Event) -> str:
    return str(event.data["region"])


def test_callable_ordering_key_must_exist_in_every_process(make_bus: Callable[..., nova.Bus]) -> None:
    a, b = make_bus(), make_bus()
    a.create_topic("geo", partitions=4, ordering_key=by_region)
    with pytest.raises(nova.ValidationError, match="by_region"):
        b.publish("geo", Event("x", {"region": "eu"}))
    b.create_topic("geo", partitions=4, ordering_key=by_region)
    b.publish("geo", Event("x", {"region": "eu"}))
    with pytest.raises(nova.ValidationError):
        b.create_topic("geo", partitions=4, ordering_key=lambda e: "x")


def test_subscription_interface_and_unsubscribe(
    make_bus: Callable[..., nova.Bus], client: redis.Redis
) -> None:
    bus = make_bus()
    rec = Recorder()
    with bus.subscribe("t", rec) as sub:
        bus.publish("t", Event("x"))
        assert bus.flush(10)
        assert len(rec) == 1
        wait_for(lambda: client.exists("nova:t:0:lease:g:Recorder") == 1, what="lease")
    assert not sub.active
    sub.unsubscribe()  # idempotent
    wait_for(lambda: client.exists("nova:t:0:lease:g:Recorder") == 0, what="lease released")
    bus.publish("t", Event("x"))
    time.sleep(0.3)
    assert len(rec) == 1
    assert bus.stats().active_subscribers == 0


def test_pattern_subscription_sees_new_topics(make_bus: Callable[..., nova.Bus]) -> None:
    bus = make_bus()
    rec = Recorder()
    bus.create_topic("inventory.stock")
    bus.subscribe_pattern(r"inventory\..*", rec)
    bus.publish("inventory.stock", Event("a"))
    bus.publish("billing", Event("b"))
    bus.publish("inventory.price", Event("c"))  # created after the subscription
    wait_for(lambda: len(rec) == 2, what="two events")
    assert sorted(e.type for e in rec.events) == ["a", "c"]
    with pytest.raises(nova.ValidationError, match="position"):
        bus.subscribe_pattern("(unclosed", rec)


def test_poison_message_goes_to_dlq_and_consumption_continues(
    make_bus: Callable[..., nova.Bus], client: redis.Redis
) -> None:
    bus = make_bus()
    bus.create_topic("t", partitions=2)
    rec = Recorder()
    bus.subscribe("t", nova.Listener("eater", rec))
    good = [Event("ok", {"n": i}) for i in range(50)]
    bus.publish_batch("t", good[:25])
    client.xadd("nova:t:0", {"event": b"\xff{not json"})
    client.xadd("nova:t:1", {"other": b"field"})
    bus.publish_batch("t", good[25:])
    assert bus.flush(10)
    assert {e.id for e in rec.events} == {e.id for e in good}
    dead = client.xrange("nova:t:dlq")
    assert len(dead) == 2
    entries = sorted((f for _id, f in dead), key=lambda f: f[b"partition"])
    assert entries[0][b"payload"] == b"\xff{not json"
    assert entries[0][b"attempts"] == b"0" and entries[0][b"listener"] == b"eater"
    assert entries[0][b"partition"] == b"0" and entries[0][b"error"]
    assert entries[1][b"partition"] == b"1" and b"event" in entries[1][b"error"]
    for p in (0, 1):  # everything acknowledged
        assert client.xpending(f"nova:t:{p}", "g:eater")["pending"] == 0
    assert bus.stats().failed_events == 2


def test_failed_event_is_dead_lettered_after_its_attempts(
    make_bus: Callable[..., nova.Bus], client: redis.Redis
) -> None:
    bus = make_bus()
    calls: list[int] = []

    def flaky(event: Event) -> None:
        calls.append(event.data)
        if event.data == 3:
            raise ValueError("three is bad")

    cfg = ListenerConfig(retry=RetryPolicy(max_attempts=3, initial_delay=0.01))
    bus.subscribe("t", nova.Listener("flaky", flaky), config=cfg)
    events = [Event("e", i) for i in range(6)]
    for e in events:
        bus.publish("t", e)
    assert bus.flush(10)
    assert calls == [0, 1, 2, 3, 3, 3, 4, 5]  # the retries held the partition back
    ((_id, f),) = client.xrange("nova:t:dlq")
    assert f[b"attempts"] == b"3" and f[b"listener"] == b"flaky"
    assert f[b"error"] == b"ValueError: three is bad"
    assert Event.from_json(f[b"payload"]).id == events[3].id
    assert client.xpending("nova:t:0", "g:flaky")["pending"] == 0


def test_at_most_once_does_not_retry(make_bus: Callable[..., nova.Bus], client: redis.Redis) -> None:
    bus = make_bus()
    bus.create_topic("t", delivery_mode=DeliveryMode.AT_MOST_ONCE)
    calls: list[int] = []

    def fail(event: Event) -> None:
        calls.append(event.data)
        raise RuntimeError("no")

    bus.subscribe("t", fail)
    bus.publish("t", Event("e", 1))
    assert bus.flush(10)
    assert calls == [1]
    s = bus.stats()
    assert (s.failed_events, s.dropped_events) == (1, 1)
    assert client.exists("nova:t:dlq") == 0


def test_exactly_once_skips_a_republished_id(make_bus: Callable[..., nova.Bus], client: redis.Redis) -> None:
    bus = make_bus()
    bus.create_topic("t", delivery_mode=DeliveryMode.EXACTLY_ONCE, partitions=2)
    rec = Recorder()
    bus.subscribe("t", nova.Listener("once", rec))
    ev = Event("e", 1)
    bus.publish("t", ev)
    assert bus.flush(10)
    bus.publish("t", ev)
    bus.publish("t", Event("e", 2))
    assert bus.flush(10)
    assert [e.data for e in rec.events] == [1, 2]
    assert client.pttl(f"nova:t:seen:g:once:{ev.id}") > 0


def test_two_subscribers_each_get_every_event(make_bus: Callable[..., nova.Bus]) -> None:
    bus = make_bus()
    r1, r2 = Recorder(), Recorder()
    bus.subscribe("t", nova.Listener("one", r1))
    bus.subscribe("t", nova.Listener("two", r2))
    bus.subscribe("t", nova.Listener("two", r2))  # a second subscription of one name: "two#2"
    bus.publish_batch("t", [Event("e", i) for i in range(20)])
    assert bus.flush(10)
    assert len(r1) == 20 and len(r2) == 40


def test_custom_serializer(make_bus: Callable[..., nova.Bus], client: redis.Redis) -> None:
    class Upper(JsonSerializer):
        def dumps(self, event: Event) -> str:
            return "X" + super().dumps(event)

        def loads(self, data: bytes) -> Event:
            assert data[:1] == b"X"
            return super().loads(data[1:])

    bus = make_bus(serializer=Upper())
    rec = Recorder()
    bus.subscribe("t", rec)
    bus.publish("t", Event("e", 1))
    assert bus.flush(10)
    assert rec.events[0].data == 1
    ((_id, f),) = client.xrange("nova:t:0")
    assert f[b"event"].startswith(b"X{")
    with pytest.raises(nova.ValidationError):
        RedisBackend("redis://127.0.0.1:1/0", group="g", serializer=object())  # type: ignore[arg-type]


def test_publish_rejects_bad_input(make_bus: Callable[..., nova.Bus]) -> None:
    bus = make_bus()
    with pytest.raises(nova.ValidationError):
        bus.publish("t", {"not": "an event"})
    with pytest.raises(nova.ValidationError, match="serial"):
        bus.publish("t", Event("e", object()))
    with pytest.raises(nova.ValidationError):
        bus.publish_batch("t", [Event("e", 1), Event("e", object())])
    assert bus.stats().events_published == 0


def test_shutdown_leaves_unprocessed_events_pending_and_releases_leases(
    make_bus: Callable[..., nova.Bus], client: redis.Redis
) -> None:
    first = make_bus(batch_size=50)
    started = threading.Event()

    def slow(event: Event) -> None:
        started.set()
        time.sleep(0.05)

    first.subscribe("t", nova.Listener("slow", slow))
    first.publish_batch("t", [Event("e", i) for i in range(40)])
    assert started.wait(10)
    time.sleep(0.1)
    report = first.shutdown(5)
    assert report.in_flight == 0
    assert report.undelivered, "events fetched and not processed are reported"
    assert client.exists("nova:t:0:lease:g:slow") == 0, "the lease is released at once"
    pending = client.xpending("nova:t:0", "g:slow")["pending"]
    assert pending == len(report.undelivered)
    with pytest.raises(nova.BusClosed):
        first.publish("t", Event("late"))
    assert first.shutdown(1) == nova.ShutdownReport()
    # Another process takes over at once and processes what was left.
    rec = Recorder()
    second = make_bus()
    t0 = time.monotonic()
    second.subscribe("t", nova.Listener("slow", rec))
    wait_for(lambda: len(rec) == len(report.undelivered), what="takeover")
    assert time.monotonic() - t0 < 1.5
    assert {e.id for e in rec.events} == {e.id for e in report.undelivered}


def test_retention_trims_old_entries(make_bus: Callable[..., nova.Bus], client: redis.Redis) -> None:
    bus = make_bus()
    bus.create_topic("t", retention=0.2)
    bus.publish_batch("t", [Event("e", i) for i in range(300)])
    time.sleep(0.3)
    bus.publish_batch("t", [Event("e", i) for i in range(300)])
    assert client.xlen("nova:t:0") < 600


def test_json_serializer_round_trip_and_errors() -> None:
    from datetime import datetime, timedelta, timezone

    s = JsonSerializer()
    events = [
        Event("a.b", {"x": [1, 2.5, None, True], "ü": "日本"}, metadata={"k": "v", "é": "ß"}),
        Event("t", None),
        Event("t", 3, timestamp=datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))),
    ]
    for ev in events:
        data = s.dumps(ev)
        raw = data.encode() if isinstance(data, str) else data
        back = s.loads(raw)
        assert (back.id, back.type, back.data, dict(back.metadata), back.timestamp) == (
            ev.id,
            ev.type,
            ev.data,
            dict(ev.metadata),
            ev.timestamp,
        )
        assert Event.from_json(raw).timestamp == ev.timestamp  # the reference reader agrees
    for bad in (b"nope", b"[1]", b'{"id": "", "type": "x"}'):
        with pytest.raises(nova.ValidationError):
            s.loads(bad)
