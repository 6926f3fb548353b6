"""Circuit breaker: transitions driven deterministically by a manual clock."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import nova
from nova.errors import CircuitOpenError, RetryLimitExceeded, ValidationError
from nova.resilience import (
    CircuitBreaker,
    CircuitConfig,
    CircuitState,
    ListenerConfig,
    ListenerManager,
    ManualClock,
    RetryPolicy,
)

CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


def breaker(clock: ManualClock, **kw: Any) -> CircuitBreaker:
    cfg: dict[str, Any] = dict(failure_threshold=3, success_threshold=2, timeout=10.0, sliding_window=60.0)
    cfg.update(kw)
    return CircuitBreaker(CircuitConfig(**cfg), clock=clock, name="svc")


def fail(b: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        b.failure(b.acquire())


def succeed(b: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        b.success(b.acquire())


def test_config_defaults_and_validation() -> None:
    c = CircuitConfig()
    assert (c.enabled, c.failure_threshold, c.success_threshold, c.timeout, c.sliding_window) == (
        True,
        5,
        3,
        30.0,
        60.0,
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"success_threshold": 0}, "success_threshold"),
        ({"timeout": -1}, "timeout"),
        ({"sliding_window": 0}, "sliding_window"),
        ({"enabled": "yes"}, "enabled"),
        ({"timeout": float("nan")}, "timeout"),
    ]
    for kw, field in cases:
        with pytest.raises(ValidationError, match=field):
            CircuitConfig(**kw)


def test_opens_after_threshold_failures_within_the_window() -> None:
    clock = ManualClock()
    b = breaker(clock)
    fail(b, 2)
    assert b.state is CLOSED
    fail(b)
    assert b.state is OPEN
    with pytest.raises(CircuitOpenError, match="svc"):
        b.acquire()


def test_failures_outside_the_sliding_window_do_not_count() -> None:
    clock = ManualClock()
    b = breaker(clock, sliding_window=5.0)
    fail(b, 2)
    clock.advance(5.5)
    fail(b, 2)
    assert b.state is CLOSED
    fail(b)
    assert b.state is OPEN


def test_successes_in_closed_state_do_not_reset_the_window() -> None:
    clock = ManualClock()
    b = breaker(clock)
    fail(b, 2)
    succeed(b, 10)
    fail(b)
    assert b.state is OPEN


def test_half_open_after_timeout_and_closes_after_consecutive_successes() -> None:
    clock = ManualClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(9.99)
    assert b.state is OPEN
    assert b.retry_after() == pytest.approx(0.01)
    clock.advance(0.01)
    assert b.state is HALF_OPEN
    succeed(b)
    assert b.state is HALF_OPEN
    succeed(b)
    assert b.state is CLOSED
    # The failure window was cleared: two more failures do not open it.
    fail(b, 2)
    assert b.state is CLOSED


def test_half_open_lets_one_trial_at_a_time() -> None:
    clock = ManualClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(10)
    trial = b.acquire()
    assert trial.trial
    with pytest.raises(CircuitOpenError, match="half-open"):
        b.acquire()
    b.success(trial)
    second = b.acquire()  # the next trial may go once the first ended
    b.success(second)
    assert b.state is CLOSED


def test_failed_trial_reopens_and_restarts_the_timeout() -> None:
    clock = ManualClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(10)
    succeed(b)  # one success of two
    clock.advance(3)
    fail(b)
    assert b.state is OPEN
    clock.advance(9)
    assert b.state is OPEN  # timeout restarted at the failure, not at the first opening
    clock.advance(1)
    assert b.state is HALF_OPEN
    succeed(b)  # consecutive count started over
    assert b.state is HALF_OPEN
    succeed(b)
    assert b.state is CLOSED
    assert b.times_opened == 2


def test_outcomes_from_an_earlier_state_are_ignored() -> None:
    clock = ManualClock()
    b = breaker(clock)
    late = b.acquire()  # taken while CLOSED, finishes after the circuit opened
    fail(b, 3)
    b.success(late)
    assert b.state is OPEN
    clock.advance(10)
    assert b.state is HALF_OPEN
    b.failure(late)  # a stale failure does not reopen
    assert b.state is HALF_OPEN


def test_disabled_breaker_never_opens() -> None:
    b = CircuitBreaker(CircuitConfig(enabled=False, failure_threshold=1), clock=ManualClock())
    fail(b, 100)
    assert b.state is CLOSED


def test_concurrent_half_open_admits_exactly_one() -> None:
    clock = ManualClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(10)
    admitted: list[Any] = []
    rejected: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        try:
            admitted.append(b.acquire())
        except CircuitOpenError as exc:
            rejected.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 1 and len(rejected) == 7


# -- through the manager ------------------------------------------------------------------------


def test_open_circuit_keeps_events_from_the_listener_and_takes_the_retry_path() -> None:
    clock = ManualClock()
    mgr = ListenerManager(clock=clock, name="orders")
    calls: list[str] = []
    healthy = {"on": False}

    def handler(event: nova.Event) -> None:
        calls.append(event.id)
        if not healthy["on"]:
            raise ConnectionError("down")

    managed = mgr.register(
        nova.Listener("svc", handler),
        ListenerConfig(
            retry=RetryPolicy(max_attempts=1),
            circuit=CircuitConfig(failure_threshold=2, success_threshold=1, timeout=5.0),
        ),
    )
    for _ in range(2):
        with pytest.raises(RetryLimitExceeded):
            managed(nova.Event("x"))
    assert managed.circuit_state is OPEN
    assert mgr.stats().open_circuits == 1
    assert mgr.listener_health("svc") is nova.Health.CIRCUIT_OPEN
    assert mgr._metrics()["circuit_state"] == [("svc", 2)]
    before = len(calls)
    with pytest.raises(RetryLimitExceeded) as info:
        managed(nova.Event("x"))
    assert isinstance(info.value.__cause__, CircuitOpenError)
    assert len(calls) == before  # not handed to the listener
    clock.advance(5)
    assert mgr._metrics()["circuit_state"] == [("svc", 1)]
    healthy["on"] = True
    managed(nova.Event("x"))
    assert managed.circuit_state is CLOSED
    assert mgr.stats().open_circuits == 0


def test_retries_wait_out_an_open_circuit() -> None:
    """With retries, an event arriving at an open circuit waits (on the clock) and gets
    through once the circuit is half-open."""
    clock = ManualClock()
    mgr = ListenerManager(clock=clock)
    calls: list[int] = []
    patient = mgr.register(
        nova.Listener("patient", lambda e: calls.append(1)),
        ListenerConfig(
            retry=RetryPolicy(max_attempts=10, initial_delay=1.0, backoff="fixed"),  # type: ignore[arg-type]
            circuit=CircuitConfig(failure_threshold=1, success_threshold=1, timeout=4.0),
        ),
    )
    patient.circuit.failure(patient.circuit.acquire())
    assert patient.circuit_state is OPEN
    patient(nova.Event("x"))
    assert calls == [1]  # rejected attempts did not reach it; the one after the timeout did
    assert clock.sleeps == [1.0, 1.0, 1.0, 1.0]
    assert patient.circuit_state is CLOSED
    assert mgr.stats().events_retried == 4
