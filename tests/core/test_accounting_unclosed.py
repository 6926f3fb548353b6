"""A bus garbage-collected without shutdown() counts the events it discards and warns, as
Python does for an unclosed file (issue: every event accounted for, item 6)."""

from __future__ import annotations

import gc
import logging
import threading

import pytest

import nova


def test_a_bus_dropped_with_queued_events_warns_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    pool = nova.WorkerPool(workers=1)
    bus = nova.Bus(pool=pool, name="orders-bus")
    bus.create_topic("orders", partitions=1, delivery_mode=nova.DeliveryMode.AT_MOST_ONCE)
    bus.subscribe("orders", lambda e: release.wait(10))
    for i in range(5):
        bus.publish("orders", nova.Event("order.created", i))
    with pytest.warns(ResourceWarning, match=r"bus 'orders-bus' .* discarded [345] queued event"):
        with caplog.at_level(logging.WARNING, logger="nova"):
            del bus
            gc.collect()
    assert any("without shutdown()" in r.getMessage() for r in caplog.records)
    release.set()
    assert pool.close(5)


def test_a_bus_shut_down_or_empty_does_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    bus = nova.Bus()
    bus.create_topic("orders")
    bus.subscribe("orders", lambda e: None)
    bus.publish("orders", nova.Event("order.created"))
    bus.shutdown(5)
    del bus
    empty = nova.Bus()
    del empty
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]
