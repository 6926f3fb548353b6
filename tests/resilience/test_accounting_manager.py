"""Issue 15, item 5: ``ListenerManager.stop()`` accounts for every event it was handed.

An event the Rust core is holding for a retry when the manager stops must end up in exactly one
of: delivered (the listener succeeded), dead-lettered, or ``StopReport.undelivered`` — and in
the report of the stop whose deadline it missed, not a later one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import nova
from nova.resilience.manager import ManagedListener


class Flaky:
    """Fails the first ``failures`` calls, then succeeds; records every call."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []
        self.first = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, event: nova.Event) -> None:
        with self.lock:
            self.calls.append(event.id)
            n = len(self.calls)
        self.first.set()
        if n <= self.failures:
            raise ConnectionError(f"attempt {n} fails")


def _config(
    delay: float, *, attempts: int = 3, queue: nova.DeadLetterQueue | None = None
) -> nova.ListenerConfig:
    retry = nova.RetryPolicy(max_attempts=attempts, initial_delay=delay, backoff=nova.Backoff.FIXED)
    if queue is None:
        return nova.ListenerConfig(retry=retry)
    return nova.ListenerConfig(retry=retry, dead_letter=nova.DeadLetterConfig(queue=queue))


@pytest.fixture
def manager_emitter() -> Iterator[nova.Emitter]:
    em = nova.Emitter()
    yield em
    em.shutdown(timeout=0)


def _emit_and_wait_first_failure(em: nova.Emitter, managed: ManagedListener, handler: Flaky) -> nova.Event:
    em.subscribe("x.y", managed)
    event = nova.Event("x.y", {"n": 1})
    em.emit_async(event)
    assert handler.first.wait(5), "the first attempt never ran"
    # The core turns the failure into a scheduled retry right after the handler returns.
    time.sleep(0.05)
    return event


