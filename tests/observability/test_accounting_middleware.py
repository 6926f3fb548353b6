"""Middleware `after` runs once per event with the event's final outcome, on every path
(issue: every event accounted for, item 2; API.md section 8)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import nova
from nova.logging import LoggingMiddleware
from nova.tracing import TracingMiddleware


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.after: dict[Any, list[BaseException | None]] = {}

    def before(self, event: nova.Event) -> None:
        return None

    def after_(self, event: nova.Event, error: BaseException | None) -> None:
        with self.lock:
            self.after.setdefault(event.data, []).append(error)


def recorder() -> tuple[Recorder, Any]:
    r = Recorder()
    return r, nova.middleware(before=r.before, after=r.after_)


def retry(attempts: int = 3, delay: float = 0.01, **kw: Any) -> nova.ListenerConfig:
    return nova.ListenerConfig(
        retry=nova.RetryPolicy(max_attempts=attempts, initial_delay=delay, backoff=nova.Backoff.FIXED), **kw
    )


def failing(times: int) -> Any:
    seen: dict[Any, int] = {}

    def listener(event: nova.Event) -> None:
        seen[event.data] = seen.get(event.data, 0) + 1
        if seen[event.data] <= times:
            raise RuntimeError(f"attempt {seen[event.data]} fails")

    return listener


def wait_for(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_first_attempt_success_and_success_on_a_retry() -> None:
    r, mw = recorder()
    em = nova.Emitter()
    em.use(mw)
    em.subscribe("x", failing(1), config=retry(delay=0.2))
    em.emit_async(nova.Event("x", "a"))
    em.emit_async(nova.Event("y", "b"))  # nobody listens: after(None) at once
    time.sleep(0.05)
    assert "a" not in r.after, "after ran before the retry settled"
    assert em.flush(5)
    assert r.after == {"a": [None], "b": [None]}
    em.shutdown(5)


def test_exhausted_retries_and_dead_letters_get_the_error_once() -> None:
    r, mw = recorder()
    dlq = nova.DeadLetterQueue()
    em = nova.Emitter()
    em.use(mw)
    em.subscribe("x", failing(10), config=retry(3, dead_letter=nova.DeadLetterConfig(queue=dlq)))
    em.emit_async(nova.Event("x", "a"))
    assert em.flush(5)
    assert list(r.after) == ["a"] and len(r.after["a"]) == 1
    assert isinstance(r.after["a"][0], nova.ListenerError)
    assert len(dlq.list()) == 1
    assert em.stats().failed_events == 1
    em.shutdown(5)


def test_circuit_open_is_a_failure_for_after() -> None:
    r, mw = recorder()
    em = nova.Emitter()
    em.use(mw)
    em.subscribe(
        "x",
        failing(100),
        config=nova.ListenerConfig(
            retry=nova.RetryPolicy(max_attempts=1),
            circuit=nova.CircuitConfig(failure_threshold=1, timeout=60),
        ),
    )
    for i in range(3):
        em.emit_async(nova.Event("x", i))
    assert em.flush(5)
    assert sorted(r.after) == [0, 1, 2]
    assert all(len(v) == 1 and isinstance(v[0], nova.NovaError) for v in r.after.values())
    em.shutdown(5)


def test_events_held_back_behind_a_retry_get_after_when_released() -> None:
    r, mw = recorder()
    bus = nova.Bus()
    bus.use(mw)
    bus.create_topic("orders", partitions=1)
    order: list[Any] = []
    first = failing(1)

    def listener(event: nova.Event) -> None:
        if event.data == 0:
            first(event)
        order.append(event.data)

    bus.subscribe("orders", listener, config=retry(3, delay=0.05))
    for i in range(4):
        bus.publish("orders", nova.Event("order.created", i))
    time.sleep(0.02)
    assert not r.after, "after ran before the held-back events were delivered"
    assert bus.flush(5)
    wait_for(lambda: len(r.after) == 4)
    assert order == [0, 1, 2, 3]
    assert r.after == {0: [None], 1: [None], 2: [None], 3: [None]}
    bus.shutdown(5)


def test_shutdown_with_the_event_undelivered_tells_after_so() -> None:
    r, mw = recorder()
    em = nova.Emitter()
    em.use(mw)
    em.subscribe("x", failing(10), config=retry(5, delay=10))
    em.emit_async(nova.Event("x", "a"))
    time.sleep(0.05)  # the first attempt has failed; the retry waits 10 s
    report = em.shutdown(0.2)
    assert [e.data for e in report.undelivered] == ["a"]
    assert len(r.after["a"]) == 1 and isinstance(r.after["a"][0], nova.ClosedError)
    assert "shut down" in str(r.after["a"][0])


def test_tracing_and_logging_report_the_final_outcome(caplog: pytest.LogCaptureFixture) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    em = nova.Emitter()
    em.use(TracingMiddleware(provider.get_tracer("t")), LoggingMiddleware())
    em.subscribe("ok", failing(1), config=retry())
    em.subscribe("bad", failing(10), config=retry(2))
    with caplog.at_level(logging.INFO, logger="nova"):
        em.emit_async(nova.Event("ok", "a"))
        em.emit_async(nova.Event("bad", "b"))
        assert em.flush(5)
    spans = {s.attributes["nova.event.type"]: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"ok", "bad"}
    assert spans["ok"].status.status_code is not StatusCode.ERROR
    assert spans["bad"].status.status_code is StatusCode.ERROR
    handled = [r for r in caplog.records if "handled" in r.getMessage()]
    failed = [r for r in caplog.records if "failed in" in r.getMessage()]
    assert len(handled) == 1 and handled[0].event_type == "ok"  # type: ignore[attr-defined]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert failed[0].event_type == "bad"  # type: ignore[attr-defined]
    em.shutdown(5)
