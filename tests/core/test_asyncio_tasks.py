"""asyncio-native dispatch: queued deliveries run `async def` listeners as tasks on their loop,
without parking a worker thread (issue: asyncio-native dispatch)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from hypothesis import given, settings, strategies as st

import nova


class Peak:
    """How many listener bodies run at once, at most."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.done = 0

    async def io(self, event: nova.Event, seconds: float = 0.05) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.now -= 1
            self.done += 1


async def until(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)


def test_io_bound_async_listeners_all_run_at_once_on_the_users_loop() -> None:
    async def main() -> None:
        em = nova.Emitter()  # made inside asyncio.run: its listeners run on this loop
        p = Peak()
        em.subscribe("x", p.io)
        for i in range(200):
            em.emit_async(nova.Event("x", i))
        await until(lambda: p.done == 200)
        assert p.peak == 200, p.peak  # none waited for a worker thread
        await until(lambda: em.stats().events_processed == 200)
        em.shutdown(5)

    asyncio.run(main())


def test_async_listeners_on_novas_private_loop_from_a_plain_thread() -> None:
    em = nova.Emitter()  # no running loop: Nova's own loop thread runs them
    p = Peak()
    em.subscribe("x", p.io)
    loops: list[Any] = []

    async def where(event: nova.Event) -> None:
        loops.append(asyncio.get_running_loop())

    em.subscribe("y", where)
    for i in range(50):
        em.emit_async(nova.Event("x", i))
    em.emit_async(nova.Event("y"))
    assert em.flush(10)
    assert p.done == 50 and p.peak > 10
    assert loops and loops[0].is_running()
    assert em.stats().events_processed == 51
    em.shutdown(5)


def test_a_failing_async_listener_is_counted_logged_and_told_to_middleware() -> None:
    outcomes: list[Any] = []
    em = nova.Emitter()
    em.use(nova.middleware(after=lambda e, err: outcomes.append(err)))
    handled: list[Any] = []

    async def boom(event: nova.Event) -> None:
        await asyncio.sleep(0)
        raise ValueError("no stock")

    em.subscribe("x", boom)
    em.subscribe("y", nova.Listener("guarded", boom, on_error=lambda e, err: handled.append(err)))
    em.emit_async(nova.Event("x"))
    em.emit_async(nova.Event("y"))
    assert em.flush(10)
    stats = em.stats()
    assert stats.failed_events == 1 and stats.events_processed == 2
    assert len(outcomes) == 2
    assert sum(isinstance(o, nova.ListenerError) for o in outcomes) == 1
    assert len(handled) == 1 and isinstance(handled[0], ValueError)
    em.shutdown(5)


def test_shutdown_cancels_tasks_running_at_its_deadline_and_returns_their_events() -> None:
    em = nova.Emitter()  # listeners on Nova's own loop; shutdown from this thread
    outcomes: list[Any] = []
    em.use(nova.middleware(after=lambda e, err: outcomes.append(err)))
    cancelled: list[int] = []

    async def slow(event: nova.Event) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(event.data)
            raise

    em.subscribe("x", slow)
    sent = [nova.Event("x", i) for i in range(20)]
    for e in sent:
        em.emit_async(e)
    time.sleep(0.1)
    report = em.shutdown(0.05)
    assert report.in_flight == 0, report
    assert sorted(e.data for e in report.undelivered) == list(range(20))
    assert {id(e) for e in report.undelivered} == {id(e) for e in sent}
    deadline = time.monotonic() + 5
    while len(cancelled) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(cancelled) == list(range(20))  # each task was really cancelled
    stats = em.stats()
    # Undelivered, so never also processed or failed; the middleware was told why.
    assert stats.events_processed == 0 and stats.failed_events == 0
    assert stats.dropped_events == 20
    assert len(outcomes) == 20 and all(isinstance(o, nova.ClosedError) for o in outcomes)
    assert "cancelled" in str(outcomes[0])


