"""Errors name the component, the event and what to do (issue: every event accounted for,
item 8; API.md section 12)."""

from __future__ import annotations

import pytest

import nova


def test_a_sync_emit_listener_error_names_the_emitter_and_the_event() -> None:
    em = nova.Emitter(name="orders")

    def boom(event: nova.Event) -> None:
        raise ValueError("no stock")

    em.subscribe("order.created", boom)
    event = nova.Event("order.created", 1)
    with pytest.raises(nova.ListenerError) as info:
        em.emit(event)
    text = str(info.value)
    assert "emitter 'orders'" in text and event.id in text and "order.created" in text
    assert "boom" in text and "no stock" in text
    em.shutdown(5)


def test_closed_errors_name_the_event_that_was_refused() -> None:
    em = nova.Emitter(name="orders")
    em.shutdown(5)
    event = nova.Event("order.created")
    for call in (lambda: em.emit(event), lambda: em.emit_async(event)):
        with pytest.raises(nova.EmitterClosed) as info:
            call()
        assert "emitter 'orders'" in str(info.value) and event.id in str(info.value)
        assert "order.created" in str(info.value) and "create a new Emitter" in str(info.value)
    bus = nova.Bus(name="shop")
    bus.create_topic("orders")
    bus.shutdown(5)
    for call in (lambda: bus.publish("orders", event), lambda: bus.publish_batch("orders", [event])):
        with pytest.raises(nova.BusClosed) as info:
            call()
        assert "bus 'shop'" in str(info.value) and event.id in str(info.value)
        assert "create a new Bus" in str(info.value)


def test_every_error_class_is_a_nova_error() -> None:
    for name in (
        "RetryableError",
        "PermanentError",
        "ListenerError",
        "BusClosed",
        "EmitterClosed",
        "BufferFull",
        "ValidationError",
        "StoreError",
        "ListenerTimeout",
    ):
        assert issubclass(getattr(nova, name), nova.NovaError), name
