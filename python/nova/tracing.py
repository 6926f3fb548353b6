"""OpenTelemetry tracing for Nova dispatch, on ``opentelemetry-api`` only (see docs/api.md,
Tracing).

``TracingMiddleware`` does two things for every event a component dispatches:

* **Producer side** — when the event is emitted inside a recording span and carries no
  ``traceparent`` yet, it stamps the W3C trace context (``traceparent`` and, when there is one,
  ``tracestate``) into the event's metadata, so the context travels with the event across
  threads, queues and processes (e.g. over a distributed backend).
* **Consumer side** — it runs the dispatch (every matching listener) inside a ``CONSUMER`` span
  that *links* to the producer span context read back from the metadata. The consumer span's
  parent is the ambient context: in process that is the context Nova captured at emit time,
  so the consumer span is also a child of the producer span; in another process it starts a
  new trace and only the link connects them. The span is current while listeners run, so spans
  they start are its children.

OpenTelemetry is imported when a ``TracingMiddleware`` is created, never by ``import nova``;
install it with the ``otel`` extra (``pip install "nova-events[otel]"``).
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from . import _core
from ._eventlike import MAX_NESTED_DISPATCHES, EventLike, ReplaceableEvent

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

__all__ = ["TracingMiddleware", "inject"]

#: Metadata keys of the W3C Trace Context carried by an event.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: Metadata key a bus sets to the topic an event was published to.
TOPIC_KEY = "nova.topic"

E = TypeVar("E", bound=ReplaceableEvent)


class _Active(NamedTuple):
    event_id: str
    span: Span
    token: Token[Context]


def _error_type(error: BaseException) -> str:
    """The ``error.type`` attribute: the listener's own exception class for a single failure."""
    from .errors import ListenerError

    exc: BaseException = error
    if isinstance(error, ListenerError) and error.__cause__ is not None:
        exc = error.__cause__
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def inject(event: E) -> E:
    """Stamp the current span's W3C trace context into ``event``'s metadata.

    Returns a copy with ``traceparent`` (and ``tracestate`` when there is one) when called
    inside a valid span and the event has no ``traceparent`` yet; else ``event`` itself.
    ``TracingMiddleware`` does this at dispatch; call it yourself to stamp an event before it
    leaves the process by another way (a queue of your own, a file, ...).
    """
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if TRACEPARENT in event.metadata or not trace.get_current_span().get_span_context().is_valid:
        return event
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return event.with_metadata(**carrier) if TRACEPARENT in carrier else event