def test_each_event_is_processed_or_returned_when_shutdown_races_its_tasks() -> None:
    em = nova.Emitter()
    done: list[int] = []

    async def short(event: nova.Event) -> None:
        await asyncio.sleep(0.001 * (event.data % 7))
        done.append(event.data)

    em.subscribe("x", short)
    for i in range(300):
        em.emit_async(nova.Event("x", i))
    time.sleep(0.003)
    report = em.shutdown(0.002)
    returned = [e.data for e in report.undelivered]
    # A task whose end was being settled on the loop's thread as the deadline passed is in
    # flight (not cancelled, not handed back) and is counted processed a moment later. With a
    # GIL the two rarely meet; without one they do.
    time.sleep(0.05)
    processed = em.stats().events_processed
    assert processed + len(returned) == 300, (processed, len(returned), report.in_flight)
    time.sleep(0.05)  # a cancelled task never reports afterwards
    assert em.stats().events_processed == processed
    # Those that finished and were not handed back are exactly the processed ones (a task that
    # finished as the deadline passed may be handed back too: reported, never lost).
    assert len(set(done) - set(returned)) == processed


def test_shutdown_on_the_listeners_own_loop_counts_running_tasks_in_flight() -> None:
    async def main() -> None:
        em = nova.Emitter()  # made inside asyncio.run: its tasks need this thread to run
        p = Peak()

        async def slow(event: nova.Event) -> None:
            await p.io(event, 0.1)

        em.subscribe("x", slow)
        for i in range(20):
            em.emit_async(nova.Event("x", i))
        await asyncio.sleep(0.01)
        report = em.shutdown(0.01)
        assert report.in_flight == 20, report  # running on this loop: they go on, none lost
        assert report.undelivered == []
        await until(lambda: p.done == 20)
        assert em.stats().events_processed == 20

    asyncio.run(main())


def test_bus_shutdown_cancels_running_listener_tasks_and_returns_their_events() -> None:
    bus = nova.Bus()
    bus.create_topic("t", partitions=4, ordering_key="k")

    async def slow(event: nova.Event) -> None:
        await asyncio.sleep(30)

    bus.subscribe("t", slow)
    for i in range(12):
        bus.publish("t", nova.Event("t", {"k": i % 4, "n": i}))
    time.sleep(0.1)
    report = bus.shutdown(0.05)
    # Four running (one per partition, in order); the rest held back behind them.
    assert sorted(e.data["n"] for e in report.undelivered) == list(range(12)), report
    assert report.in_flight == 0
    assert bus.stats().events_processed == 0


def test_flush_on_the_listeners_own_loop_does_not_hang() -> None:
    async def main() -> None:
        em = nova.Emitter()
        p = Peak()
        em.subscribe("x", p.io)
        em.emit_async(nova.Event("x"))
        began = time.monotonic()
        assert em.flush(None) is False  # its task cannot finish while this thread waits
        assert time.monotonic() - began < 1.0
        await until(lambda: p.done == 1)
        assert em.flush(None) is True
        em.shutdown(5)

    asyncio.run(main())


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.floats(0, 0.003)), min_size=1, max_size=120))
def test_per_key_order_with_async_listeners_on_a_16_partition_bus(events: list[tuple[int, float]]) -> None:
    bus = nova.Bus(pool=nova.WorkerPool(workers=4))
    bus.create_topic("orders", partitions=16, ordering_key="k", delivery_mode=nova.DeliveryMode.AT_MOST_ONCE)
    seen: dict[str, list[int]] = {}
    lock = threading.Lock()

    async def listener(event: nova.Event) -> None:
        await asyncio.sleep(event.data[1])
        with lock:
            seen.setdefault(event.metadata["k"], []).append(event.data[0])

    bus.subscribe("orders", listener)
    for n, (key, pause) in enumerate(events):
        bus.publish("orders", nova.Event("order", (n, pause), metadata={"k": str(key)}))
    assert bus.flush(20)
    for key, ns in seen.items():
        assert ns == sorted(ns), f"key {key} out of order: {ns}"
    assert sum(len(v) for v in seen.values()) == len(events)
    bus.shutdown(5)


