"""pytest-benchmark suites for the core paths (`make bench`). Compare ratios within one run;
see benches/compare.py for Nova beside its peers."""

from __future__ import annotations

from typing import Any

import nova


def noop(_e: Any) -> None:
    return None


def test_event_creation(benchmark: Any) -> None:
    benchmark(nova.Event, "order.created", 1)


def test_emit_sync_new_event(benchmark: Any) -> None:
    em = nova.Emitter(name="bench")
    em.subscribe("order.created", noop)
    Event, emit = nova.Event, em.emit
    benchmark(lambda: emit(Event("order.created", 1)))
    em.shutdown()


def test_emit_async_batch_of_1000_until_flushed(benchmark: Any) -> None:
    em = nova.Emitter(name="bench-async", buffer_size=10_000, on_full=nova.OnFull.BLOCK)
    em.subscribe("order.created", noop)
    events = [nova.Event("order.created", i) for i in range(1000)]

    def run() -> None:
        for ev in events:
            em.emit_async(ev)
        em.flush()

    benchmark(run)
    em.shutdown()


def test_bus_publish_16_partitions_keyed_until_flushed(benchmark: Any) -> None:
    bus = nova.Bus(pool=nova.WorkerPool(4), name="bench-bus")
    bus.create_topic(
        "orders",
        partitions=16,
        ordering_key="customer_id",
        on_full=nova.OnFull.BLOCK,
        delivery_mode=nova.DeliveryMode.AT_MOST_ONCE,
        buffer_size=10_000,
    )
    bus.subscribe("orders", noop)
    events = [nova.Event("order.created", i, metadata={"customer_id": f"c{i % 100}"}) for i in range(1000)]

    def run() -> None:
        for ev in events:
            bus.publish("orders", ev)
        bus.flush()

    benchmark(run)
    bus.shutdown()