class TracingMiddleware:
    """Middleware that propagates W3C trace context through event metadata and runs each
    dispatch in a ``CONSUMER`` span linked to the producer span.

    ``tracer`` defaults to ``opentelemetry.trace.get_tracer("nova")`` — the global tracer
    provider, also when it is configured after the middleware was created.

    Span attributes: ``messaging.system`` = ``"nova"``, ``messaging.destination.name`` (the
    topic on a bus — metadata key ``nova.topic`` — else the event type),
    ``messaging.message.id`` (the event id), ``messaging.operation.type`` and
    ``messaging.operation.name`` = ``"process"``, and ``nova.event.type``. The span is named
    ``"process <destination>"``. A failed dispatch records the exception, sets
    ``error.type`` and the status ``ERROR``.
    """

    def __init__(self, tracer: Tracer | None = None) -> None:
        try:
            from opentelemetry import context as otel_context
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "nova.tracing needs opentelemetry-api: pip install 'nova-events[otel]'"
            ) from exc
        from . import __version__

        self._trace = trace
        self._status = trace.Status
        self._error_code = trace.StatusCode.ERROR
        self._context = otel_context
        self._propagator = TraceContextTextMapPropagator()
        self._tracer: Tracer = tracer if tracer is not None else trace.get_tracer("nova", __version__)
        # One stack per contextvars context: Nova runs before/after of one event in the same
        # context, and nested dispatches in the same context nest properly.
        self._stack: contextvars.ContextVar[tuple[_Active, ...]] = contextvars.ContextVar(
            f"nova.tracing.{id(self):x}", default=()
        )
        # Spans whose after() may come from another context: an event that waits for a retry
        # (or behind one) gets its after() with the final outcome later, on another worker.
        self._open: dict[str, list[_Active]] = {}

    def __repr__(self) -> str:
        return f"TracingMiddleware(tracer={self._tracer!r})"

    # -- middleware protocol -------------------------------------------------------------------

    def before(self, event: E) -> E | None:
        trace = self._trace
        replacement: E | None = None
        if TRACEPARENT not in event.metadata:
            current = trace.get_current_span().get_span_context()
            if current.is_valid:
                carrier: dict[str, str] = {}
                self._propagator.inject(carrier)
                if TRACEPARENT in carrier:
                    replacement = event.with_metadata(**carrier)
        final = replacement if replacement is not None else event
        metadata = final.metadata

        links = []
        if TRACEPARENT in metadata:
            carrier = {TRACEPARENT: metadata[TRACEPARENT]}
            if TRACESTATE in metadata:
                carrier[TRACESTATE] = metadata[TRACESTATE]
            producer = trace.get_current_span(self._propagator.extract(carrier)).get_span_context()
            if producer.is_valid:
                links.append(trace.Link(producer))

        destination = metadata.get(TOPIC_KEY) or _core.current_topic() or final.type
        span = self._tracer.start_span(
            f"process {destination}",
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "nova",
                "messaging.destination.name": destination,
                "messaging.message.id": final.id,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "nova.event.type": final.type,
            },
        )
        stack = self._stack.get()
        if len(stack) >= MAX_NESTED_DISPATCHES:
            cut = len(stack) - MAX_NESTED_DISPATCHES + 1
            for stale in stack[:cut]:
                self._abandon(stale)
            stack = stack[cut:]
        token = self._context.attach(trace.set_span_in_context(span))
        active = _Active(final.id, span, token)
        self._stack.set((*stack, active))
        self._open.setdefault(final.id, []).append(active)
        return replacement

    def after(self, event: EventLike, error: BaseException | None) -> None:
        stack = self._stack.get()
        for index in range(len(stack) - 1, -1, -1):
            if stack[index].event_id == event.id:
                break
        else:
            # Not in this context: the final outcome of an event that waited for a retry,
            # reported from another worker. End its span; its context was left long ago.
            deferred = self._take_open(event.id, None)
            if deferred is not None:
                self._finish(deferred.span, error)
            return
        # Entries above ours belong to nested dispatches whose after() never ran.
        for stale in reversed(stack[index + 1 :]):
            self._abandon(stale)
        active = stack[index]
        self._stack.set(stack[:index])
        self._take_open(event.id, active)
        try:
            self._finish(active.span, error)
        finally:
            self._context.detach(active.token)

    def _take_open(self, event_id: str, active: _Active | None) -> _Active | None:
        """Forget `active` (or the oldest open span of `event_id`) among the open spans."""
        entries = self._open.get(event_id)
        if not entries:
            return None
        taken = entries.pop(entries.index(active) if active in entries else 0)
        if not entries:
            del self._open[event_id]
        return taken

    def _finish(self, span: Any, error: BaseException | None) -> None:
        try:
            if error is not None:
                span.record_exception(error)
                span.set_attribute("error.type", _error_type(error))
                span.set_status(self._status(self._error_code, str(error)))
        finally:
            span.end()

    # -- internals -----------------------------------------------------------------------------

    def _abandon(self, active: _Active) -> None:
        # Only end the span: the context is restored by the enclosing dispatch's detach.
        self._take_open(active.event_id, active)
        active.span.set_status(self._status(self._error_code, "dispatch abandoned: after() was never called"))
        active.span.end()
