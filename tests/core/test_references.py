"""Queued events and the contexts captured with them are released once delivered: nothing a
lane or a worker keeps (on free-threaded builds workers hand the producers' references back to
the lane in chunks, for the producer to release) outlives `shutdown()`."""

from __future__ import annotations

import contextvars
import gc
import threading
import weakref
from typing import Any

import pytest

import nova


class Payload:
    """Event data that can be weakly referenced: its death shows the event was released."""


N = 1_000  # over a few hand-back chunks of 64, with a partial one left at the end


def _all_dead(refs: list[weakref.ref[Any]]) -> bool:
    gc.collect()
    return all(r() is None for r in refs)


def test_emitter_releases_every_delivered_event_and_context() -> None:
    var: contextvars.ContextVar[Payload] = contextvars.ContextVar("request")
    em = nova.Emitter(buffer_size=N, on_full=nova.OnFull.BLOCK)
    seen = [0]
    em.subscribe("x.y", lambda e: seen.__setitem__(0, seen[0] + 1))
    data_refs: list[weakref.ref[Any]] = []
    context_refs: list[weakref.ref[Any]] = []

    def emit_all() -> None:
        for i in range(N):
            if i % 100 == 0:  # a new snapshot now and then
                request = Payload()
                context_refs.append(weakref.ref(request))
                var.set(request)
            data = Payload()
            data_refs.append(weakref.ref(data))
            em.emit_async(nova.Event("x.y", data))
            del data

    contextvars.copy_context().run(emit_all)
    assert em.flush(10)
    assert seen[0] == N
    em.shutdown(timeout=10)
    assert _all_dead(data_refs), "a delivered event is still referenced after shutdown"
    assert _all_dead(context_refs), "a captured context is still referenced after shutdown"


def test_bus_releases_every_delivered_event() -> None:
    bus = nova.Bus(name="refs")
    delivered = threading.Event()
    count = [0]

    def listener(event: nova.Event) -> None:
        count[0] += 1
        if count[0] == N:
            delivered.set()

    bus.subscribe("orders", listener)
    refs: list[weakref.ref[Any]] = []
    for i in range(N):
        data = Payload()
        refs.append(weakref.ref(data))
        bus.publish("orders", nova.Event("order.created", data, metadata={"customer_id": f"c{i % 7}"}))
        del data
    assert bus.flush(10)
    assert delivered.wait(10)
    bus.shutdown(timeout=10)
    assert _all_dead(refs), "a delivered event is still referenced after shutdown"


@pytest.mark.parametrize("threads", [2, 4])
def test_events_from_many_producers_are_released(threads: int) -> None:
    em = nova.Emitter(buffer_size=N, on_full=nova.OnFull.BLOCK)
    em.subscribe("x.y", lambda e: None)
    refs: list[weakref.ref[Any]] = []
    lock = threading.Lock()

    def produce() -> None:
        mine = []
        for _ in range(N // threads):
            data = Payload()
            mine.append(weakref.ref(data))
            em.emit_async(nova.Event("x.y", data))
            del data
        with lock:
            refs.extend(mine)

    workers = [threading.Thread(target=produce) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert em.flush(10)
    em.shutdown(timeout=10)
    assert len(refs) == (N // threads) * threads
    assert _all_dead(refs), "a delivered event is still referenced after shutdown"