def test_stop_mid_retry_reports_the_event_as_undelivered(manager_emitter: nova.Emitter) -> None:
    manager = nova.ListenerManager(name="accounting")
    handler = Flaky(failures=1)
    managed = manager.register(nova.Listener("flaky", handler), _config(3.0))
    event = _emit_and_wait_first_failure(manager_emitter, managed, handler)

    started = time.monotonic()
    report = manager.stop(timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert report.undelivered == [event]
    assert handler.calls == [event.id]  # not delivered
    assert manager.stats().events_processed == 0
    # Reported once: neither a later stop nor the emitter's shutdown hands it to the manager again.
    manager_emitter.shutdown(timeout=0)
    assert manager.stop(timeout=0).undelivered == []
    assert handler.calls == [event.id]


def test_a_retry_firing_after_the_stop_is_not_run_nor_reported_twice(manager_emitter: nova.Emitter) -> None:
    manager = nova.ListenerManager()
    handler = Flaky(failures=1)
    managed = manager.register(nova.Listener("flaky", handler), _config(0.6))
    event = _emit_and_wait_first_failure(manager_emitter, managed, handler)
    report = manager.stop(timeout=0.1)
    assert report.undelivered == [event]
    # Even with the manager started again, the retry the core fires later is refused: the
    # caller got the event back in the report and may emit it again itself.
    manager.start()
    time.sleep(1.0)
    assert manager_emitter.flush(timeout=5)
    assert handler.calls == [event.id]
    assert manager.stop(timeout=0).undelivered == []
    assert manager.stats().events_processed == 0


def test_stop_with_a_dead_letter_queue_still_reports_a_pending_retry(manager_emitter: nova.Emitter) -> None:
    """A retry pending at the deadline is undelivered, not dead-lettered: its attempts were
    not used up (see ``ListenerManager.stop``)."""
    queue = nova.DeadLetterQueue()
    manager = nova.ListenerManager()
    handler = Flaky(failures=10)
    managed = manager.register(nova.Listener("flaky", handler), _config(3.0, queue=queue))
    event = _emit_and_wait_first_failure(manager_emitter, managed, handler)
    report = manager.stop(timeout=0.5)
    assert report.undelivered == [event]
    manager_emitter.shutdown(timeout=0)
    assert queue.count() == 0
    assert manager.stats().dead_letter_events == 0
    assert manager.stop(timeout=0).undelivered == []
    queue.close()


def test_stop_waits_for_a_retry_due_before_the_deadline(manager_emitter: nova.Emitter) -> None:
    manager = nova.ListenerManager()
    handler = Flaky(failures=1)
    managed = manager.register(nova.Listener("flaky", handler), _config(0.3))
    event = _emit_and_wait_first_failure(manager_emitter, managed, handler)
    report = manager.stop(timeout=5.0)
    assert report.undelivered == []
    assert handler.calls == [event.id, event.id]  # delivered by its retry
    assert manager.stats().events_processed == 1


def test_stop_waits_for_a_last_attempt_that_dead_letters(manager_emitter: nova.Emitter) -> None:
    queue = nova.DeadLetterQueue()
    manager = nova.ListenerManager()
    handler = Flaky(failures=10)
    managed = manager.register(nova.Listener("flaky", handler), _config(0.3, attempts=2, queue=queue))
    event = _emit_and_wait_first_failure(manager_emitter, managed, handler)
    report = manager.stop(timeout=5.0)
    assert report.undelivered == []
    assert [entry.event for entry in queue.list()] == [event]
    assert manager.stats().dead_letter_events == 1
    queue.close()


def test_every_event_of_a_burst_is_accounted_for(manager_emitter: nova.Emitter) -> None:
    """Some events succeed, some retry before the deadline, some after it: each one is
    delivered, dead-lettered or reported undelivered — exactly once."""
    queue = nova.DeadLetterQueue()
    manager = nova.ListenerManager()
    delivered: list[str] = []
    lock = threading.Lock()
    attempts: dict[str, int] = {}

    def handler(event: nova.Event) -> None:
        with lock:
            attempts[event.id] = attempts.get(event.id, 0) + 1
            n = attempts[event.id]
        kind = event.data % 4
        if kind == 0:
            pass  # succeeds at once
        elif kind == 1 and n == 1:
            raise ConnectionError("quick retry")  # retried at 0.1 s, then succeeds
        elif kind == 2:
            raise ConnectionError("always")  # 2 attempts 0.1 s apart, then dead-lettered
        elif kind == 3 and n == 1:
            raise TimeoutError("slow retry")  # waits longer than the deadline
        with lock:
            delivered.append(event.id)

    config = nova.ListenerConfig(
        retry=nova.RetryPolicy(max_attempts=2, initial_delay=0.1, backoff=nova.Backoff.FIXED),
        dead_letter=nova.DeadLetterConfig(queue=queue),
    )
    slow = nova.ListenerConfig(
        retry=nova.RetryPolicy(max_attempts=2, initial_delay=5.0, backoff=nova.Backoff.FIXED),
        dead_letter=nova.DeadLetterConfig(queue=queue),
    )
    fast_managed = manager.register(nova.Listener("fast", handler), config)
    slow_managed = manager.register(nova.Listener("slow", handler), slow)
    manager_emitter.subscribe("fast", fast_managed)
    manager_emitter.subscribe("slow", slow_managed)
    events = [nova.Event("slow" if i % 4 == 3 else "fast", i) for i in range(200)]
    for event in events:
        manager_emitter.emit_async(event)
    deadline = time.monotonic() + 5
    while len(attempts) < len(events) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(attempts) == len(events)
    time.sleep(0.05)
    report = manager.stop(timeout=1.0)
    manager_emitter.shutdown(timeout=0)
    undelivered = [e.id for e in report.undelivered]
    dead = [entry.event.id for entry in queue.list()]
    outcome = delivered + dead + undelivered
    assert sorted(outcome) == sorted(e.id for e in events)  # each exactly once
    assert set(undelivered) == {e.id for e in events if e.data % 4 == 3}
    assert set(dead) == {e.id for e in events if e.data % 4 == 2}
    assert manager.stop(timeout=0).undelivered == []
    queue.close()


@pytest.mark.parametrize("core_then", ["fires the retry", "shuts down"])
def test_a_manual_attempt_then_stop_reports_the_waiting_event_once(core_then: str) -> None:
    """The attempt()/abandon() protocol: an event whose attempt() returned a delay waits for
    a retry; the stop that misses it reports it; what the core does next (its timer fires:
    attempt(); its component shuts down: abandon()) neither runs it nor reports it again."""
    manager = nova.ListenerManager()
    handler = Flaky(failures=5)
    managed = manager.register(nova.Listener("l", handler), _config(10.0))
    event = nova.Event("x.y")
    assert managed.attempt(event, 1) == 10.0
    assert manager.stop(timeout=0).undelivered == [event]
    manager.start()
    if core_then == "fires the retry":
        with pytest.raises(nova.ClosedError, match="StopReport.undelivered"):
            managed.attempt(event, 2)
    else:
        managed.abandon(event)
    assert manager.stop(timeout=0).undelivered == []
    assert handler.calls == [event.id]
    assert managed.abandoned == 1


def test_stop_mid_retry_on_a_bus_reports_the_event_once() -> None:
    manager = nova.ListenerManager()
    handler = Flaky(failures=1)
    managed = manager.register(nova.Listener("flaky", handler), _config(3.0))
    bus = nova.Bus()
    try:
        bus.create_topic("orders")
        bus.subscribe("orders", managed)
        event = nova.Event("order.created", 1)
        bus.publish("orders", event)
        assert handler.first.wait(5)
        time.sleep(0.05)
        assert manager.stop(timeout=0.3).undelivered == [event]
    finally:
        bus.shutdown(timeout=0)
    assert manager.stop(timeout=0).undelivered == []
    assert handler.calls == [event.id]
