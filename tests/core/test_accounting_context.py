"""Issue 15, item 1: a listener runs in the context of the emit that queued its event, never
another emit's, even when the context values compare equal (the core must not match contexts
by equality). Emitter and Bus, from one thread, many threads, and asyncio tasks."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any

import pytest

import nova


class AlwaysEqual:
    """Equal to everything, one hash for all: only identity tells two apart."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


def _int() -> Any:
    return int("1000")  # not a cached small int: equal values, distinct objects


def _str() -> Any:
    return "".join(["req", "-", "1"])  # built at run time: not interned


BUFFER = 10_000  # room for every event of a test: emits never fail on a full buffer

FACTORIES: dict[str, Callable[[], Any]] = {
    "dict": dict,
    "list": list,
    "always-equal": AlwaysEqual,
    "int": _int,
    "str": _str,
    "tuple": lambda: tuple([1, 2]),  # noqa: C409 - a fresh tuple each time
}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Callable[[], Any]:
    f = FACTORIES[request.param]
    a, b = f(), f()
    assert a == b and a is not b  # the point of the test
    return f


def test_two_emits_see_their_own_equal_values(factory: Callable[[], Any]) -> None:
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("req")
    # Keyed by event: an Emitter's workers may run two queued events in either order (with
    # the GIL off they truly run at once), so delivery order proves nothing here.
    seen: dict[str, Any] = {}
    em = nova.Emitter(buffer_size=BUFFER)
    try:
        em.subscribe("x.y", lambda e: seen.__setitem__(e.id, var.get()))
        first, second = nova.Event("x.y"), nova.Event("x.y")

        def run() -> tuple[Any, Any]:
            a = factory()
            var.set(a)
            em.emit_async(first)
            b = factory()
            var.set(b)
            em.emit_async(second)
            return a, b

        a, b = contextvars.copy_context().run(run)
        assert em.flush(5)
        assert len(seen) == 2
        assert seen[first.id] is a and seen[second.id] is b
    finally:
        em.shutdown(timeout=5)


def test_many_emits_in_a_row_each_see_their_own(factory: Callable[[], Any]) -> None:
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("req")
    seen: dict[str, Any] = {}
    em = nova.Emitter(buffer_size=BUFFER)
    try:
        em.subscribe("x.y", lambda e: seen.__setitem__(e.id, var.get()))

        def run() -> dict[str, Any]:
            sent = {}
            for _ in range(300):
                obj = factory()
                var.set(obj)
                event = nova.Event("x.y")
                em.emit_async(event)
                sent[event.id] = obj
            return sent

        sent = contextvars.copy_context().run(run)
        assert em.flush(10)
        assert seen.keys() == sent.keys()
        assert all(seen[k] is sent[k] for k in sent)
    finally:
        em.shutdown(timeout=5)


def test_threads_emitting_at_once_each_see_their_own(factory: Callable[[], Any]) -> None:
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("req")
    seen: dict[str, Any] = {}
    lock = threading.Lock()
    em = nova.Emitter(buffer_size=BUFFER)

    def listener(event: nova.Event) -> None:
        value = var.get()
        with lock:
            seen[event.id] = value

    sent: dict[str, Any] = {}
    barrier = threading.Barrier(8)

    errors: list[BaseException] = []

    def producer() -> None:
        try:
            produce()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def produce() -> None:
        barrier.wait()
        mine = {}
        for _ in range(200):
            obj = factory()
            var.set(obj)
            event = nova.Event("x.y")
            em.emit_async(event)
            mine[event.id] = obj
        with lock:
            sent.update(mine)

    try:
        em.subscribe("x.y", listener)
        threads = [threading.Thread(target=producer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert em.flush(10)
        assert len(sent) == 1600 and seen.keys() == sent.keys()
        wrong = [k for k in sent if seen[k] is not sent[k]]
        assert wrong == []
    finally:
        em.shutdown(timeout=5)


def test_asyncio_tasks_each_see_their_own(factory: Callable[[], Any]) -> None:
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("req")
    seen: dict[str, Any] = {}
    lock = threading.Lock()
    em = nova.Emitter(buffer_size=BUFFER)

    def listener(event: nova.Event) -> None:
        value = var.get()
        with lock:
            seen[event.id] = value

    async def task(sent: dict[str, Any]) -> None:
        for _ in range(50):
            obj = factory()
            var.set(obj)
            event = nova.Event("x.y")
            em.emit_async(event)
            sent[event.id] = obj
            await asyncio.sleep(0)  # interleave with the other tasks

    async def main() -> dict[str, Any]:
        sent: dict[str, Any] = {}
        await asyncio.gather(*(task(sent) for _ in range(10)))
        return sent

    try:
        em.subscribe("x.y", listener)
        sent = asyncio.run(main())
        assert em.flush(10)
        assert len(sent) == 500 and seen.keys() == sent.keys()
        assert [k for k in sent if seen[k] is not sent[k]] == []
    finally:
        em.shutdown(timeout=5)


def test_async_listener_sees_its_own_emit_context(factory: Callable[[], Any]) -> None:
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("req")
    seen: dict[str, Any] = {}
    em = nova.Emitter(buffer_size=BUFFER)

    async def listener(event: nova.Event) -> None:
        await asyncio.sleep(0)
        seen[event.id] = var.get()

    try:
        em.subscribe("x.y", listener)

        def run() -> dict[str, Any]:
            sent = {}
            for _ in range(50):
                obj = factory()
                var.set(obj)
                event = nova.Event("x.y")
                em.emit_async(event)
                sent[event.id] = obj
            return sent

        sent = contextvars.copy_context().run(run)
        assert em.flush(10)
        assert seen.keys() == sent.keys()
        assert [k for k in sent if seen[k] is not sent[k]] == []
    finally:
        em.shutdown(timeout=5)


@pytest.mark.parametrize("partitions", [1, 4])
def test_bus_publishers_each_see_their_own(factory: Callable[[], Any], partitions: int) -> None:
    var: contextvars.ContextVar[Any] = contextvars.ContextVar("req")
    seen: dict[str, Any] = {}
    lock = threading.Lock()
    bus = nova.Bus(default_buffer_size=BUFFER)

    def listener(event: nova.Event) -> None:
        value = var.get()
        with lock:
            seen[event.id] = value

    sent: dict[str, Any] = {}
    barrier = threading.Barrier(4)

    errors: list[BaseException] = []

    def producer() -> None:
        try:
            produce()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def produce() -> None:
        barrier.wait()
        mine = {}
        for _ in range(100):
            obj = factory()
            var.set(obj)
            event = nova.Event("order.created")
            bus.publish("t", event)
            mine[event.id] = obj
        with lock:
            sent.update(mine)

    try:
        bus.create_topic("t", partitions=partitions)
        bus.subscribe("t", listener)
        # One thread first: two publishes, the values equal but distinct.
        a, b = factory(), factory()

        def two() -> tuple[str, str]:
            var.set(a)
            first = nova.Event("order.created")
            bus.publish("t", first)
            var.set(b)
            second = nova.Event("order.created")
            bus.publish("t", second)
            return first.id, second.id

        id_a, id_b = contextvars.copy_context().run(two)
        threads = [threading.Thread(target=producer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert bus.flush(10)
        assert seen[id_a] is a and seen[id_b] is b
        assert len(sent) == 400
        assert [k for k in sent if seen[k] is not sent[k]] == []
    finally:
        bus.shutdown(timeout=5)
