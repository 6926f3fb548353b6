"""Prometheus metrics and a health endpoint for Nova components (see docs/api.md, Metrics).

The counters and histograms live in the Rust core as atomics; nothing runs in Python per
event. :class:`PrometheusCollector` reads a snapshot of them from each component (its
``_metrics()`` method) only when Prometheus scrapes, and :func:`serve` exposes ``/metrics`` and
``/healthz`` over HTTP from a background thread.

Needs ``prometheus_client`` (``pip install "nova-events[prometheus]"``); ``import nova`` never
imports this module.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

try:
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("nova.metrics needs prometheus_client: pip install 'nova-events[prometheus]'") from exc

from ._closing import ClosesOnExit
from ._types import Health
from .errors import ValidationError

__all__ = ["PrometheusCollector", "serve", "MetricsServer", "CONNECTION_TIMEOUT"]

#: Seconds each read or write on a metrics connection may wait (``serve(timeout=...)``): a
#: client that stalls mid-request, or stops reading the answer, is disconnected after that.
CONNECTION_TIMEOUT = 5.0

# A client going away (hanging up mid-request or before reading the answer, or stalling past
# the timeout) is normal on an HTTP endpoint: closed quietly, logged at DEBUG.
_HANG_UPS = (ConnectionError, TimeoutError)

_log = logging.getLogger("nova.metrics")


@runtime_checkable
class _Observable(Protocol):
    """A component whose counters can be read: Emitter, Bus, ListenerManager, stores."""

    def _metrics(self) -> Mapping[str, Any]: ...


# name (without _total for counters), help text, labels -- exactly the names of the table in
# docs/observability.md (Prometheus metrics: Metrics).
_EMITTED = (
    "nova_events_emitted",
    "Events offered to a component, by outcome.",
    ("component", "type", "result"),
)
_PROCESSED = (
    "nova_events_processed",
    "Deliveries (event x listener) finished, by outcome.",
    ("component", "listener", "result"),
)
_DURATION = (
    "nova_listener_duration_seconds",
    "Time spent in a listener per delivery.",
    ("component", "listener"),
)
_QUEUE = ("nova_queue_size", "Events waiting in the component's buffers.", ("component",))
_ACTIVE = ("nova_active_listeners", "Current subscriptions of the component.", ("component",))
_RETRIES = ("nova_retries", "Retry attempts of a listener.", ("listener",))
_DEAD = ("nova_dead_letters", "Events a listener sent to its dead letters.", ("listener",))
_CIRCUIT = ("nova_circuit_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", ("listener",))
_DROPPED = ("nova_events_dropped", "Events dropped by a component, by reason.", ("component", "reason"))


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list[float], counts: list[int], total: float) -> None:
        self.bounds = bounds
        self.counts = counts
        self.sum = total


class PrometheusCollector(Collector):
    """A ``prometheus_client`` collector over Nova components.

    Register it on a registry (``prometheus_client.REGISTRY.register(PrometheusCollector(em))``)
    or let :func:`serve` do it. Each scrape reads every component's counters once; nothing is
    computed between scrapes. A component whose snapshot cannot be read (for instance one
    that has gone away) is skipped and logged on the ``nova.metrics`` logger, so one bad component
    never hides the others' metrics.

    Counters with the same labels from several components are added up (for instance
    ``nova_retries_total{listener}``, which has no ``component`` label); for
    ``nova_circuit_state`` the worst state wins.
    """

    def __init__(self, *components: object) -> None:
        for component in components:
            if not isinstance(component, _Observable):
                raise TypeError(
                    f"PrometheusCollector: {type(component).__name__} has no metrics to collect; "
                    "pass Nova components such as Emitter, Bus or ListenerManager"
                )
        self._components: tuple[_Observable, ...] = tuple(c for c in components if isinstance(c, _Observable))

    @property
    def components(self) -> tuple[object, ...]:
        return self._components

    def __repr__(self) -> str:
        return f"PrometheusCollector({', '.join(map(_component_name, self._components))})"

    def describe(self) -> Iterable[Metric]:
        # Lets a registry check for name clashes without reading the components.
        return list(_families({}, {}, {}, {}, {}, {}, {}, {}, {}))

    def collect(self) -> Iterable[Metric]:
        emitted: dict[tuple[str, ...], float] = {}
        processed: dict[tuple[str, ...], float] = {}
        durations: dict[tuple[str, ...], _Histogram] = {}
        queue: dict[tuple[str, ...], float] = {}
        active: dict[tuple[str, ...], float] = {}
        retries: dict[tuple[str, ...], float] = {}
        dead: dict[tuple[str, ...], float] = {}
        circuit: dict[tuple[str, ...], float] = {}
        dropped: dict[tuple[str, ...], float] = {}
        for component in self._components:
            try:
                snapshot = component._metrics()
            except Exception as exc:  # noqa: BLE001 - one component must not break a scrape
                _log.warning(
                    "nova.metrics: could not read the metrics of %s: %s",
                    _component_name(component),
                    exc,
                )
                continue
            name = str(snapshot.get("component") or _component_name(component))
            for event_type, result, count in snapshot.get("emitted", ()):
                _add(emitted, (name, str(event_type), str(result)), count)
            for listener, result, count in snapshot.get("processed", ()):
                _add(processed, (name, str(listener), str(result)), count)
            for listener, bounds, counts, total, _count in snapshot.get("durations", ()):
                _merge_histogram(durations, (name, str(listener)), bounds, counts, total)
            if "queue_size" in snapshot:
                _add(queue, (name,), snapshot["queue_size"])
            if "active_listeners" in snapshot:
                _add(active, (name,), snapshot["active_listeners"])
            for reason, count in snapshot.get("dropped", ()):
                _add(dropped, (name, str(reason)), count)
            for listener, count in snapshot.get("retries", ()):
                _add(retries, (str(listener),), count)
            for listener, count in snapshot.get("dead_letters", ()):
                _add(dead, (str(listener),), count)
            for listener, state in snapshot.get("circuit_state", ()):
                key = (str(listener),)
                circuit[key] = max(circuit.get(key, 0.0), float(state))
        return list(_families(emitted, processed, durations, queue, active, retries, dead, circuit, dropped))


def _component_name(component: object) -> str:
    name = getattr(component, "name", None)
    return name if isinstance(name, str) else type(component).__name__


def _le(bound: float) -> str:
    if bound == float("inf"):
        return "+Inf"
    return repr(bound)


def _add(into: dict[tuple[str, ...], float], key: tuple[str, ...], value: float) -> None:
    into[key] = into.get(key, 0.0) + float(value)


def _merge_histogram(
    into: dict[tuple[str, ...], _Histogram],
    key: tuple[str, ...],
    bounds: Sequence[float],
    counts: Sequence[int],
    total: float,
) -> None:
    bounds = [float(b) for b in bounds]
    counts = [int(c) for c in counts]
    if len(counts) != len(bounds) + 1:
        _log.warning(
            "nova.metrics: histogram of %s has %d buckets for %d bounds; skipped",
            "/".join(key),
            len(counts),
            len(bounds),
        )
        return
    known = into.get(key)
    if known is None:
        into[key] = _Histogram(bounds, counts, float(total))
    elif known.bounds == bounds:
        known.counts = [a + b for a, b in zip(known.counts, counts)]
        known.sum += float(total)
    else:
        _log.warning(
            "nova.metrics: histograms of %s with different buckets; kept the first",
            "/".join(key),
        )


def _families(
    emitted: Mapping[tuple[str, ...], float],
    processed: Mapping[tuple[str, ...], float],
    durations: Mapping[tuple[str, ...], _Histogram],
    queue: Mapping[tuple[str, ...], float],
    active: Mapping[tuple[str, ...], float],
    retries: Mapping[tuple[str, ...], float],
    dead: Mapping[tuple[str, ...], float],
    circuit: Mapping[tuple[str, ...], float],
    dropped: Mapping[tuple[str, ...], float],
) -> Iterator[Metric]:
    def family(
        kind: Callable[..., CounterMetricFamily | GaugeMetricFamily],
        spec: tuple[str, str, tuple[str, ...]],
        values: Mapping[tuple[str, ...], float],
    ) -> Metric:
        name, doc, labels = spec
        metric = kind(name, doc, labels=labels)
        for key in sorted(values):
            metric.add_metric(key, values[key])
        return metric

    yield family(CounterMetricFamily, _EMITTED, emitted)
    yield family(CounterMetricFamily, _PROCESSED, processed)
    name, doc, labels = _DURATION
    histogram = HistogramMetricFamily(name, doc, labels=labels)
    for key in sorted(durations):
        h = durations[key]
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(h.bounds, h.counts):
            cumulative += count
            buckets.append((_le(bound), float(cumulative)))
        # +Inf is the total, so the exposed _count always agrees with the buckets.
        buckets.append(("+Inf", float(cumulative + h.counts[-1])))
        histogram.add_metric(key, buckets, h.sum)
    yield histogram
    yield family(GaugeMetricFamily, _QUEUE, queue)
    yield family(GaugeMetricFamily, _ACTIVE, active)
    yield family(CounterMetricFamily, _RETRIES, retries)
    yield family(CounterMetricFamily, _DEAD, dead)
    yield family(GaugeMetricFamily, _CIRCUIT, circuit)
    yield family(CounterMetricFamily, _DROPPED, dropped)


# -- health ----------------------------------------------------------------------------------


def health_report(components: Iterable[object]) -> tuple[Health, dict[str, str]]:
    """The worst health of the components that have a ``health()`` method (listener
    managers) and each of their listeners' health; ``HEALTHY`` when there are none."""
    worst = Health.HEALTHY
    listeners: dict[str, Health] = {}
    for component in components:
        health = getattr(component, "health", None)
        if not callable(health):
            continue
        status = health()
        if status.value > worst.value:
            worst = status
        per_listener = getattr(component, "_listener_healths", None)
        if callable(per_listener):
            for name, value in per_listener().items():
                known = listeners.get(name)
                if known is None or value.value > known.value:
                    listeners[name] = value
    for value in listeners.values():
        if value.value > worst.value:
            worst = value
    return worst, {name: str(value) for name, value in sorted(listeners.items())}


