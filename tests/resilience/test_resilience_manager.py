"""ListenerManager: registration, the sync policy, timeouts, concurrency, stop, the core's
attempt()/abandon() protocol, stats, health, metrics, and the Emitter integration."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

import nova
from nova import Health, StopReport
from nova.errors import (
    CircuitOpenError,
    ClosedError,
    ListenerError,
    ListenerNotFound,
    ListenerTimeout,
    RetryLimitExceeded,
    ValidationError,
)
from nova.resilience import (
    DURATION_BOUNDS,
    CircuitConfig,
    DeadLetterConfig,
    DeadLetterQueue,
    ListenerConfig,
    ListenerManager,
    ManagedListener,
    ManagerStats,
    ManualClock,
    RetryPolicy,
)

ONCE = RetryPolicy(max_attempts=1)


def ok(event: nova.Event) -> None:
    pass


def boom(event: nova.Event) -> None:
    raise ValueError("boom")


# -- configuration and registration -------------------------------------------------------------


def test_listener_config_defaults() -> None:
    c = ListenerConfig()
    assert c.concurrency == 10 and c.timeout == 30.0
    assert c.retry == nova.resilience.RetryPolicy()
    assert c.circuit.enabled is False and c.circuit.failure_threshold == 5
    assert c.dead_letter.enabled is False
    with pytest.raises(AttributeError):
        c.timeout = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 2.5}, "concurrency"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "1"}, "timeout"),
        ({"retry": 3}, "retry"),
        ({"circuit": True}, "circuit"),
        ({"dead_letter": None}, "dead_letter"),
    ],
)
def test_listener_config_validation(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ListenerConfig(**kwargs)


def test_register_returns_a_managed_listener() -> None:
    mgr = ListenerManager(name="orders")
    cfg = ListenerConfig(timeout=None)
    managed = mgr.register(ok, cfg)
    assert isinstance(managed, ManagedListener)
    assert managed.name == "ok" and managed.__qualname__ == "ok"
    assert isinstance(managed.listener, nova.Listener) and managed.listener.name == "ok"
    assert managed.config is cfg and managed.manager is mgr
    assert callable(managed)
    named = mgr.register(nova.Listener("billing", ok))
    assert named.name == "billing" and named.config == ListenerConfig()
    assert mgr.names() == ["ok", "billing"] and "billing" in mgr
    assert mgr.get("billing") is named
    with pytest.raises(ValidationError, match="already registered"):
        mgr.register(nova.Listener("billing", ok))
    with pytest.raises(ValidationError):
        mgr.register(ok, config={"timeout": 1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        mgr.register(42)
    assert mgr.stats().registered_listeners == 2
    with pytest.raises(ValidationError):
        ListenerManager(name="")
    # The same listener twice, under another name.
    again = mgr.register(nova.Listener("billing", ok), ListenerConfig(timeout=1.0), name="billing-eu")
    assert again.name == again.__qualname__ == "billing-eu" and again.listener.name == "billing"
    with pytest.raises(ValidationError, match="name"):
        mgr.register(ok, name="")


def test_unregister_and_unknown_names() -> None:
    mgr = ListenerManager(name="orders")
    managed = mgr.register(nova.Listener("a", ok))
    managed(nova.Event("x"))
    mgr.unregister("a")
    with pytest.raises(ListenerNotFound, match="'a'.*orders"):
        mgr.unregister("a")
    with pytest.raises(ListenerNotFound):
        mgr.process("a", nova.Event("x"))
    with pytest.raises(ListenerNotFound):
        mgr.listener_health("a")
    with pytest.raises(ListenerNotFound, match="no longer registered"):
        managed(nova.Event("x"))
    s = mgr.stats()
    assert s.registered_listeners == 0 and s.events_processed == 1  # totals are kept
    assert isinstance(s, ManagerStats)


def test_process_by_name() -> None:
    mgr = ListenerManager(clock=ManualClock())
    got: list[str] = []
    mgr.register(nova.Listener("a", lambda e: got.append(e.id)))
    mgr.register(nova.Listener("b", boom), ListenerConfig(retry=RetryPolicy(max_attempts=2)))
    event = nova.Event("x")
    mgr.process("a", event)
    assert got == [event.id]
    with pytest.raises(RetryLimitExceeded) as info:
        mgr.process("b", event)
    assert isinstance(info.value.__cause__, ValueError)
    assert "'b'" in str(info.value) and event.id in str(info.value)
    s = mgr.stats()
    assert (s.events_processed, s.events_retried, s.events_failed) == (2, 1, 1)


# -- on_error ---------------------------------------------------------------------------------


def test_on_error_returning_marks_the_attempt_handled() -> None:
    mgr = ListenerManager(clock=ManualClock())
    handled: list[BaseException] = []
    managed = mgr.register(nova.Listener("l", boom, on_error=lambda e, exc: handled.append(exc)))
    managed(nova.Event("x"))
    assert len(handled) == 1 and isinstance(handled[0], ValueError)
    s = mgr.stats()
    assert (s.events_failed, s.events_retried, s.events_processed) == (0, 0, 1)
    assert mgr.listener_health("l") is Health.HEALTHY


def test_on_error_raising_makes_its_error_the_attempts_error() -> None:
    mgr = ListenerManager(clock=ManualClock())

    def on_error(event: nova.Event, exc: BaseException) -> None:
        raise KeyError("translated") from exc

    managed = mgr.register(
        nova.Listener("l", boom, on_error=on_error), ListenerConfig(retry=RetryPolicy(max_attempts=2))
    )
    with pytest.raises(RetryLimitExceeded) as info:
        managed(nova.Event("x"))
    assert isinstance(info.value.__cause__, KeyError)
    assert mgr.stats().events_retried == 1


# -- timeouts ---------------------------------------------------------------------------------


def test_sync_handler_is_really_interrupted() -> None:
    mgr = ListenerManager()
    ticks: list[float] = []
    finished = threading.Event()

    def stuck(event: nova.Event) -> None:
        try:
            while True:
                ticks.append(time.monotonic())
                time.sleep(0.002)
        finally:
            finished.set()

    managed = mgr.register(stuck, ListenerConfig(timeout=0.1, retry=ONCE))
    started = time.monotonic()
    with pytest.raises(RetryLimitExceeded) as info:
        managed(nova.Event("x"))
    elapsed = time.monotonic() - started
    assert finished.is_set()  # the handler itself was unwound
    assert isinstance(info.value.__cause__, ListenerTimeout)
    assert isinstance(info.value.__cause__, TimeoutError)
    assert "0.1s" in str(info.value.__cause__)
    assert 0.09 <= elapsed < 1.0
    count = len(ticks)
    time.sleep(0.05)
    assert len(ticks) == count  # nothing keeps running
    mgr.stop(1)


def test_pure_python_busy_loop_is_interrupted() -> None:
    mgr = ListenerManager()

    def spin(event: nova.Event) -> None:
        n = 0
        while True:
            n += 1

    managed = mgr.register(spin, ListenerConfig(timeout=0.05, retry=ONCE))
    with pytest.raises(RetryLimitExceeded) as info:
        managed(nova.Event("x"))
    assert isinstance(info.value.__cause__, ListenerTimeout)


def test_a_handler_that_swallows_the_timeout_still_timed_out() -> None:
    mgr = ListenerManager()

    def stubborn(event: nova.Event) -> None:
        try:
            time.sleep(0.2)
            while True:
                time.sleep(0.001)
        except Exception:
            return  # swallowed

    managed = mgr.register(stubborn, ListenerConfig(timeout=0.05, retry=ONCE))
    with pytest.raises(RetryLimitExceeded) as info:
        managed(nova.Event("x"))
    assert isinstance(info.value.__cause__, ListenerTimeout)


def test_no_late_timeout_ever_escapes_the_attempt() -> None:
    """Handlers finishing right around their deadline: whichever side wins, no
    ListenerTimeout may surface after the attempt ended."""
    mgr = ListenerManager()

    def edge(event: nova.Event) -> None:
        end = time.perf_counter() + event.data
        while time.perf_counter() < end:
            pass

    managed = mgr.register(edge, ListenerConfig(timeout=0.002, retry=ONCE))
    outcomes = {"ok": 0, "timeout": 0}
    for i in range(150):
        try:
            managed(nova.Event("x", 0.0015 + (i % 10) * 0.0001))
            outcomes["ok"] += 1
        except RetryLimitExceeded as exc:
            assert isinstance(exc.__cause__, ListenerTimeout)
            outcomes["timeout"] += 1
        # Plenty of bytecodes where a stray asynchronous exception would land.
        total = 0
        for j in range(2000):
            total += j
    time.sleep(0.01)
    assert sum(outcomes.values()) == 150
    mgr.stop(1)


def test_timeouts_on_several_threads_hit_only_their_own_thread() -> None:
    mgr = ListenerManager()

    def handler(event: nova.Event) -> None:
        end = time.monotonic() + event.data
        while time.monotonic() < end:
            time.sleep(0.001)

    managed = mgr.register(handler, ListenerConfig(timeout=0.1, retry=ONCE, concurrency=8))
    results: dict[int, str] = {}

    def run(i: int, duration: float) -> None:
        try:
            managed(nova.Event("x", duration))
            results[i] = "ok"
        except RetryLimitExceeded:
            results[i] = "timeout"

    threads = [threading.Thread(target=run, args=(i, 0.3 if i % 2 else 0.02)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == {i: ("timeout" if i % 2 else "ok") for i in range(8)}


def test_timeout_none_means_no_limit() -> None:
    mgr = ListenerManager()
    managed = mgr.register(lambda e: time.sleep(0.05), ListenerConfig(timeout=None))
    managed(nova.Event("x"))
    assert mgr.stats().events_failed == 0


def test_nested_managed_calls_attribute_the_outer_timeout_to_the_outer_attempt() -> None:
    mgr = ListenerManager()
    inner_calls: list[int] = []

    def inner_handler(event: nova.Event) -> None:
        inner_calls.append(1)
        while True:
            time.sleep(0.001)

    inner = mgr.register(
        nova.Listener("inner", inner_handler), ListenerConfig(timeout=10.0, retry=RetryPolicy(max_attempts=5))
    )
    outer = mgr.register(nova.Listener("outer", inner), ListenerConfig(timeout=0.1, retry=ONCE))
    with pytest.raises(RetryLimitExceeded) as info:
        outer(nova.Event("x"))
    assert isinstance(info.value.__cause__, ListenerTimeout)
    assert "outer" in str(info.value.__cause__)
    assert inner_calls == [1]  # the inner listener did not retry the outer's timeout


def test_async_handler_timeout_cancels_it() -> None:
    mgr = ListenerManager()
    cancelled = threading.Event()

    async def slow(event: nova.Event) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    managed = mgr.register(slow, ListenerConfig(timeout=0.05, retry=ONCE))
    started = time.monotonic()
    with pytest.raises(RetryLimitExceeded) as info:
        managed(nova.Event("x"))
    assert time.monotonic() - started < 1.0
    assert isinstance(info.value.__cause__, ListenerTimeout)
    assert "cancelled" in str(info.value.__cause__)
    assert cancelled.wait(1)


def test_async_handler_success_error_and_its_own_timeout_error() -> None:
    mgr = ListenerManager(clock=ManualClock())
    got: list[str] = []

    async def good(event: nova.Event) -> None:
        await asyncio.sleep(0)
        got.append(event.id)

    async def own_timeout(event: nova.Event) -> None:
        raise TimeoutError("upstream timed out")

    event = nova.Event("x")
    mgr.register(good)(event)
    assert got == [event.id]
    managed = mgr.register(own_timeout, ListenerConfig(retry=ONCE))
    with pytest.raises(RetryLimitExceeded) as info:
        managed(event)
    # The handler's own TimeoutError is not mistaken for a Nova timeout.
    assert type(info.value.__cause__) is TimeoutError


def test_async_handler_with_async_on_error() -> None:
    mgr = ListenerManager()
    handled: list[BaseException] = []

    async def bad(event: nova.Event) -> None:
        raise ValueError("x")

    async def on_error(event: nova.Event, exc: BaseException) -> None:
        handled.append(exc)

    mgr.register(nova.Listener("l", bad, on_error=on_error))(nova.Event("x"))
    assert isinstance(handled[0], ValueError)


def test_async_handler_runs_on_a_given_loop() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        mgr = ListenerManager(loop=loop)
        seen: list[Any] = []

        async def where(event: nova.Event) -> None:
            seen.append(asyncio.get_running_loop())

        mgr.register(where)(nova.Event("x"))
        assert seen == [loop]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(2)
        loop.close()


# -- concurrency ------------------------------------------------------------------------------


class PeakTracker:
    """A handler that sleeps a little and records how many calls ran at once."""

    def __init__(self, sleep: float) -> None:
        self.sleep = sleep
        self.lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def __call__(self, event: nova.Event) -> None:
        with self.lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        time.sleep(self.sleep)
        with self.lock:
            self.current -= 1


def test_concurrency_limit_across_threads() -> None:
    mgr = ListenerManager()
    handler = PeakTracker(0.03)
    managed = mgr.register(handler, ListenerConfig(concurrency=2))
    threads = [threading.Thread(target=managed, args=(nova.Event("x"),)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handler.peak == 2
    assert mgr.stats().events_processed == 6


# -- stop ---------------------------------------------------------------------------------------


def test_stop_mid_retry_reports_the_event() -> None:
    mgr = ListenerManager()
    first_failure = threading.Event()

    def handler(event: nova.Event) -> None:
        first_failure.set()
        raise ConnectionError("down")

    managed = mgr.register(handler, ListenerConfig(retry=RetryPolicy(max_attempts=5, initial_delay=10)))
    event = nova.Event("x")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            managed(event)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert first_failure.wait(2)
    time.sleep(0.02)
    started = time.monotonic()
    report = mgr.stop(timeout=0.3)
    assert time.monotonic() - started < 1.0
    t.join(2)
    assert isinstance(report, StopReport)
    assert report.undelivered == [event]
    assert isinstance(errors[0], ClosedError)
    assert isinstance(errors[0].__cause__, ConnectionError)
    assert mgr.stop(0).undelivered == []  # reported once
    assert mgr.stats().events_processed == 0  # neither processed nor failed


def test_stop_lets_a_retry_due_before_the_deadline_finish() -> None:
    mgr = ListenerManager()
    calls: list[int] = []

    def handler(event: nova.Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("blip")

    managed = mgr.register(handler, ListenerConfig(retry=RetryPolicy(initial_delay=0.1)))
    t = threading.Thread(target=managed, args=(nova.Event("x"),))
    t.start()
    while not calls:
        time.sleep(0.001)
    report = mgr.stop(timeout=2.0)
    t.join(2)
    assert report.undelivered == [] and calls == [1, 1]
    assert mgr.stats().events_processed == 1


@pytest.mark.parametrize("circuit", [False, True])
def test_a_stop_between_a_failed_attempt_and_its_retry_waits_for_the_retry(circuit: bool) -> None:
    """The policy is still deciding (retry_on runs) when stop() starts: the attempt is over and
    the retry not yet counted, and stop() must still see the event as busy."""
    mgr = ListenerManager()
    calls: list[int] = []
    deciding = threading.Event()

    def handler(event: nova.Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("blip")

    def retry_on(error: BaseException) -> bool:
        deciding.set()
        time.sleep(0.1)  # stop() starts meanwhile
        return True

    config = ListenerConfig(
        retry=RetryPolicy(initial_delay=0.05, retry_on=retry_on),
        circuit=CircuitConfig(enabled=circuit),
    )
    managed = mgr.register(handler, config)
    t = threading.Thread(target=managed, args=(nova.Event("x"),))
    t.start()
    assert deciding.wait(5)
    report = mgr.stop(timeout=2.0)
    t.join(2)
    assert report.undelivered == [] and calls == [1, 1]
    assert managed._core.active == 0


def test_stop_waits_for_attempts_in_flight() -> None:
    mgr = ListenerManager()
    done = threading.Event()

    def slow(event: nova.Event) -> None:
        time.sleep(0.1)
        done.set()

    managed = mgr.register(slow)
    t = threading.Thread(target=managed, args=(nova.Event("x"),))
    t.start()
    time.sleep(0.02)
    mgr.stop(timeout=2)
    assert done.is_set()
    t.join()


def test_stopped_manager_rejects_until_started() -> None:
    mgr = ListenerManager(name="m")
    managed = mgr.register(ok)
    mgr.stop(0)
    assert not mgr.running
    with pytest.raises(ClosedError, match="'m' is stopped"):
        managed(nova.Event("x"))
    with pytest.raises(ClosedError):
        managed.attempt(nova.Event("x"), 1)
    mgr.start()
    managed(nova.Event("x"))
    with ListenerManager() as other:
        other.register(ok)(nova.Event("x"))
    assert not other.running


def test_stop_timeout_validation() -> None:
    with pytest.raises(ValidationError):
        ListenerManager().stop(-1)


# -- the core's protocol: attempt() and abandon() ------------------------------------------------


def test_attempt_returns_none_or_the_delay_then_gives_up() -> None:
    mgr = ListenerManager(clock=ManualClock())
    queue = DeadLetterQueue()
    managed = mgr.register(
        nova.Listener("l", boom),
        ListenerConfig(
            retry=RetryPolicy(max_attempts=3, initial_delay=0.5), dead_letter=DeadLetterConfig(queue=queue)
        ),
    )
    event = nova.Event("x")
    assert managed.attempt(event, 1, "orders") == 0.5
    assert managed.attempt(event, 2, "orders") == 1.0
    with pytest.raises(RetryLimitExceeded) as info:
        managed.attempt(event, 3, "orders")
    assert isinstance(info.value.__cause__, ValueError)
    [entry] = queue.list()
    assert entry.topic == "orders" and entry.attempts == 3 and entry.listener == "l"
    s = mgr.stats()
    assert (s.events_processed, s.events_retried, s.events_failed, s.dead_letter_events) == (1, 2, 1, 1)
    assert mgr.register(nova.Listener("fine", ok)).attempt(event, 1) is None
    with pytest.raises(ValidationError):
        managed.attempt(event, 0)


def test_attempt_with_an_open_circuit_does_not_call_the_handler() -> None:
    clock = ManualClock()
    mgr = ListenerManager(clock=clock)
    calls: list[int] = []

    def handler(event: nova.Event) -> None:
        calls.append(1)
        raise ConnectionError("down")

    managed = mgr.register(
        nova.Listener("l", handler),
        ListenerConfig(
            retry=RetryPolicy(max_attempts=5, initial_delay=1.0),
            circuit=CircuitConfig(failure_threshold=1, success_threshold=1, timeout=10),
        ),
    )
    event = nova.Event("x")
    assert managed.attempt(event, 1) == 1.0
    assert calls == [1]
    assert managed.attempt(event, 2) == 2.0  # CircuitOpenError, on the retry path
    assert calls == [1]
    mgr2 = ListenerManager(clock=clock)
    strict = mgr2.register(
        nova.Listener("s", handler),
        ListenerConfig(
            retry=RetryPolicy(max_attempts=5, retry_on=(ConnectionError,)),
            circuit=CircuitConfig(failure_threshold=1),
        ),
    )
    calls.clear()
    assert strict.attempt(event, 1) is not None  # a ConnectionError is retried...
    with pytest.raises(RetryLimitExceeded) as info:
        strict.attempt(event, 2)  # ...a CircuitOpenError is not listed in retry_on
    assert isinstance(info.value.__cause__, CircuitOpenError)
    assert calls == [1]


def test_a_simulated_core_driving_attempts_on_timers() -> None:
    """What the Rust core does: attempt, wait on a timer without blocking anyone, attempt
    again; events waiting at shutdown are abandoned and reported by stop()."""
    mgr = ListenerManager()
    outcomes: list[tuple[str, str]] = []
    timers: list[threading.Timer] = []
    fail_times = {"a": 2, "b": 100}
    seen: dict[str, int] = {}

    def handler(event: nova.Event) -> None:
        seen[event.data] = seen.get(event.data, 0) + 1
        if seen[event.data] <= fail_times[event.data]:
            raise ConnectionError("retry me")

    managed = mgr.register(
        nova.Listener("l", handler),
        ListenerConfig(retry=RetryPolicy(max_attempts=10, initial_delay=0.01, max_delay=0.05)),
    )

    def deliver(event: nova.Event, n: int) -> None:
        try:
            delay = managed.attempt(event, n)
        except RetryLimitExceeded:
            outcomes.append((event.data, "failed"))
            return
        if delay is None:
            outcomes.append((event.data, "done"))
            return
        timer = threading.Timer(delay, deliver, args=(event, n + 1))
        timers.append(timer)
        timer.start()

    a, b = nova.Event("x", "a"), nova.Event("x", "b")
    deliver(a, 1)
    deliver(b, 1)
    deadline = time.monotonic() + 2
    while ("a", "done") not in outcomes and time.monotonic() < deadline:
        time.sleep(0.005)
    assert ("a", "done") in outcomes
    for timer in timers:
        timer.cancel()
    managed.abandon(b)  # the core's shutdown deadline passed while b waited
    report = mgr.stop(timeout=0.5)
    assert report.undelivered == [b]
    assert managed.abandoned == 1
    assert seen["a"] == 3


def test_attempt_after_stop_abandons_a_retry() -> None:
    mgr = ListenerManager()
    managed = mgr.register(nova.Listener("l", boom), ListenerConfig(retry=RetryPolicy(max_attempts=3)))
    event = nova.Event("x")
    assert managed.attempt(event, 1) is not None
    # The stop whose deadline the waiting retry missed reports it (issue 15, item 5)...
    assert mgr.stop(0).undelivered == [event]
    with pytest.raises(ClosedError, match="StopReport.undelivered"):
        managed.attempt(event, 2)
    mgr.start()
    assert mgr.stop(0).undelivered == []  # ...once


# -- stats, health, metrics ----------------------------------------------------------------------


def test_health_rules_over_the_last_minute() -> None:
    clock = ManualClock(1000.0)
    mgr = ListenerManager(clock=clock)
    assert mgr.health() is Health.HEALTHY  # no listeners
    flaky_state = {"fail": 0}

    def flaky(event: nova.Event) -> None:
        if flaky_state["fail"]:
            flaky_state["fail"] -= 1
            raise ValueError("x")

    m = mgr.register(nova.Listener("flaky", flaky), ListenerConfig(retry=ONCE))
    mgr.register(nova.Listener("fine", ok))
    for _ in range(3):
        m(nova.Event("x"))
    assert mgr.listener_health("flaky") is Health.HEALTHY
    flaky_state["fail"] = 1
    with pytest.raises(RetryLimitExceeded):
        m(nova.Event("x"))
    assert mgr.listener_health("flaky") is Health.DEGRADED  # 1 of 4
    flaky_state["fail"] = 3
    for _ in range(3):
        with pytest.raises(RetryLimitExceeded):
            m(nova.Event("x"))
    assert mgr.listener_health("flaky") is Health.UNHEALTHY  # 4 of 7
    assert mgr.health() is Health.UNHEALTHY
    assert mgr._listener_healths() == {"flaky": Health.UNHEALTHY, "fine": Health.HEALTHY}
    clock.advance(30)
    m(nova.Event("x"))
    m(nova.Event("x"))
    assert mgr.listener_health("flaky") is Health.DEGRADED  # 4 of 9
    clock.advance(31)
    assert mgr.listener_health("flaky") is Health.HEALTHY  # the failures left the window
    assert str(Health.CIRCUIT_OPEN) == "circuit_open"


def test_exactly_half_failed_is_degraded_not_unhealthy() -> None:
    mgr = ListenerManager(clock=ManualClock())
    m = mgr.register(
        nova.Listener("l", lambda e: (_ for _ in ()).throw(ValueError()) if e.data else None),
        ListenerConfig(retry=ONCE),
    )
    m(nova.Event("x", 0))
    with pytest.raises(RetryLimitExceeded):
        m(nova.Event("x", 1))
    assert mgr.listener_health("l") is Health.DEGRADED


def test_circuit_open_beats_unhealthy_in_the_listener_but_manager_takes_the_worst() -> None:
    clock = ManualClock()
    mgr = ListenerManager(clock=clock)
    m = mgr.register(
        nova.Listener("c", boom),
        ListenerConfig(retry=ONCE, circuit=CircuitConfig(failure_threshold=1, timeout=5)),
    )
    u = mgr.register(nova.Listener("u", boom), ListenerConfig(retry=ONCE))
    with pytest.raises(RetryLimitExceeded):
        m(nova.Event("x"))
    assert mgr.listener_health("c") is Health.CIRCUIT_OPEN
    assert mgr.health() is Health.CIRCUIT_OPEN
    with pytest.raises(RetryLimitExceeded):
        u(nova.Event("x"))
    assert mgr.health() is Health.UNHEALTHY


def test_metrics_snapshot_shape() -> None:
    mgr = ListenerManager(name="orders", clock=ManualClock())
    a = mgr.register(nova.Listener("a", ok))
    b = mgr.register(
        nova.Listener("b", boom),
        ListenerConfig(
            retry=RetryPolicy(max_attempts=2), dead_letter=DeadLetterConfig(handler=lambda e, x: None)
        ),
    )
    for _ in range(3):
        a(nova.Event("x"))
    with pytest.raises(RetryLimitExceeded):
        b(nova.Event("x"))
    m = mgr._metrics()
    assert m["component"] == "orders"
    assert sorted(m["processed"]) == [
        ("a", "failure", 0),
        ("a", "success", 3),
        ("b", "failure", 1),
        ("b", "success", 0),
    ]
    assert sorted(m["retries"]) == [("a", 0), ("b", 1)]
    assert sorted(m["dead_letters"]) == [("a", 0), ("b", 1)]
    assert sorted(m["circuit_state"]) == [("a", 0), ("b", 0)]
    durations = {name: rest for name, *rest in m["durations"]}
    bounds, counts, total, count = durations["a"]
    assert list(bounds) == list(DURATION_BOUNDS) and len(counts) == len(bounds) + 1
    assert sum(counts) == count == 3 and total >= 0
    assert durations["b"][3] == 2  # both attempts timed


def test_metrics_feed_the_prometheus_collector() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from nova.metrics import PrometheusCollector

    mgr = ListenerManager(name="orders", clock=ManualClock())
    mgr.register(nova.Listener("a", ok))(nova.Event("x"))
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(mgr))
    text = generate_latest(registry).decode()
    assert 'nova_events_processed_total{component="orders",listener="a",result="success"} 1.0' in text
    assert 'nova_circuit_state{listener="a"} 0.0' in text


def test_logs_a_final_failure_without_dead_letters(caplog: pytest.LogCaptureFixture) -> None:
    mgr = ListenerManager(clock=ManualClock())
    managed = mgr.register(nova.Listener("l", boom), ListenerConfig(retry=ONCE))
    event = nova.Event("order.created")
    with caplog.at_level(logging.ERROR, logger="nova"), pytest.raises(RetryLimitExceeded):
        managed(event)
    [record] = [r for r in caplog.records if r.name == "nova"]
    assert record.levelno == logging.ERROR
    assert event.id in record.getMessage() and "order.created" in record.getMessage()
    assert record.event_id == event.id and record.event_type == "order.created"  # type: ignore[attr-defined]
    assert mgr.stats().events_failed == 1


# -- the Emitter --------------------------------------------------------------------------------


def test_sync_emit_gets_the_full_policy() -> None:
    mgr = ListenerManager(clock=ManualClock())
    queue = DeadLetterQueue()
    calls: list[int] = []

    def handler(event: nova.Event) -> None:
        calls.append(1)
        raise ConnectionError("down")

    managed = mgr.register(
        nova.Listener("billing", handler),
        ListenerConfig(retry=RetryPolicy(max_attempts=3), dead_letter=DeadLetterConfig(queue=queue)),
    )
    em = nova.Emitter()
    sub = em.subscribe("order.created", managed)
    assert sub.listener.name == "billing"
    event = nova.Event("order.created")
    with pytest.raises(ListenerError) as info:
        em.emit(event)
    assert info.value.listener == "billing"
    assert isinstance(info.value.__cause__, RetryLimitExceeded)
    assert isinstance(info.value.__cause__.__cause__, ConnectionError)
    assert len(calls) == 3
    assert queue.count() == 1 and queue.list()[0].event == event
    em.shutdown()


def test_emit_async_runs_the_policy_on_workers() -> None:
    mgr = ListenerManager()
    got: list[str] = []
    tries: dict[str, int] = {}

    def handler(event: nova.Event) -> None:
        tries[event.id] = tries.get(event.id, 0) + 1
        if tries[event.id] < 2:
            raise ConnectionError("blip")
        got.append(event.id)

    managed = mgr.register(handler, ListenerConfig(retry=RetryPolicy(initial_delay=0.005)))
    em = nova.Emitter()
    em.subscribe("x", managed)
    events = [nova.Event("x") for _ in range(5)]
    for e in events:
        em.emit_async(e)
    assert em.flush(timeout=5)
    assert sorted(got) == sorted(e.id for e in events)
    assert mgr.stats().events_retried == 5
    em.shutdown()


def test_timeout_inside_a_native_worker_thread() -> None:
    mgr = ListenerManager()

    def stuck(event: nova.Event) -> None:
        while True:
            time.sleep(0.001)

    managed = mgr.register(stuck, ListenerConfig(timeout=0.05, retry=ONCE))
    em = nova.Emitter()
    em.subscribe("x", managed)
    em.emit_async(nova.Event("x"))
    assert em.flush(timeout=5)
    assert mgr.stats().events_failed == 1
    em.shutdown()


def test_nova_shutdown_stops_managers_and_closes_queues(tmp_path: Any) -> None:
    queue = DeadLetterQueue(tmp_path / "dlq.db")
    mgr = ListenerManager()
    managed = mgr.register(nova.Listener("l", ok), ListenerConfig(dead_letter=DeadLetterConfig(queue=queue)))
    em = nova.Emitter()
    em.subscribe("x", managed)
    em.emit(nova.Event("x"))
    reports = nova.shutdown(em, mgr, queue, timeout=5)
    assert isinstance(reports[1], StopReport) and reports[1].undelivered == []
    assert queue.closed and not mgr.running


def test_health_endpoint_report_reads_the_manager() -> None:
    from nova.metrics import health_report

    mgr = ListenerManager(clock=ManualClock())
    mgr.register(nova.Listener("good", ok))(nova.Event("x"))
    with pytest.raises(RetryLimitExceeded):
        mgr.register(nova.Listener("bad", boom), ListenerConfig(retry=ONCE))(nova.Event("x"))
    status, listeners = health_report([mgr])
    assert status is Health.UNHEALTHY
    assert listeners == {"bad": "unhealthy", "good": "healthy"}


# -- the Bus: the core drives attempt() on its timers ----------------------------------------------
# A managed listener registered by the user is subscribed as it is (its own policy), so these
# exercise exactly the core <-> attempt() protocol. (An AT_MOST_ONCE topic would give it one
# attempt only: tests/bus/test_accounting_at_most_once.py.)


def test_bus_drives_attempts_and_dead_letters_carry_the_topic() -> None:
    mgr = ListenerManager()
    queue = DeadLetterQueue()
    calls: list[float] = []

    def handler(event: nova.Event) -> None:
        calls.append(time.monotonic())
        raise ValueError("x")

    managed = mgr.register(
        nova.Listener("h", handler),
        ListenerConfig(
            retry=RetryPolicy(max_attempts=3, initial_delay=0.03), dead_letter=DeadLetterConfig(queue=queue)
        ),
    )
    bus = nova.Bus()
    bus.create_topic("orders")
    bus.subscribe("orders", managed)
    event = nova.Event("order.created")
    bus.publish("orders", event)
    deadline = time.monotonic() + 5
    while queue.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert len(calls) == 3
    assert 0.027 <= gaps[0] <= 0.2 and 0.054 <= gaps[1] <= 0.3, gaps
    [entry] = queue.list()
    assert (entry.event, entry.topic, entry.attempts, entry.listener) == (event, "orders", 3, "h")
    s = mgr.stats()
    assert (s.events_processed, s.events_retried, s.events_failed, s.dead_letter_events) == (1, 2, 1, 1)
    # Redrive publishes to the entry's topic.
    got: list[str] = []
    bus.subscribe("orders", lambda e: got.append(e.id))
    assert queue.redrive(bus) == 1
    assert bus.flush(timeout=5)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.005)
    assert got == [event.id]
    bus.shutdown(timeout=1)


def test_bus_first_attempts_keep_the_concurrency_limit_and_timeout() -> None:
    """First attempts on a bus run in the native core: the slot limit holds across the pool's
    workers, a late handler is interrupted, and the timeout goes through the retry policy."""
    mgr = ListenerManager()
    handler = PeakTracker(0.01)
    timed_out = DeadLetterQueue()

    def slow(event: nova.Event) -> None:
        end = time.monotonic() + 5
        while time.monotonic() < end:  # bytecode, so the timeout can land
            pass

    limited = mgr.register(handler, ListenerConfig(concurrency=2))
    late = mgr.register(
        slow, ListenerConfig(timeout=0.05, retry=ONCE, dead_letter=DeadLetterConfig(queue=timed_out))
    )
    bus = nova.Bus(pool=nova.WorkerPool(4))
    bus.create_topic("t", partitions=8)
    bus.subscribe("t", limited)
    bus.publish_batch("t", [nova.Event("x") for _ in range(16)])
    assert bus.flush(timeout=10)
    assert handler.peak == 2
    started = time.monotonic()
    bus.subscribe("t", late)
    bus.publish("t", nova.Event("slow"))
    assert bus.flush(timeout=10)
    assert time.monotonic() - started < 2
    [entry] = timed_out.list()
    assert entry.error_type == "ListenerTimeout" and entry.attempts == 1
    s = mgr.stats()
    assert (s.events_processed, s.events_failed) == (16 + 1 + 1, 1)
    bus.shutdown(timeout=1)
    bus.pool.close(0)


def test_unregistered_or_stopped_listeners_are_not_run_by_the_core() -> None:
    mgr = ListenerManager()
    calls: list[str] = []
    managed = mgr.register(lambda e: calls.append(e.type), ListenerConfig(retry=ONCE))
    em = nova.Emitter()
    em.subscribe("x", managed)
    em.emit_async(nova.Event("x"))
    assert em.flush(timeout=5)
    mgr.stop()
    em.emit_async(nova.Event("x"))
    assert em.flush(timeout=5)
    mgr.start()
    mgr.unregister(managed)
    em.emit_async(nova.Event("x"))
    assert em.flush(timeout=5)
    assert calls == ["x"]
    em.shutdown(timeout=1)


def test_bus_shutdown_mid_retry_is_reported_by_the_manager_too() -> None:
    mgr = ListenerManager()
    first = threading.Event()

    def handler(event: nova.Event) -> None:
        first.set()
        raise ValueError("x")

    managed = mgr.register(
        nova.Listener("h", handler), ListenerConfig(retry=RetryPolicy(max_attempts=3, initial_delay=10))
    )
    bus = nova.Bus()
    bus.create_topic("orders")
    bus.subscribe("orders", managed)
    event = nova.Event("x")
    bus.publish("orders", event)
    assert first.wait(2)
    time.sleep(0.05)
    report = bus.shutdown(timeout=0.2)
    assert report.undelivered == [event]
    assert mgr.stop(0).undelivered == [event]  # nothing lost: processed, dead-lettered or reported
    assert managed.abandoned == 1


def test_a_retrying_subscriber_does_not_slow_the_others() -> None:
    mgr = ListenerManager()
    failing = mgr.register(
        nova.Listener("failing", boom),
        ListenerConfig(retry=RetryPolicy(max_attempts=3, initial_delay=1.0, backoff="fixed")),
    )  # type: ignore[arg-type]
    got: list[int] = []
    bus = nova.Bus()
    bus.create_topic("orders")
    bus.subscribe("orders", failing)
    bus.subscribe("orders", lambda e: got.append(e.data))
    started = time.monotonic()
    for i in range(200):
        bus.publish("orders", nova.Event("order.created", i))
    while len(got) < 200 and time.monotonic() - started < 5:
        time.sleep(0.002)
    elapsed = time.monotonic() - started
    assert sorted(got) == list(range(200))
    assert elapsed < 0.9  # well before the first retry (1 s) of the failing subscriber
    # The failing subscriber's partition is held back behind its first event, waiting for
    # its retry (order is kept); nothing of it finished.
    assert mgr.stats().events_processed == 0
    report = bus.shutdown(timeout=0.1)
    assert {e.data for e in report.undelivered} == set(range(200))
    # The manager reports the event that was waiting for its retry; the bus the rest.
    assert [e.data for e in mgr.stop(0).undelivered] == [0]
