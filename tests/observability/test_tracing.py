"""nova.tracing.TracingMiddleware: W3C context in metadata, CONSUMER spans linked to producers."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)

import nova
from nova.tracing import TracingMiddleware, inject

# -- fixtures and fakes ------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeEvent:
    """The slice of nova.Event the middleware uses."""

    type: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def with_metadata(self, **pairs: str) -> FakeEvent:
        return FakeEvent(self.type, self.id, MappingProxyType({**self.metadata, **pairs}))


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


@pytest.fixture
def mw(tracer: trace.Tracer) -> TracingMiddleware:
    return TracingMiddleware(tracer)


@pytest.fixture
def traced_emitter() -> Iterator[nova.Emitter]:
    em = nova.Emitter(name="traced")
    yield em
    em.shutdown(timeout=5)


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def only(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, spans
    return spans[0]


def current_span_id() -> int:
    return trace.get_current_span().get_span_context().span_id


def parse_traceparent(value: str) -> tuple[int, int]:
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00" and len(flags) == 2
    return int(trace_id, 16), int(span_id, 16)


# -- unit tests against fake events -----------------------------------------------------------


def test_outside_a_span_keeps_the_event_and_starts_a_root_consumer_span(
    mw: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    event = FakeEvent("order.created")
    assert mw.before(event) is None
    inside = trace.get_current_span()
    assert inside.get_span_context().is_valid
    mw.after(event, None)
    assert not trace.get_current_span().get_span_context().is_valid

    span = only(spans_named(exporter, "process order.created"))
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is None
    assert list(span.links) == []
    assert span.context.span_id == inside.get_span_context().span_id
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "messaging.system": "nova",
        "messaging.destination.name": "order.created",
        "messaging.message.id": event.id,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "nova.event.type": "order.created",
    }


def test_inside_a_span_stamps_traceparent_and_links_the_consumer_span(
    mw: TracingMiddleware, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    event = FakeEvent("order.created", metadata=MappingProxyType({"k": "v"}))
    with tracer.start_as_current_span("producer") as producer:
        stamped = mw.before(event)
        assert stamped is not None
        assert stamped.id == event.id
        assert stamped.metadata["k"] == "v"
        trace_id, span_id = parse_traceparent(stamped.metadata["traceparent"])
        assert (trace_id, span_id) == (
            producer.get_span_context().trace_id,
            producer.get_span_context().span_id,
        )
        assert "tracestate" not in stamped.metadata  # no trace state to carry
        mw.after(stamped, None)
        assert current_span_id() == producer.get_span_context().span_id

    consumer = only(spans_named(exporter, "process order.created"))
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.get_span_context().span_id
    (link,) = consumer.links
    assert link.context.trace_id == producer.get_span_context().trace_id
    assert link.context.span_id == producer.get_span_context().span_id


def test_tracestate_travels_with_the_event(
    mw: TracingMiddleware, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    remote = SpanContext(
        trace_id=0x1234,
        span_id=0x5678,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "abc")]),
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        with tracer.start_as_current_span("producer"):
            stamped = mw.before(FakeEvent("a.b"))
            assert stamped is not None
            assert stamped.metadata["tracestate"] == "vendor=abc"
            mw.after(stamped, None)
    finally:
        otel_context.detach(token)
    (link,) = only(spans_named(exporter, "process a.b")).links
    assert link.context.trace_state.get("vendor") == "abc"


def test_an_existing_traceparent_is_kept_and_linked(
    mw: TracingMiddleware, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    original = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = FakeEvent(
        "a.b",
        metadata=MappingProxyType({"traceparent": original, "tracestate": "congo=t61rcWkgMzE"}),
    )
    with tracer.start_as_current_span("elsewhere") as current:
        assert mw.before(event) is None
        mw.after(event, None)
    consumer = only(spans_named(exporter, "process a.b"))
    (link,) = consumer.links
    assert link.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert link.context.span_id == 0xB7AD6B7169203331
    assert link.context.trace_state.get("congo") == "t61rcWkgMzE"
    # The parent is the ambient context, never the extracted producer context.
    assert consumer.parent is not None
    assert consumer.parent.span_id == current.get_span_context().span_id


def test_a_malformed_traceparent_gives_no_link(mw: TracingMiddleware, exporter: InMemorySpanExporter) -> None:
    event = FakeEvent("a.b", metadata=MappingProxyType({"traceparent": "garbage"}))
    assert mw.before(event) is None
    mw.after(event, None)
    assert list(only(spans_named(exporter, "process a.b")).links) == []


def test_destination_is_the_bus_topic_when_there_is_one(
    mw: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    event = FakeEvent("order.created", metadata=MappingProxyType({"nova.topic": "orders"}))
    mw.before(event)
    mw.after(event, None)
    span = only(spans_named(exporter, "process orders"))
    attributes = span.attributes or {}
    assert attributes["messaging.destination.name"] == "orders"
    assert attributes["nova.event.type"] == "order.created"


def test_an_error_is_recorded_on_the_span(mw: TracingMiddleware, exporter: InMemorySpanExporter) -> None:
    event = FakeEvent("a.b")
    mw.before(event)
    try:
        raise nova.ListenerError("listener 'x' failed") from KeyError("missing")
    except nova.ListenerError as exc:
        error = exc
    mw.after(event, error)
    span = only(spans_named(exporter, "process a.b"))
    assert span.status.status_code is StatusCode.ERROR
    assert "listener 'x' failed" in (span.status.description or "")
    assert (span.attributes or {})["error.type"] == "KeyError"
    (exception_event,) = [e for e in span.events if e.name == "exception"]
    assert str((exception_event.attributes or {})["exception.type"]).endswith("ListenerError")


def test_error_type_of_an_exception_group_and_of_a_user_class(
    mw: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    class Boom(Exception):
        pass

    for error in (ExceptionGroup("two failed", [ValueError(1), ValueError(2)]), Boom("x")):
        event = FakeEvent("a.b")
        mw.before(event)
        mw.after(event, error)
    first, second = spans_named(exporter, "process a.b")
    assert (first.attributes or {})["error.type"] == "ExceptionGroup"
    assert str((second.attributes or {})["error.type"]).endswith(
        "test_error_type_of_an_exception_group_and_of_a_user_class.<locals>.Boom"
    )


def test_nested_dispatches_nest_spans(mw: TracingMiddleware, exporter: InMemorySpanExporter) -> None:
    outer, inner = FakeEvent("outer.e"), FakeEvent("inner.e")
    assert mw.before(outer) is None
    outer_span_id = current_span_id()
    inner = mw.before(inner) or inner  # emitted inside the outer consumer span: stamped
    assert parse_traceparent(inner.metadata["traceparent"])[1] == outer_span_id
    mw.after(inner, None)
    assert current_span_id() == outer_span_id
    mw.after(outer, None)
    assert not trace.get_current_span().get_span_context().is_valid
    outer_span = only(spans_named(exporter, "process outer.e"))
    inner_span = only(spans_named(exporter, "process inner.e"))
    assert inner_span.parent is not None and inner_span.parent.span_id == outer_span_id
    assert inner_span.links[0].context.span_id == outer_span_id
    assert outer_span.end_time is not None and inner_span.end_time is not None
    assert inner_span.end_time <= outer_span.end_time


def test_after_without_before_is_harmless(mw: TracingMiddleware) -> None:
    mw.after(FakeEvent("a.b"), None)
    mw.after(FakeEvent("a.b"), RuntimeError("x"))


def test_a_nested_dispatch_that_never_finished_is_ended_by_the_outer_one(
    mw: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    outer = FakeEvent("outer.e")
    mw.before(outer)
    mw.before(FakeEvent("lost.e"))  # its after() never comes (a later middleware rejected it)
    mw.after(outer, None)
    assert not trace.get_current_span().get_span_context().is_valid
    lost = only(spans_named(exporter, "process lost.e"))
    assert lost.status.status_code is StatusCode.ERROR
    assert only(spans_named(exporter, "process outer.e")).status.status_code is StatusCode.UNSET


def test_state_is_per_context_across_threads(mw: TracingMiddleware, exporter: InMemorySpanExporter) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def dispatch(n: int) -> None:
        try:
            event = FakeEvent(f"t.e{n}")
            mw.before(event)
            barrier.wait(timeout=5)  # all four spans open at once
            mw.after(event, None)
            assert not trace.get_current_span().get_span_context().is_valid
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=dispatch, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(s.name for s in exporter.get_finished_spans()) == [f"process t.e{n}" for n in range(4)]
    assert all(s.parent is None for s in exporter.get_finished_spans())


def test_inject_helper(tracer: trace.Tracer) -> None:
    event = FakeEvent("a.b")
    assert inject(event) is event
    with tracer.start_as_current_span("p") as p:
        stamped = inject(event)
        assert parse_traceparent(stamped.metadata["traceparent"])[1] == p.get_span_context().span_id
        assert inject(stamped) is stamped


def test_the_default_tracer_follows_the_global_provider() -> None:
    # The global provider can be set once per process: check it in a fresh interpreter.
    code = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import nova
from nova.tracing import TracingMiddleware
mw = TracingMiddleware()          # created before the provider is configured
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
em = nova.Emitter(name="g")
em.use(mw)
em.subscribe("a.b", lambda e: None)
em.emit(nova.Event("a.b"))
(span,) = exporter.get_finished_spans()
assert span.name == "process a.b", span.name
assert span.instrumentation_scope.name == "nova", span.instrumentation_scope
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_nova_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, nova; "
        "bad = [m for m in sys.modules if m.startswith(('opentelemetry', 'prometheus_client'))]; "
        "assert not bad, bad; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- integration with the real Emitter --------------------------------------------------------


def test_sync_emit_runs_listeners_in_a_consumer_span(
    traced_emitter: nova.Emitter,
    mw: TracingMiddleware,
    tracer: trace.Tracer,
    exporter: InMemorySpanExporter,
) -> None:
    traced_emitter.use(mw)
    seen: list[tuple[dict[str, str], int]] = []
    event = nova.Event("order.created", {"n": 1})

    def listener(event: nova.Event) -> None:
        seen.append((dict(event.metadata), current_span_id()))
        with tracer.start_as_current_span("work"):
            pass

    traced_emitter.subscribe("order.created", listener)
    with tracer.start_as_current_span("producer") as producer:
        traced_emitter.emit(event)
        assert current_span_id() == producer.get_span_context().span_id

    consumer = only(spans_named(exporter, "process order.created"))
    work = only(spans_named(exporter, "work"))
    pid = producer.get_span_context().span_id
    ((metadata, listener_span_id),) = seen
    assert parse_traceparent(metadata["traceparent"]) == (
        producer.get_span_context().trace_id,
        pid,
    )
    assert listener_span_id == consumer.context.span_id
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.parent is not None and consumer.parent.span_id == pid
    assert [link.context.span_id for link in consumer.links] == [pid]
    assert work.parent is not None and work.parent.span_id == consumer.context.span_id
    attributes = consumer.attributes or {}
    assert attributes["messaging.system"] == "nova"
    assert attributes["messaging.destination.name"] == "order.created"
    assert attributes["messaging.message.id"] == event.id


def test_emit_async_links_the_consumer_span_on_the_worker_thread(
    traced_emitter: nova.Emitter,
    mw: TracingMiddleware,
    tracer: trace.Tracer,
    exporter: InMemorySpanExporter,
) -> None:
    traced_emitter.use(mw)
    threads: list[int] = []
    ids: list[str] = []

    def listener(event: nova.Event) -> None:
        threads.append(threading.get_ident())
        ids.append(event.id)

    traced_emitter.subscribe("order.created", listener)
    producers = []
    for n in range(5):
        with tracer.start_as_current_span(f"producer-{n}") as producer:
            event = nova.Event("order.created", n)
            traced_emitter.emit_async(event)
            producers.append((event.id, producer.get_span_context()))
    assert not trace.get_current_span().get_span_context().is_valid
    assert traced_emitter.flush(timeout=10)

    assert threading.get_ident() not in threads  # really ran on a worker thread
    consumers = {
        (s.attributes or {})["messaging.message.id"]: s
        for s in spans_named(exporter, "process order.created")
    }
    assert set(consumers) == {event_id for event_id, _ in producers} == set(ids)
    for event_id, producer_context in producers:
        consumer = consumers[event_id]
        assert consumer.kind is SpanKind.CONSUMER
        assert consumer.context.trace_id == producer_context.trace_id
        assert consumer.parent is not None
        assert consumer.parent.span_id == producer_context.span_id
        assert [link.context.span_id for link in consumer.links] == [producer_context.span_id]


def test_a_failing_listener_marks_the_span_and_restores_the_callers_context(
    traced_emitter: nova.Emitter,
    mw: TracingMiddleware,
    tracer: trace.Tracer,
    exporter: InMemorySpanExporter,
) -> None:
    traced_emitter.use(mw)

    def broken(event: nova.Event) -> None:
        raise ValueError("bad data")

    traced_emitter.subscribe("a.b", broken)
    with tracer.start_as_current_span("producer") as producer:
        with pytest.raises(nova.ListenerError):
            traced_emitter.emit(nova.Event("a.b"))
        assert current_span_id() == producer.get_span_context().span_id
    traced_emitter.emit_async(nova.Event("a.b"))
    assert traced_emitter.flush(timeout=10)
    spans = spans_named(exporter, "process a.b")
    assert len(spans) == 2
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "ValueError"
        assert any(e.name == "exception" for e in span.events)


def test_context_crossing_a_process_boundary_starts_a_linked_trace(
    traced_emitter: nova.Emitter,
    mw: TracingMiddleware,
    tracer: trace.Tracer,
    exporter: InMemorySpanExporter,
) -> None:
    # The producer stamps the event; it travels as JSON; the consumer has no ambient context.
    with tracer.start_as_current_span("producer") as producer:
        wire = inject(nova.Event("a.b", {"x": 1})).to_json()
    traced_emitter.use(mw)
    traced_emitter.subscribe("a.b", lambda e: None)
    contextvars.Context().run(traced_emitter.emit, nova.Event.from_json(wire))

    consumer = only(spans_named(exporter, "process a.b"))
    assert consumer.parent is None
    assert consumer.context.trace_id != producer.get_span_context().trace_id
    (link,) = consumer.links
    assert link.context.trace_id == producer.get_span_context().trace_id
    assert link.context.span_id == producer.get_span_context().span_id
    assert link.context.is_remote


def test_emit_without_a_span_adds_no_metadata(
    traced_emitter: nova.Emitter, mw: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    traced_emitter.use(mw)
    seen: list[Mapping[str, Any]] = []
    traced_emitter.subscribe("a.b", lambda e: seen.append(dict(e.metadata)))
    traced_emitter.emit(nova.Event("a.b", metadata={"k": "v"}))
    assert seen == [{"k": "v"}]
    consumer = only(spans_named(exporter, "process a.b"))
    assert consumer.parent is None and list(consumer.links) == []


def test_a_listener_emitting_inside_its_span_chains_the_trace(
    mw: TracingMiddleware, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with nova.Emitter(name="chain") as em:
        em.use(mw)
        em.subscribe("order.created", lambda e: em.emit_async(nova.Event("order.billed")))
        em.subscribe("order.billed", lambda e: None)
        with tracer.start_as_current_span("producer") as producer:
            em.emit(nova.Event("order.created"))
        assert em.flush(timeout=10)
    created = only(spans_named(exporter, "process order.created"))
    billed = only(spans_named(exporter, "process order.billed"))
    trace_id = producer.get_span_context().trace_id
    assert created.context.trace_id == billed.context.trace_id == trace_id
    assert billed.parent is not None and billed.parent.span_id == created.context.span_id
    assert [link.context.span_id for link in billed.links] == [created.context.span_id]


def test_an_async_listener_runs_inside_the_consumer_span(
    traced_emitter: nova.Emitter,
    mw: TracingMiddleware,
    tracer: trace.Tracer,
    exporter: InMemorySpanExporter,
) -> None:
    import asyncio

    traced_emitter.use(mw)

    async def handler(event: nova.Event) -> None:
        await asyncio.sleep(0.02)
        with tracer.start_as_current_span("after-await"):
            pass

    traced_emitter.subscribe("a.b", handler)
    with tracer.start_as_current_span("producer"):
        traced_emitter.emit(nova.Event("a.b"))
        traced_emitter.emit_async(nova.Event("a.b"))
    assert traced_emitter.flush(timeout=10)
    consumers = spans_named(exporter, "process a.b")
    inner = spans_named(exporter, "after-await")
    assert len(consumers) == len(inner) == 2
    by_id = {s.context.span_id: s for s in consumers}
    for span in inner:
        assert span.parent is not None and span.parent.span_id in by_id
        consumer = by_id[span.parent.span_id]
        assert consumer.end_time is not None and span.end_time is not None
        assert span.end_time <= consumer.end_time  # the span covers the awaited handler


def test_a_rejecting_middleware_placed_first_leaves_no_span_open(
    traced_emitter: nova.Emitter,
    mw: TracingMiddleware,
    tracer: trace.Tracer,
    exporter: InMemorySpanExporter,
) -> None:
    def reject(event: nova.Event) -> None:
        if event.type == "bad.e":
            raise ValueError("rejected")

    traced_emitter.use(nova.middleware(before=reject), mw)
    traced_emitter.subscribe("#", lambda e: None)
    with tracer.start_as_current_span("producer") as producer:
        with pytest.raises(nova.MiddlewareError):
            traced_emitter.emit(nova.Event("bad.e"))
        assert current_span_id() == producer.get_span_context().span_id
        traced_emitter.emit(nova.Event("good.e"))
        assert current_span_id() == producer.get_span_context().span_id
    assert [s.name for s in exporter.get_finished_spans()] == ["process good.e", "producer"]


def test_bus_publish_is_traced_across_partition_workers(
    mw: TracingMiddleware, tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    bus = nova.Bus(name="traced-bus", default_partitions=4)
    try:
        bus.create_topic("orders", delivery_mode=nova.DeliveryMode.AT_MOST_ONCE, partitions=4)
        bus.use(mw)
        seen: list[tuple[str, int]] = []
        bus.subscribe("orders", lambda e: seen.append((e.id, threading.get_ident())))
        producers: dict[str, trace.SpanContext] = {}
        for n in range(8):
            with tracer.start_as_current_span(f"publish-{n}") as producer:
                event = nova.Event("order.created", n)
                bus.publish("orders", event)
                producers[event.id] = producer.get_span_context()
        assert bus.flush(timeout=10)
    finally:
        bus.shutdown(timeout=5)
    assert {event_id for event_id, _ in seen} == set(producers)
    assert threading.get_ident() not in {thread for _, thread in seen}
    consumers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert len(consumers) == 8
    for consumer in consumers:
        attributes = consumer.attributes or {}
        # On a bus the destination is the topic (nova._core.current_topic()).
        assert attributes["messaging.destination.name"] == "orders"
        assert attributes["nova.event.type"] == "order.created"
        producer_context = producers[str(attributes["messaging.message.id"])]
        assert consumer.parent is not None
        assert consumer.parent.span_id == producer_context.span_id
        assert [link.context.span_id for link in consumer.links] == [producer_context.span_id]
