"""On an AT_MOST_ONCE topic a failing event gets exactly one attempt, whatever the
subscriber's retry policy; subscribing such a policy warns (issue: every event accounted for,
item 7)."""

from __future__ import annotations

from typing import Any

import pytest

import nova


def test_a_retry_policy_does_not_retry_on_an_at_most_once_topic() -> None:
    bus = nova.Bus()
    bus.create_topic("t", delivery_mode=nova.DeliveryMode.AT_MOST_ONCE)
    calls: list[Any] = []

    def fails(event: nova.Event) -> None:
        calls.append(event.data)
        raise RuntimeError("boom")

    config = nova.ListenerConfig(
        retry=nova.RetryPolicy(max_attempts=5, backoff=nova.Backoff.FIXED, initial_delay=0.01)
    )
    with pytest.warns(UserWarning, match="AT_MOST_ONCE.*5 attempts"):
        bus.subscribe("t", fails, config=config)
    bus.publish("t", nova.Event("x", 1))
    assert bus.flush(5)
    import time

    time.sleep(0.2)  # a retry would be due by now
    assert calls == [1]
    stats = bus.stats()
    assert stats.failed_events == 1
    bus.shutdown(5)


def test_a_registered_managed_listener_gets_one_attempt_too() -> None:
    manager = nova.ListenerManager()
    calls: list[Any] = []

    def fails(event: nova.Event) -> None:
        calls.append(event.data)
        raise RuntimeError("boom")

    managed = manager.register(
        fails,
        config=nova.ListenerConfig(
            retry=nova.RetryPolicy(max_attempts=3, backoff=nova.Backoff.FIXED, initial_delay=0.01)
        ),
    )
    bus = nova.Bus()
    bus.create_topic("t", delivery_mode=nova.DeliveryMode.AT_MOST_ONCE)
    with pytest.warns(UserWarning, match="AT_MOST_ONCE"):
        bus.subscribe("t", managed)
    bus.publish("t", nova.Event("x", 1))
    assert bus.flush(5)
    import time

    time.sleep(0.2)
    assert calls == [1]
    report = manager.stop(1)
    assert report.undelivered == []
    bus.shutdown(5)


def test_at_least_once_still_retries() -> None:
    bus = nova.Bus()
    bus.create_topic("t")
    calls: list[Any] = []

    def fails_twice(event: nova.Event) -> None:
        calls.append(event.data)
        if len(calls) < 3:
            raise RuntimeError("boom")

    bus.subscribe(
        "t",
        fails_twice,
        config=nova.ListenerConfig(
            retry=nova.RetryPolicy(max_attempts=5, backoff=nova.Backoff.FIXED, initial_delay=0.01)
        ),
    )
    bus.publish("t", nova.Event("x", 1))
    assert bus.flush(5)
    assert calls == [1, 1, 1]
    bus.shutdown(5)
