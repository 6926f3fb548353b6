"""nova.logging.LoggingMiddleware: one structured record before and one after each event."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest

import nova
from nova.logging import LoggingMiddleware


@dataclass(frozen=True)
class FakeEvent:
    type: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def records(caplog: pytest.LogCaptureFixture, name: str = "nova") -> list[Any]:
    """The records of `name` that carry the middleware's fields (typed Any: extra attributes)."""
    return [r for r in caplog.records if r.name == name and hasattr(r, "event_id")]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    keys = ("event_id", "event_type", "metadata", "error", "duration_ms")
    return {k: getattr(record, k) for k in keys if hasattr(record, k)}


@pytest.fixture
def logged_emitter() -> Iterator[nova.Emitter]:
    em = nova.Emitter(name="logged")
    yield em
    em.shutdown(timeout=5)


# -- unit tests against fake events -----------------------------------------------------------


def test_two_records_with_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nova")
    mw = LoggingMiddleware()
    event = FakeEvent("order.created", metadata=MappingProxyType({"tenant": "acme"}))
    mw.before(event)  # returns None: the event is kept
    time.sleep(0.01)
    mw.after(event, None)

    first, second = records(caplog)
    assert first.levelno == second.levelno == logging.INFO
    assert fields(first) == {
        "event_id": event.id,
        "event_type": "order.created",
        "metadata": {"tenant": "acme"},
    }
    assert type(first.metadata) is dict  # a plain dict, not a read-only mapping
    assert not hasattr(first, "duration_ms") and not hasattr(first, "error")
    assert second.event_id == event.id
    assert second.event_type == "order.created"
    assert second.metadata == {"tenant": "acme"} and type(second.metadata) is dict
    assert second.error is None
    assert isinstance(second.duration_ms, float)
    assert 10.0 <= second.duration_ms < 5000.0
    assert event.id in first.getMessage() and "order.created" in first.getMessage()
    assert "handled" in second.getMessage()


def test_a_failure_is_logged_at_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nova")
    mw = LoggingMiddleware()
    event = FakeEvent("a.b")
    mw.before(event)
    mw.after(event, nova.ListenerError("listener 'x' failed on event 1 (a.b): ValueError: v"))
    first, second = records(caplog)
    assert first.levelno == logging.INFO
    assert second.levelno == logging.ERROR
    assert second.error == "ListenerError: listener 'x' failed on event 1 (a.b): ValueError: v"
    assert isinstance(second.duration_ms, float) and second.duration_ms >= 0.0
    assert "failed" in second.getMessage() and second.error in second.getMessage()


def test_custom_logger_level_and_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    by_object = LoggingMiddleware(logging.getLogger("app.events"), level=logging.DEBUG)
    by_name = LoggingMiddleware("app.other", level=logging.WARNING)
    event = FakeEvent("a.b")
    for mw in (by_object, by_name):
        mw.before(event)
        mw.after(event, None)
    assert [r.levelno for r in records(caplog, "app.events")] == [logging.DEBUG] * 2
    assert [r.levelno for r in records(caplog, "app.other")] == [logging.WARNING] * 2
    assert records(caplog, "nova") == []


def test_logger_adapter(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nova")
    adapter = logging.LoggerAdapter(logging.getLogger("nova"), {"service": "billing"})
    mw = LoggingMiddleware(adapter)
    event = FakeEvent("a.b")
    mw.before(event)
    mw.after(event, None)
    # A plain LoggerAdapter replaces extra= with its own dict (stdlib behaviour); one that
    # merges (merge_extra=True on 3.13+) keeps both. Either way the records go through it.
    assert len([r for r in caplog.records if r.name == "nova"]) == 2


def test_below_the_logger_level_failures_still_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="nova")
    mw = LoggingMiddleware()
    ok, bad = FakeEvent("ok.e"), FakeEvent("bad.e")
    mw.before(ok)
    mw.after(ok, None)
    mw.before(bad)
    mw.after(bad, RuntimeError("boom"))
    (record,) = records(caplog)
    assert record.levelno == logging.ERROR
    assert record.event_id == bad.id and record.error == "RuntimeError: boom"
    assert record.duration_ms >= 0.0 and not math.isnan(record.duration_ms)