def test_aemit_on_the_listeners_loop_awaits_them_here_with_emits_errors() -> None:
    async def main() -> None:
        em = nova.Emitter()
        seen: list[Any] = []
        loops: list[Any] = []

        async def ok(event: nova.Event) -> None:
            loops.append(asyncio.get_running_loop())
            await asyncio.sleep(0.01)
            seen.append(event.data)

        async def boom(event: nova.Event) -> None:
            raise ValueError("no stock")

        em.subscribe("x", ok)
        await em.aemit(nova.Event("x", 1))
        assert seen == [1] and loops == [asyncio.get_running_loop()]
        em.subscribe("x", boom)
        try:
            await em.aemit(nova.Event("x", 2))
        except nova.ListenerError as e:
            assert "no stock" in str(e)
        else:
            raise AssertionError("aemit did not raise")
        em.subscribe("x", boom)
        try:
            await em.aemit(nova.Event("x", 3))
        except ExceptionGroup as g:
            assert len(g.exceptions) == 2
        else:
            raise AssertionError("aemit did not raise a group")
        stats = em.stats()
        assert stats.events_processed == 6 and stats.failed_events == 3  # per listener call
        assert em.flush(1)
        em.shutdown(5)

    asyncio.run(main())


def test_aemit_with_sync_and_async_listeners_runs_each_where_it_belongs() -> None:
    async def main() -> None:
        em = nova.Emitter()
        loop_thread = threading.get_ident()
        where: dict[str, int] = {}
        finished: list[str] = []

        async def on_loop(event: nova.Event) -> None:
            where["async"] = threading.get_ident()
            await asyncio.sleep(0.02)
            finished.append("async")

        def on_pool(event: nova.Event) -> None:
            where["sync"] = threading.get_ident()
            time.sleep(0.02)  # blocks a pool thread, never the loop
            finished.append("sync")

        em.subscribe("x", on_loop)
        em.subscribe("x", on_pool)
        await em.aemit(nova.Event("x"))
        assert sorted(finished) == ["async", "sync"]  # both done when aemit returns
        assert where["async"] == loop_thread and where["sync"] != loop_thread

        def sync_boom(event: nova.Event) -> None:
            raise KeyError("sku")

        async def async_boom(event: nova.Event) -> None:
            raise ValueError("no stock")

        em.subscribe("y", sync_boom)
        em.subscribe("y", async_boom)
        try:
            await em.aemit(nova.Event("y"))
        except ExceptionGroup as g:  # what emit raises for two failures
            assert sorted(type(e.__cause__).__name__ for e in g.exceptions) == ["KeyError", "ValueError"]
            assert all(isinstance(e, nova.ListenerError) for e in g.exceptions)
        else:
            raise AssertionError("aemit did not raise a group")
        stats = em.stats()
        assert stats.events_processed == 4 and stats.failed_events == 2
        em.shutdown(5)

    asyncio.run(main())


def test_a_loops_task_factory_makes_the_listener_tasks() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        made: list[Any] = []

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            task = asyncio.Task(coro, loop=loop, **kwargs)
            made.append(task)
            return task

        loop.set_task_factory(factory)
        em = nova.Emitter()
        p = Peak()
        em.subscribe("x", p.io)
        for i in range(3):
            em.emit_async(nova.Event("x", i))
        await until(lambda: p.done == 3)
        assert len(made) == 3
        em.shutdown(5)

    asyncio.run(main())