# -- HTTP server -----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "nova-metrics"

    def setup(self) -> None:
        super().setup()
        # Every read and write on the connection waits at most this long: a stalled request
        # raises TimeoutError, which handle_one_request answers by closing the connection.
        self.connection.settimeout(self.server.connection_timeout)

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, *, head: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(self.server.registry)
            except Exception as exc:  # noqa: BLE001
                _log.exception("nova.metrics: scrape failed")
                message = f"scrape failed: {exc}\n".encode()
                self._send(500, "text/plain; charset=utf-8", message, head)
                return
            self._send(200, content_type, body, head)
        elif path == "/healthz":
            try:
                status, listeners = health_report(self.server.components)
            except Exception as exc:  # noqa: BLE001
                _log.exception("nova.metrics: health check failed")
                payload = {"status": "unhealthy", "listeners": {}, "error": str(exc)}
                self._send(500, "application/json", json.dumps(payload).encode(), head)
                return
            code = 503 if status is Health.UNHEALTHY else 200
            payload = {"status": str(status), "listeners": listeners}
            self._send(code, "application/json", json.dumps(payload).encode(), head)
        else:
            message = b"not found: try /metrics or /healthz\n"
            self._send(404, "text/plain; charset=utf-8", message, head)

    def _send(self, code: int, content_type: str, body: bytes, head: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        _log.debug("nova.metrics: %s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    components: tuple[object, ...]
    connection_timeout: float = CONNECTION_TIMEOUT

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Instead of socketserver's traceback on stderr: a client that hung up or stalled
        is logged at DEBUG; anything else at ERROR on the ``nova.metrics`` logger."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, _HANG_UPS):
            _log.debug(
                "nova.metrics: connection from %s closed: %s: %s", client_address, type(exc).__name__, exc
            )
            return
        _log.error("nova.metrics: request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer(ClosesOnExit):
    """A running metrics endpoint, as returned by :func:`serve`: ``port`` (the one bound, also
    when 0 was asked for), ``addr``, ``url``, ``timeout`` (per connection), ``registry`` and
    ``collector``; :meth:`close` stops it (idempotent). Usable as a context manager."""

    def __init__(self, server: _Server, collector: PrometheusCollector) -> None:
        self._server = server
        self.collector = collector
        self.registry = server.registry
        self.addr: str = str(server.server_address[0])
        self.port: int = int(server.server_address[1])
        self.timeout: float = server.connection_timeout
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"nova-metrics-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}"

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return f"<MetricsServer {self.url} {state}>"


def serve(
    port: int, *components: object, addr: str = "127.0.0.1", timeout: float = CONNECTION_TIMEOUT
) -> MetricsServer:
    """Serve ``/metrics`` (Prometheus text format, or OpenMetrics when the scraper asks for
    it) and ``/healthz`` for ``components`` from a daemon thread; returns at once.

    ``port=0`` picks a free port (read it from ``.port``). ``/healthz`` answers
    ``{"status": ..., "listeners": {name: health}}`` from the components that have a
    ``health()`` method (listener managers): HTTP 200, or 503 when the status is
    ``unhealthy``. Binding errors (port in use, bad address) raise ``OSError`` here.

    Each connection is served by its own thread. ``timeout`` (seconds, default
    :data:`CONNECTION_TIMEOUT` = 5) bounds every read and write on it: a client that sends
    half a request, or none, or stops reading the answer, is disconnected after that and
    its thread ends. A client that hangs up early is closed quietly (logged at DEBUG on the
    ``nova.metrics`` logger, never a traceback on stderr); other errors in a request are
    logged at ERROR there.
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValidationError(
            f"serve: timeout must be finite seconds > 0 (each read or write on a connection waits "
            f"at most that long), got {timeout!r}"
        )
    for component in components:
        has_health = callable(getattr(component, "health", None))
        if not isinstance(component, _Observable) and not has_health:
            raise TypeError(
                f"serve: {type(component).__name__} has neither metrics nor health to serve; "
                "pass Nova components such as Emitter, Bus or ListenerManager"
            )
    collector = PrometheusCollector(*(c for c in components if isinstance(c, _Observable)))
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    cls = _Server6 if ":" in addr else _Server
    server = cls((addr, port), _Handler)
    server.connection_timeout = float(timeout)
    server.registry = registry
    server.components = tuple(components)
    return MetricsServer(server, collector)