def test_nested_events_time_separately(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nova")
    mw = LoggingMiddleware()
    outer, inner = FakeEvent("outer.e"), FakeEvent("inner.e")
    mw.before(outer)
    time.sleep(0.02)
    mw.before(inner)
    mw.after(inner, None)
    mw.after(outer, None)
    after = {r.event_type: r.duration_ms for r in records(caplog) if hasattr(r, "duration_ms")}
    assert after["outer.e"] >= 20.0 > after["inner.e"]


def test_after_without_before_reports_nan_duration(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nova")
    LoggingMiddleware().after(FakeEvent("a.b"), None)
    (record,) = records(caplog)
    assert math.isnan(record.duration_ms)


def test_timing_is_per_thread(caplog: pytest.LogCaptureFixture) -> None:
    # Dispatches start 50 ms apart on three threads and all finish together: each duration
    # must lie between the times measured around that thread's own before() and after().
    caplog.set_level(logging.INFO, logger="nova")
    mw = LoggingMiddleware()
    barrier = threading.Barrier(3)
    bounds: dict[str, tuple[float, float]] = {}

    def run(n: int) -> None:
        time.sleep(n * 0.05)
        event = FakeEvent(f"t.e{n}")
        t0 = time.perf_counter()
        mw.before(event)
        t1 = time.perf_counter()
        barrier.wait(timeout=10)
        t2 = time.perf_counter()
        mw.after(event, None)
        t3 = time.perf_counter()
        bounds[event.type] = ((t2 - t1) * 1000.0, (t3 - t0) * 1000.0)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    durations = {r.event_type: r.duration_ms for r in records(caplog) if hasattr(r, "duration_ms")}
    assert set(durations) == set(bounds) == {"t.e0", "t.e1", "t.e2"}
    for name, (low, high) in bounds.items():
        assert low <= durations[name] <= high, (name, low, durations[name], high)


def test_bad_level_is_rejected() -> None:
    with pytest.raises(TypeError):
        LoggingMiddleware(level="INFO")  # type: ignore[arg-type]


def test_extra_fields_work_with_a_formatter() -> None:
    # What a JSON/structlog setup does: read the attributes off the record.
    formatter = logging.Formatter("%(event_type)s %(event_id)s %(error)s %(duration_ms).1f")
    captured: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if hasattr(record, "duration_ms"):
                captured.append(formatter.format(record))

    logger = logging.getLogger("nova.test.formatter")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Capture()
    logger.addHandler(handler)
    try:
        mw = LoggingMiddleware(logger)
        event = FakeEvent("a.b", id="e-1")
        mw.before(event)
        mw.after(event, ValueError("v"))
    finally:
        logger.removeHandler(handler)
    (line,) = captured
    assert line.startswith("a.b e-1 ValueError: v ")


# -- integration with the real Emitter --------------------------------------------------------


def test_sync_emit_through_a_real_emitter(
    logged_emitter: nova.Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nova")
    logged_emitter.use(LoggingMiddleware())
    logged_emitter.subscribe("order.created", lambda e: time.sleep(0.005))
    event = nova.Event("order.created", {"n": 1}, metadata={"tenant": "acme"})
    logged_emitter.emit(event)
    first, second = records(caplog)
    assert fields(first) == {
        "event_id": event.id,
        "event_type": "order.created",
        "metadata": {"tenant": "acme"},
    }
    assert second.levelno == logging.INFO and second.error is None
    assert second.duration_ms >= 5.0


def test_a_failing_listener_through_a_real_emitter(
    logged_emitter: nova.Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nova")
    logged_emitter.use(LoggingMiddleware())

    def broken(event: nova.Event) -> None:
        raise ValueError("bad data")

    logged_emitter.subscribe("a.b", broken)
    event = nova.Event("a.b")
    with pytest.raises(nova.ListenerError):
        logged_emitter.emit(event)
    second = records(caplog)[-1]
    assert second.levelno == logging.ERROR
    assert second.event_id == event.id
    assert second.error is not None
    assert second.error.startswith("ListenerError: ") and "bad data" in second.error


def test_emit_async_logs_from_the_worker_with_metadata_set_by_earlier_middleware(
    logged_emitter: nova.Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nova")
    stamp = nova.middleware(before=lambda e: e.with_metadata(stamped="yes"))
    logged_emitter.use(stamp, LoggingMiddleware())
    logged_emitter.subscribe("a.#", lambda e: None)
    events = [nova.Event(f"a.e{n}") for n in range(20)]
    for event in events:
        logged_emitter.emit_async(event)
    assert logged_emitter.flush(timeout=10)
    logged = records(caplog)
    assert len(logged) == 40
    assert {r.event_id for r in logged} == {e.id for e in events}
    assert all(r.metadata == {"stamped": "yes"} for r in logged)
    assert {r.thread for r in logged} != {threading.get_ident()}
    done = [r for r in logged if hasattr(r, "duration_ms")]
    assert len(done) == 20 and all(r.error is None and r.duration_ms >= 0.0 for r in done)