def test_publish_on_the_bus_loop_starts_listener_tasks_at_once_in_key_order() -> None:
    async def main() -> None:
        bus = nova.Bus(pool=nova.WorkerPool(workers=4))  # made inside asyncio.run: this loop
        bus.create_topic("t", partitions=4, ordering_key="k")
        seen: dict[int, list[int]] = {}

        async def slow(event: nova.Event) -> None:
            await asyncio.sleep(0.001 * (event.data["n"] % 3))
            seen.setdefault(event.data["k"], []).append(event.data["n"])

        bus.subscribe("t", slow)
        mine = {t for t in asyncio.all_tasks()}
        await bus.apublish("t", nova.Event("t", {"k": 0, "n": -1}))
        started = [t for t in asyncio.all_tasks() - mine if isinstance(t.get_coro(), nova._core.ListenerRun)]
        assert len(started) == 1  # its task exists already: no worker thread hop
        for n in range(200):
            bus.publish("t", nova.Event("t", {"k": n % 4, "n": n}))
        # Settled once each managed attempt has finished its bookkeeping, after the handler.
        await until(lambda: bus.stats().events_processed == 201)
        assert sum(map(len, seen.values())) == 201
        for k, ns in seen.items():
            assert ns == sorted(ns), (k, ns)  # per key, in publish order
        bus.shutdown(5)

    asyncio.run(main())


def test_aemit_async_waits_for_room_without_polling() -> None:
    async def main() -> None:
        release = threading.Event()
        em = nova.Emitter(buffer_size=2, pool=nova.WorkerPool(workers=1))
        em.subscribe("x", lambda e: release.wait(5))
        for i in range(3):
            await em.aemit_async(nova.Event("x", i))  # the third waits for room? one is taken
        waiter = asyncio.ensure_future(em.aemit_async(nova.Event("x", 3)))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        release.set()
        await asyncio.wait_for(waiter, 5)
        assert em.flush(5)
        assert em.stats().events_processed == 4
        em.shutdown(5)

    asyncio.run(main())


def test_managed_async_listeners_retry_time_out_and_keep_their_concurrency_as_tasks() -> None:
    async def main() -> None:
        bus = nova.Bus()  # AT_LEAST_ONCE: every subscriber is managed
        bus.create_topic("t", partitions=4, ordering_key="k")
        seen: dict[str, list[int]] = {}
        attempts: dict[int, int] = {}

        async def flaky(event: nova.Event) -> None:
            attempts[event.data] = attempts.get(event.data, 0) + 1
            await asyncio.sleep(0.002)
            if event.data % 5 == 0 and attempts[event.data] == 1:
                raise RuntimeError("first attempt fails")
            seen.setdefault(event.metadata["k"], []).append(event.data)

        bus.subscribe(
            "t",
            flaky,
            config=nova.ListenerConfig(
                retry=nova.RetryPolicy(max_attempts=3, initial_delay=0.005, backoff=nova.Backoff.FIXED)
            ),
        )
        for i in range(60):
            bus.publish("t", nova.Event("x", i, metadata={"k": str(i % 7)}))
        await until(lambda: sum(len(v) for v in seen.values()) == 60)
        assert all(v == sorted(v) for v in seen.values()), seen
        assert bus.stats().failed_events == 0

        em = nova.Emitter()
        cancelled: list[int] = []

        async def slow(event: nova.Event) -> None:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append(1)
                raise

        em.subscribe(
            "s", slow, config=nova.ListenerConfig(timeout=0.05, retry=nova.RetryPolicy(max_attempts=1))
        )
        em.emit_async(nova.Event("s"))
        await until(lambda: em.stats().failed_events == 1)
        assert cancelled == [1]

        limited = Peak()

        async def conc(event: nova.Event) -> None:
            await limited.io(event, 0.01)

        em.subscribe("d", conc, config=nova.ListenerConfig(concurrency=3))
        for i in range(30):
            em.emit_async(nova.Event("d", i))
        await until(lambda: limited.done == 30)
        assert limited.peak == 3
        bus.shutdown(5)
        em.shutdown(5)

    asyncio.run(main())


def test_a_closed_user_loop_does_not_lose_events() -> None:
    """The loop an emitter was made on is gone: its async listeners run on Nova's own loop."""
    emitters: list[nova.Emitter] = []

    async def make() -> None:
        emitters.append(nova.Emitter())

    asyncio.run(make())  # the loop is closed when run() returns
    em = emitters[0]
    p = Peak()
    em.subscribe("x", p.io)
    for i in range(10):
        em.emit_async(nova.Event("x", i))
    assert em.flush(10)
    assert p.done == 10 and em.stats().failed_events == 0
    em.shutdown(5)
