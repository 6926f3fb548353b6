"""nova.Emitter: routing, errors, middleware, async delivery, buffers, shutdown (API section 5)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import time
from typing import Any

import pytest

import nova
from nova import Emitter, Event, ListenerError, OnFull


@pytest.fixture
def em() -> Any:
    e = Emitter(name="test-emitter")
    yield e
    e.shutdown(timeout=5)


def test_exact_and_wildcard_routing_in_subscription_order(em: Emitter) -> None:
    seen: list[str] = []
    em.subscribe("order.created", lambda e: seen.append("exact"))
    em.subscribe("order.*", lambda e: seen.append("star"))
    em.subscribe("#", lambda e: seen.append("hash"))
    em.subscribe("inventory.#", lambda e: seen.append("inv"))
    em.emit(Event("order.created"))
    assert seen == ["exact", "star", "hash"]
    seen.clear()
    em.emit(Event("inventory"))
    assert seen == ["hash", "inv"]
    seen.clear()
    em.emit(Event("order.created.v2"))
    assert seen == ["hash"]


def test_subscribe_after_cache_is_seen(em: Emitter) -> None:
    seen: list[int] = []
    em.emit(Event("a.b"))
    em.subscribe("a.*", lambda e: seen.append(1))
    em.emit(Event("a.b"))
    assert seen == [1]


def test_decorator_form(em: Emitter) -> None:
    seen: list[str] = []

    @em.on("user.created")
    def handler(event: Event) -> None:
        seen.append(event.type)

    em.emit(Event("user.created"))
    assert seen == ["user.created"] and callable(handler)


def test_one_failure_raises_listener_error_after_all_ran(em: Emitter) -> None:
    ran: list[str] = []

    def bad(e: Event) -> None:
        raise KeyError("boom")

    em.subscribe("x.y", nova.Listener("bad", bad))
    em.subscribe("x.y", lambda e: ran.append("good"))
    ev = Event("x.y")
    with pytest.raises(ListenerError) as info:
        em.emit(ev)
    assert ran == ["good"]
    assert info.value.listener == "bad"
    assert info.value.event is ev
    assert isinstance(info.value.__cause__, KeyError)
    assert "bad" in str(info.value) and ev.id in str(info.value)


def test_several_failures_raise_an_exception_group(em: Emitter) -> None:
    em.subscribe("x.y", nova.Listener("one", lambda e: 1 / 0))
    em.subscribe("x.y", nova.Listener("two", lambda e: [][1]))
    with pytest.raises(ExceptionGroup) as info:
        em.emit(Event("x.y"))
    errs = info.value.exceptions
    assert [e.listener for e in errs] == ["one", "two"]  # type: ignore[attr-defined]
    assert all(isinstance(e, ListenerError) for e in errs)


def test_on_error_handles_or_propagates(em: Emitter) -> None:
    handled: list[str] = []
    em.subscribe(
        "x.y", nova.Listener("h", lambda e: 1 / 0, on_error=lambda e, exc: handled.append(type(exc).__name__))
    )
    em.emit(Event("x.y"))
    assert handled == ["ZeroDivisionError"]
    assert em.stats().failed_events == 0

    def reraise(e: Event, exc: BaseException) -> None:
        raise RuntimeError("wrapped") from exc

    em2 = Emitter()
    em2.subscribe("x.y", nova.Listener("r", lambda e: 1 / 0, on_error=reraise))
    with pytest.raises(ListenerError) as info:
        em2.emit(Event("x.y"))
    assert isinstance(info.value.__cause__, RuntimeError)
    em2.shutdown()


def test_plain_callable_is_named_by_qualname(em: Emitter) -> None:
    def my_handler(e: Event) -> None:
        pass

    sub = em.subscribe("a.b", my_handler)
    assert sub.listener.name.endswith("my_handler")
    assert sub.topic == "a.b" and sub.active and isinstance(sub.id, str)


def test_unsubscribe_is_idempotent_and_context_manager(em: Emitter) -> None:
    seen: list[int] = []
    with em.subscribe("a.b", lambda e: seen.append(1)) as sub:
        em.emit(Event("a.b"))
    assert not sub.active
    sub.unsubscribe()
    em.emit(Event("a.b"))
    assert seen == [1]
    assert em.stats().active_listeners == 0


def test_middleware_order_replacement_and_outcome(em: Emitter) -> None:
    log: list[Any] = []

    class Tag:
        def __init__(self, name: str) -> None:
            self.name = name

        def before(self, event: Event) -> Event | None:
            log.append(("before", self.name))
            return event.with_metadata(**{self.name: "1"})

        def after(self, event: Event, error: BaseException | None) -> None:
            log.append(("after", self.name, sorted(event.metadata), error))

    em.use(Tag("a"), Tag("b"))
    got: list[Event] = []
    em.subscribe("x.y", got.append)
    em.emit(Event("x.y"))
    assert log == [
        ("before", "a"),
        ("before", "b"),
        ("after", "b", ["a", "b"], None),
        ("after", "a", ["a", "b"], None),
    ]
    assert sorted(got[0].metadata) == ["a", "b"]


def test_middleware_after_sees_the_failure(em: Emitter) -> None:
    outcomes: list[Any] = []
    em.use(nova.middleware(after=lambda e, err: outcomes.append(err)))
    em.subscribe("x.y", nova.Listener("bad", lambda e: 1 / 0))
    with pytest.raises(ListenerError):
        em.emit(Event("x.y"))
    assert isinstance(outcomes[0], ListenerError)


def test_rejecting_middleware(em: Emitter) -> None:
    def reject(e: Event) -> None:
        raise PermissionError("no")

    em.use(nova.middleware(before=reject))
    seen: list[Event] = []
    em.subscribe("x.y", seen.append)
    with pytest.raises(nova.MiddlewareError) as info:
        em.emit(Event("x.y"))
    assert isinstance(info.value.__cause__, PermissionError)
    em.emit_async(Event("x.y"))
    assert em.flush(5)
    assert seen == [] and em.stats().middleware_errors == 2


def test_middleware_needs_hooks(em: Emitter) -> None:
    with pytest.raises(nova.ValidationError):
        em.use(object())
    with pytest.raises(nova.ValidationError):
        nova.middleware()


def test_emit_async_and_flush(em: Emitter) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def h(e: Event) -> None:
        with lock:
            got.append(e.data)

    em.subscribe("n.x", h)
    for i in range(500):
        em.emit_async(Event("n.x", i))
    assert em.flush(10)
    assert sorted(got) == list(range(500))
    s = em.stats()
    assert (s.events_emitted, s.events_processed, s.queued_events) == (500, 500, 0)


def test_order_kept_with_max_concurrency_one() -> None:
    em = Emitter(max_concurrency=1, pool=nova.WorkerPool(4), on_full=OnFull.BLOCK)
    got: list[int] = []
    em.subscribe("n.x", lambda e: got.append(e.data))
    for i in range(5000):
        em.emit_async(Event("n.x", i))
    assert em.flush(20)
    assert got == list(range(5000))
    em.shutdown()


def test_async_failures_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    em = Emitter(name="logged")
    em.subscribe("x.y", nova.Listener("bad", lambda e: 1 / 0))
    em.subscribe("x.y", lambda e: None)
    em.emit_async(Event("x.y"))
    assert em.flush(5)
    s = em.stats()
    assert s.failed_events == 1 and s.events_processed == 2
    assert any("bad" in r.getMessage() for r in caplog.records if r.name == "nova")
    em.shutdown()


def test_keyboard_interrupt_in_listener_does_not_kill_the_worker() -> None:
    em = Emitter(pool=nova.WorkerPool(1))
    calls: list[int] = []

    def h(e: Event) -> None:
        calls.append(e.data)
        if e.data == 0:
            raise KeyboardInterrupt

    em.subscribe("x.y", h)
    em.emit_async(Event("x.y", 0))
    em.emit_async(Event("x.y", 1))
    assert em.flush(5)
    assert calls == [0, 1] and em.stats().failed_events == 1
    em.shutdown()


def _blocked_emitter(size: int, policy: OnFull) -> tuple[Emitter, threading.Event, list[int]]:
    gate = threading.Event()
    got: list[int] = []
    em = Emitter(buffer_size=size, on_full=policy, pool=nova.WorkerPool(1))

    def h(e: Event) -> None:
        gate.wait(10)
        got.append(e.data)

    em.subscribe("x.y", h)
    em.emit_async(Event("x.y", -1))  # occupies the only worker
    deadline = time.monotonic() + 5
    while em.stats().queued_events and time.monotonic() < deadline:
        time.sleep(0.001)
    return em, gate, got


def test_buffer_full_raises() -> None:
    em, gate, got = _blocked_emitter(2, OnFull.RAISE)
    em.emit_async(Event("x.y", 0))
    em.emit_async(Event("x.y", 1))
    with pytest.raises(nova.BufferFull, match="full"):
        em.emit_async(Event("x.y", 2))
    gate.set()
    assert em.flush(5)
    assert got == [-1, 0, 1]
    em.shutdown()


def test_drop_newest_and_drop_oldest_count_drops() -> None:
    em, gate, got = _blocked_emitter(2, OnFull.DROP_NEWEST)
    for i in range(5):
        em.emit_async(Event("x.y", i))
    gate.set()
    assert em.flush(5)
    assert got == [-1, 0, 1] and em.stats().dropped_events == 3
    em.shutdown()

    em, gate, got = _blocked_emitter(2, OnFull.DROP_OLDEST)
    for i in range(5):
        em.emit_async(Event("x.y", i))
    gate.set()
    assert em.flush(5)
    assert got == [-1, 3, 4] and em.stats().dropped_events == 3
    assert em.stats().events_emitted == 6
    em.shutdown()


def test_block_waits_with_the_gil_released_then_times_out() -> None:
    em, gate, got = _blocked_emitter(1, OnFull.BLOCK)
    em.emit_async(Event("x.y", 0))
    ticks: list[int] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    started = time.monotonic()
    with pytest.raises(nova.BufferFull):
        em.emit_async(Event("x.y", 1), timeout=0.3)
    waited = time.monotonic() - started
    stop.set()
    t.join()
    assert waited >= 0.25
    assert len(ticks) > 20  # another Python thread ran while we waited
    # and BLOCK succeeds once room appears
    threading.Timer(0.1, gate.set).start()
    em.emit_async(Event("x.y", 2), timeout=5)
    assert em.flush(5)
    assert got == [-1, 0, 2]
    em.shutdown()


def test_emit_batch_validates_first() -> None:
    em = Emitter()
    seen: list[int] = []
    em.subscribe("x.y", lambda e: seen.append(e.data))
    with pytest.raises(nova.ValidationError):
        em.emit_batch([Event("x.y", 1), "not an event"])  # type: ignore[list-item]
    with pytest.raises(nova.ValidationError):
        em.emit_batch([Event("x.y", 1), {"type": "x"}], asynchronous=True)  # type: ignore[list-item]
    assert em.flush(5) and seen == [] and em.stats().events_emitted == 0
    em.emit_batch([Event("x.y", i) for i in range(3)])
    em.emit_batch([Event("x.y", i) for i in range(3, 6)], asynchronous=True)
    assert em.flush(5)
    # Queued events reach a listener in no promised order (up to max_concurrency at once).
    assert sorted(seen) == list(range(6))
    em.shutdown()


def test_validator_rejects_with_cause() -> None:
    em = Emitter(validator=nova.strict_type_names)
    seen: list[Event] = []
    em.subscribe("#", seen.append)
    with pytest.raises(nova.ValidationError) as info:
        em.emit(Event("BadName"))
    assert isinstance(info.value.__cause__, nova.ValidationError)
    with pytest.raises(nova.ValidationError):
        em.emit_async(Event("BadName"))
    em.emit(Event("good.name"))
    assert em.flush(5) and [e.type for e in seen] == ["good.name"]
    em.shutdown()


def test_non_event_is_rejected(em: Emitter) -> None:
    with pytest.raises(nova.ValidationError, match="nova.Event"):
        em.emit("order.created")  # type: ignore[arg-type]


def test_contextvars_cross_to_the_worker() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    em = Emitter()
    seen: list[tuple[str, str]] = []
    em.subscribe("x.y", lambda e: seen.append((e.data, var.get())))
    var.set("one")
    em.emit_async(Event("x.y", "a"))
    var.set("two")
    em.emit_async(Event("x.y", "b"))
    em.emit_async(Event("x.y", "c"))
    assert em.flush(5)
    # Each event sees the context it was emitted in, whatever order the workers ran them in.
    assert sorted(seen) == [("a", "one"), ("b", "two"), ("c", "two")]
    em.shutdown()


def test_each_emitting_thread_and_context_is_seen_by_its_own_events() -> None:
    # The emitter reuses its last snapshot while the emitting context holds the same
    # variables; threads and contexts taking turns must each still get their own.
    var: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="main")
    em = Emitter()
    seen: list[tuple[str, str]] = []
    em.subscribe("x.y", lambda e: seen.append((e.data, var.get())))
    turn = threading.Barrier(2)

    def emitter_thread(name: str) -> None:
        var.set(name)
        for i in range(200):
            turn.wait(5)
            em.emit_async(Event("x.y", name))

    threads = [threading.Thread(target=emitter_thread, args=(n,)) for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    em.emit_async(Event("x.y", "main"))
    contextvars.copy_context().run(lambda: (var.set("inner"), em.emit_async(Event("x.y", "inner"))))
    em.emit_async(Event("x.y", "main"))
    assert em.flush(5)
    assert len(seen) == 403 and all(data == value for data, value in seen)
    em.shutdown()


def test_listener_context_changes_do_not_leak_between_events() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("counter", default=0)
    em = Emitter(max_concurrency=1)
    seen: list[int] = []

    def h(e: Event) -> None:
        seen.append(var.get())
        var.set(var.get() + 1)

    em.subscribe("x.y", h)
    for _ in range(3):
        em.emit_async(Event("x.y"))
    assert em.flush(5)
    assert seen == [0, 0, 0]
    em.shutdown()


def test_shutdown_returns_undelivered_and_rejects_new_emits() -> None:
    em, gate, got = _blocked_emitter(10, OnFull.RAISE)
    events = [Event("x.y", i) for i in range(5)]
    for ev in events:
        em.emit_async(ev)
    report = em.shutdown(timeout=0.2)
    assert report.undelivered == events
    assert report.in_flight == 1
    gate.set()
    with pytest.raises(nova.EmitterClosed):
        em.emit(Event("x.y"))
    with pytest.raises(nova.EmitterClosed):
        em.emit_async(Event("x.y"))
    assert em.shutdown() == nova.ShutdownReport(0, [], 0)
    assert em.stats().dropped_events == 5


def test_shutdown_drains_within_the_deadline() -> None:
    em = Emitter()
    got: list[int] = []
    em.subscribe("x.y", lambda e: got.append(e.data))
    for i in range(100):
        em.emit_async(Event("x.y", i))
    report = em.shutdown(timeout=10)
    assert report.undelivered == [] and report.in_flight == 0
    assert len(got) == 100 and report.drained + (100 - report.drained) == 100


def test_context_manager_shuts_down() -> None:
    got: list[int] = []
    with Emitter() as em:
        em.subscribe("x.y", lambda e: got.append(1))
        em.emit_async(Event("x.y"))
    assert got == [1] and em.closed


def test_shared_pool_closed_raises_pool_closed() -> None:
    pool = nova.WorkerPool(2)
    em = Emitter(pool=pool)
    pool.close()
    with pytest.raises(nova.PoolClosed):
        em.emit_async(Event("x.y"))


def test_async_listener_runs_on_a_loop() -> None:
    em = Emitter()
    seen: list[str] = []

    async def handler(e: Event) -> None:
        await asyncio.sleep(0)
        seen.append(e.type)

    em.subscribe("x.y", handler)
    em.emit(Event("x.y"))
    em.emit_async(Event("x.y"))
    assert em.flush(5)
    assert seen == ["x.y", "x.y"]
    em.shutdown()


def test_aemit_and_aemit_async_from_asyncio() -> None:
    async def main() -> list[Any]:
        em = Emitter(buffer_size=1)
        seen: list[Any] = []

        async def ah(e: Event) -> None:
            seen.append(("async", e.data))

        em.subscribe("x.y", lambda e: seen.append(("sync", e.data)))
        em.subscribe("x.y", ah)
        await em.aemit(Event("x.y", 1))
        for i in range(2, 6):
            await em.aemit_async(Event("x.y", i))
        while not em.flush(0):
            await asyncio.sleep(0.01)
        em.subscribe("bad.x", nova.Listener("bad", lambda e: 1 / 0))
        with pytest.raises(ListenerError):
            await em.aemit(Event("bad.x"))
        em.shutdown()
        return seen

    seen = asyncio.run(main())
    assert [x for x in seen if x[0] == "sync"] == [("sync", i) for i in range(1, 6)]
    assert sorted(x for x in seen if x[0] == "async") == [("async", i) for i in range(1, 6)]


def test_subscription_objects_do_not_keep_the_emitter_alive() -> None:
    em = Emitter()
    sub = em.subscribe("x.y", lambda e: None)
    em.shutdown()
    del em
    gc.collect()
    sub.unsubscribe()  # owner gone: still fine
    assert not sub.active


def test_bad_constructor_arguments() -> None:
    with pytest.raises(nova.ValidationError, match="buffer_size"):
        Emitter(buffer_size=0)
    with pytest.raises(nova.ValidationError, match="max_concurrency"):
        Emitter(max_concurrency=0)
    with pytest.raises(nova.ValidationError, match="on_full"):
        Emitter(on_full="sometimes")  # type: ignore[arg-type]
    with pytest.raises(nova.ValidationError, match="callable"):
        Emitter().subscribe("a.b", 42)


def test_emit_accepts_the_event_by_keyword_and_checks_its_arguments(em: Emitter) -> None:
    got: list[Any] = []
    em.subscribe("a.b", got.append)
    em.emit(Event("a.b", 1))
    em.emit(event=Event("a.b", 2))
    nova._core.Emitter.emit(em, Event("a.b", 3))
    assert [e.data for e in got] == [1, 2, 3]
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        em.emit()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional arguments"):
        em.emit(Event("a.b"), Event("a.b"))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        em.emit(evt=Event("a.b"))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        nova._core.Emitter.emit(object(), Event("a.b"))  # type: ignore[arg-type]
    assert len(got) == 3


def test_a_queued_event_goes_to_the_listeners_subscribed_at_delivery() -> None:
    gate = threading.Event()
    em = nova.Emitter(pool=nova.WorkerPool(1), name="late-subscribers")
    em.subscribe("hold", lambda e: gate.wait(5))  # keeps the one worker busy
    em.emit_async(nova.Event("hold"))
    early: list[Any] = []
    late: list[Any] = []
    leaving = em.subscribe("x", early.append)
    em.emit_async(nova.Event("x", 1))  # queued behind the held event
    leaving.unsubscribe()
    em.subscribe("x", late.append)
    gate.set()
    assert em.flush(5)
    assert (early, [e.data for e in late]) == ([], [1])
    em.shutdown()
    em.pool.close()
