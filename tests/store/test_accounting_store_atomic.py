"""The store holds exactly the events the bus accepted, in publish order; publish_batch is all
or nothing (issue: every event accounted for, item 3). With group commit (durability="batch",
the default) once flushed; with durability="event" as soon as publish returns."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import nova


class FailingStore(nova.MemoryStore):
    """A store whose append fails while `fail` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def append(self, stream: str, *events: nova.Event, expected_version: int | None = None) -> int:
        if self.fail:
            raise nova.StoreError("disk full")
        return super().append(stream, *events, expected_version=expected_version)


def stored_ids(store: nova.MemoryStore, stream: str = "orders") -> list[str]:
    try:
        return [e.id for e in store.read_stream(stream)]
    except nova.StreamNotFound:
        return []


@pytest.fixture()
def gate() -> Any:
    """A listener that holds the only worker until released, so queues fill up."""
    release = threading.Event()

    def hold(event: nova.Event) -> None:
        release.wait(10)

    yield hold, release
    release.set()


DURABILITY = pytest.mark.parametrize("durability", ["batch", "event"])


def make_bus(store: nova.MemoryStore, durability: str = "batch", **topic: Any) -> nova.Bus:
    bus = nova.Bus(pool=nova.WorkerPool(workers=1), store=store, durability=durability)
    bus.create_topic("orders", partitions=1, delivery_mode=nova.DeliveryMode.AT_MOST_ONCE, **topic)
    return bus


@DURABILITY
def test_a_full_buffer_stores_nothing(gate: Any, durability: str) -> None:
    hold, release = gate
    store = nova.MemoryStore()
    bus = make_bus(store, durability, buffer_size=2)
    bus.subscribe("orders", hold)
    accepted: list[str] = []
    refused = 0
    for i in range(10):
        event = nova.Event("order.created", i)
        try:
            bus.publish("orders", event)
            accepted.append(event.id)
        except nova.BufferFull:
            refused += 1
    assert refused > 0
    release.set()  # the one worker also runs the store's writer
    assert bus.flush(5)
    assert stored_ids(store) == accepted
    bus.shutdown(5)


@DURABILITY
def test_a_batch_that_does_not_fit_is_neither_queued_nor_stored(gate: Any, durability: str) -> None:
    hold, release = gate
    store = nova.MemoryStore()
    bus = make_bus(store, durability, buffer_size=4)
    seen: list[Any] = []
    bus.subscribe("orders", hold)
    bus.subscribe("orders", lambda e: seen.append(e.data))
    first = nova.Event("order.created", "first")
    bus.publish("orders", first)
    batch = [nova.Event("order.created", i) for i in range(6)]
    with pytest.raises(nova.BufferFull, match="nothing was published or stored"):
        bus.publish_batch("orders", batch)
    release.set()
    assert bus.flush(5)
    assert stored_ids(store) == [first.id]
    assert seen == ["first"]
    bus.shutdown(5)


def test_a_closed_bus_and_a_rejecting_validator_store_nothing() -> None:
    store = nova.MemoryStore()

    def only_orders(event: nova.Event) -> None:
        if not event.type.startswith("order."):
            raise ValueError("not an order")

    bus = nova.Bus(store=store, validator=only_orders)
    bus.create_topic("orders")
    with pytest.raises(nova.ValidationError):
        bus.publish("orders", nova.Event("user.created"))
    with pytest.raises(nova.ValidationError):
        bus.publish_batch("orders", [nova.Event("order.created"), nova.Event("user.created")])
    assert stored_ids(store) == []
    bus.shutdown(5)
    with pytest.raises(nova.BusClosed):
        bus.publish("orders", nova.Event("order.created"))
    with pytest.raises(nova.BusClosed):
        bus.publish_batch("orders", [nova.Event("order.created")])
    assert stored_ids(store) == []


def test_a_failing_store_queues_nothing_and_the_caller_gets_its_error() -> None:
    store = FailingStore()
    bus = nova.Bus(store=store, durability="event")
    bus.create_topic("orders", partitions=4)
    seen: list[Any] = []
    bus.subscribe("orders", lambda e: seen.append(e.data))
    store.fail = True
    with pytest.raises(nova.StoreError, match="disk full"):
        bus.publish("orders", nova.Event("order.created", 1))
    with pytest.raises(nova.StoreError, match="disk full"):
        bus.publish_batch("orders", [nova.Event("order.created", i) for i in range(5)])
    store.fail = False
    ok = nova.Event("order.created", "ok")
    bus.publish("orders", ok)
    assert bus.flush(5)
    assert seen == ["ok"]
    assert stored_ids(store) == [ok.id]
    assert bus.stats().events_published == 1
    bus.shutdown(5)


def test_with_group_commit_a_failed_append_reaches_flush_and_the_next_publish() -> None:
    store = FailingStore()
    bus = nova.Bus(store=store)  # durability="batch"
    bus.create_topic("orders", partitions=4)
    seen: list[Any] = []
    bus.subscribe("orders", lambda e: seen.append(e.data))
    store.fail = True
    bus.publish("orders", nova.Event("order.created", "lost"))  # queued for the store's writer
    with pytest.raises(nova.StoreError, match="disk full") as failed:
        bus.flush(5)
    assert "1 published event(s)" in str(failed.value) and "not in the store" in str(failed.value)
    assert bus.flush(5)  # raised once: nothing new failed since
    store.fail = False
    ok = nova.Event("order.created", "ok")
    bus.publish("orders", ok)
    assert bus.flush(5)
    assert sorted(seen) == ["lost", "ok"]  # delivered either way
    assert stored_ids(store) == [ok.id]
    store.fail = True
    bus.publish("orders", nova.Event("order.created", "lost too"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the writer's failure is raised by the next publish
        try:
            bus.publish("orders", nova.Event("order.created", "probe"))
        except nova.StoreError:
            break
        time.sleep(0.01)
    else:
        raise AssertionError("no publish raised the store's failure")
    store.fail = False
    bus.shutdown(5)


@DURABILITY
def test_many_publishers_store_exactly_what_they_were_told_was_accepted(durability: str) -> None:
    store = nova.MemoryStore()
    bus = nova.Bus(store=store, durability=durability)
    bus.create_topic("orders", partitions=4, buffer_size=8)
    bus.subscribe("orders", lambda e: None)
    accepted: list[list[str]] = [[] for _ in range(4)]

    def publisher(k: int) -> None:
        for i in range(300):
            event = nova.Event("order.created", i, metadata={"k": str(k)})
            try:
                bus.publish("orders", event)
                accepted[k].append(event.id)
            except nova.BufferFull:
                pass

    threads = [threading.Thread(target=publisher, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bus.flush(10)
    ids = stored_ids(store)
    assert sorted(ids) == sorted(i for a in accepted for i in a)
    # Each publisher's events are stored in the order it published them.
    position = {i: n for n, i in enumerate(ids)}
    for mine in accepted:
        assert [position[i] for i in mine] == sorted(position[i] for i in mine)
    bus.shutdown(5)
