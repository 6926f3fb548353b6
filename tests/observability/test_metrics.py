"""nova.metrics: the Prometheus collector over component snapshots, and the HTTP endpoint."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import nova
from nova import Health
from nova.metrics import MetricsServer, PrometheusCollector, serve

BOUNDS = [0.001, 0.01, 0.1, 1.0]


class FakeComponent:
    def __init__(self, name: str, snapshot: Mapping[str, Any]) -> None:
        self.name = name
        self.snapshot = dict(snapshot)
        self.reads = 0

    def _metrics(self) -> Mapping[str, Any]:
        self.reads += 1
        return self.snapshot


class FakeManager(FakeComponent):
    def __init__(self, name: str, healths: Mapping[str, Health]) -> None:
        super().__init__(name, {"component": name})
        self.healths = dict(healths)

    def health(self) -> Health:
        return max(self.healths.values(), default=Health.HEALTHY, key=lambda h: h.value)

    def _listener_healths(self) -> dict[str, Health]:
        return dict(self.healths)


FULL = {
    "component": "orders",
    "emitted": [
        ("order.created", "accepted", 7),
        ("order.created", "rejected", 1),
        ("order.created", "dropped", 2),
    ],
    "processed": [("bill", "success", 5), ("bill", "failure", 2)],
    "durations": [("bill", BOUNDS, [1, 2, 3, 0, 1], 2.5, 7)],
    "queue_size": 3,
    "active_listeners": 4,
    "dropped": [("buffer_full", 2), ("at_most_once", 1), ("shutdown", 0)],
    "retries": [("bill", 6)],
    "dead_letters": [("bill", 1)],
    "circuit_state": [("bill", 2)],
}


def scrape(*components: object) -> str:
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(*components))
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (sample name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert isinstance(s, Sample)
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture
def server_factory() -> Iterator[Any]:
    servers: list[MetricsServer] = []

    def start(*components: object) -> MetricsServer:
        server = serve(0, *components)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# -- the collector ------------------------------------------------------------------------------


def test_exposition_names_types_and_labels_are_exactly_the_contracts() -> None:
    text = scrape(FakeComponent("ignored", FULL))
    types = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert types == {
        "nova_events_emitted_total": "counter",
        "nova_events_processed_total": "counter",
        "nova_listener_duration_seconds": "histogram",
        "nova_queue_size": "gauge",
        "nova_active_listeners": "gauge",
        "nova_retries_total": "counter",
        "nova_dead_letters_total": "counter",
        "nova_circuit_state": "gauge",
        "nova_events_dropped_total": "counter",
    }
    got = samples(text)
    expected_labels = {
        "nova_events_emitted_total": {"component", "type", "result"},
        "nova_events_processed_total": {"component", "listener", "result"},
        "nova_listener_duration_seconds_bucket": {"component", "listener", "le"},
        "nova_listener_duration_seconds_count": {"component", "listener"},
        "nova_listener_duration_seconds_sum": {"component", "listener"},
        "nova_queue_size": {"component"},
        "nova_active_listeners": {"component"},
        "nova_retries_total": {"listener"},
        "nova_dead_letters_total": {"listener"},
        "nova_circuit_state": {"listener"},
        "nova_events_dropped_total": {"component", "reason"},
    }
    assert {name for name, _ in got} == set(expected_labels)
    for name, labels in got:
        assert {k for k, _ in labels} == expected_labels[name], name


def test_counter_and_gauge_values() -> None:
    text = scrape(FakeComponent("ignored", FULL))

    def v(name: str, **labels: str) -> float:
        return value(text, name, **labels)

    assert v("nova_events_emitted_total", component="orders", type="order.created", result="accepted") == 7
    assert v("nova_events_emitted_total", component="orders", type="order.created", result="rejected") == 1
    assert v("nova_events_emitted_total", component="orders", type="order.created", result="dropped") == 2
    assert v("nova_events_processed_total", component="orders", listener="bill", result="success") == 5
    assert v("nova_events_processed_total", component="orders", listener="bill", result="failure") == 2
    assert v("nova_queue_size", component="orders") == 3
    assert v("nova_active_listeners", component="orders") == 4
    assert v("nova_retries_total", listener="bill") == 6
    assert v("nova_dead_letters_total", listener="bill") == 1
    assert v("nova_circuit_state", listener="bill") == 2
    assert v("nova_events_dropped_total", component="orders", reason="buffer_full") == 2
    assert v("nova_events_dropped_total", component="orders", reason="at_most_once") == 1
    assert v("nova_events_dropped_total", component="orders", reason="shutdown") == 0


def test_histogram_buckets_are_made_cumulative() -> None:
    text = scrape(FakeComponent("orders", FULL))
    labels = {"component": "orders", "listener": "bill"}
    buckets = {
        dict(key)["le"]: val
        for (name, key), val in samples(text).items()
        if name == "nova_listener_duration_seconds_bucket"
    }
    # non-cumulative [1, 2, 3, 0, 1] over bounds [0.001, 0.01, 0.1, 1.0] and +Inf
    assert buckets == {"0.001": 1, "0.01": 3, "0.1": 6, "1.0": 6, "+Inf": 7}
    assert value(text, "nova_listener_duration_seconds_count", **labels) == 7
    assert value(text, "nova_listener_duration_seconds_sum", **labels) == 2.5


def test_component_name_falls_back_to_the_objects_name() -> None:
    snapshot = {k: v for k, v in FULL.items() if k != "component"}
    text = scrape(FakeComponent("fallback", snapshot))
    assert value(text, "nova_queue_size", component="fallback") == 3


def test_several_components_and_absent_keys() -> None:
    a = FakeComponent(
        "a", {"component": "a", "queue_size": 1, "retries": [("shared", 2)], "circuit_state": [("shared", 1)]}
    )
    b = FakeComponent(
        "b",
        {
            "component": "b",
            "active_listeners": 5,
            "retries": [("shared", 3), ("only_b", 1)],
            "circuit_state": [("shared", 2)],
        },
    )
    empty = FakeComponent("empty", {})
    text = scrape(a, b, empty)
    got = samples(text)
    assert value(text, "nova_queue_size", component="a") == 1
    assert ("nova_queue_size", (("component", "b"),)) not in got
    assert value(text, "nova_active_listeners", component="b") == 5
    # nova_retries_total has no component label: the same listener name adds up.
    assert value(text, "nova_retries_total", listener="shared") == 5
    assert value(text, "nova_retries_total", listener="only_b") == 1
    assert value(text, "nova_circuit_state", listener="shared") == 2  # the worst state
    assert not any(name.startswith("nova_events_emitted") for name, _ in got)


def test_the_same_histogram_from_two_components_with_one_name_adds_up() -> None:
    one = {"component": "x", "durations": [("l", BOUNDS, [1, 0, 0, 0, 0], 0.0005, 1)]}
    two = {"component": "x", "durations": [("l", BOUNDS, [0, 1, 0, 0, 1], 3.0, 2)]}
    text = scrape(FakeComponent("x", one), FakeComponent("x", two))
    labels = {"component": "x", "listener": "l"}
    assert value(text, "nova_listener_duration_seconds_count", **labels) == 3
    assert value(text, "nova_listener_duration_seconds_bucket", le="0.01", **labels) == 2
    assert value(text, "nova_listener_duration_seconds_sum", **labels) == pytest.approx(3.0005)


def test_a_malformed_histogram_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    bad = {"component": "x", "durations": [("l", BOUNDS, [1, 2], 0.1, 3)], "queue_size": 1}
    text = scrape(FakeComponent("x", bad))
    assert not any(n.startswith("nova_listener_duration") for n, _ in samples(text))
    assert value(text, "nova_queue_size", component="x") == 1
    assert "buckets" in caplog.text


def test_a_component_that_fails_does_not_break_the_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        name = "broken"

        def _metrics(self) -> Mapping[str, Any]:
            raise RuntimeError("gone")

    text = scrape(Broken(), FakeComponent("ok", {"component": "ok", "queue_size": 9}))
    assert value(text, "nova_queue_size", component="ok") == 9
    assert "broken" in caplog.text and "gone" in caplog.text


def test_reads_happen_only_at_scrape_time() -> None:
    component = FakeComponent("c", FULL)
    collector = PrometheusCollector(component)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)  # uses describe(): no read
    assert component.reads == 0
    generate_latest(registry)
    generate_latest(registry)
    assert component.reads == 2


def test_describe_lets_a_registry_detect_a_duplicate_collector() -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(PrometheusCollector(FakeComponent("a", {})))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PrometheusCollector(FakeComponent("b", {})))


def test_a_component_without_metrics_is_rejected() -> None:
    with pytest.raises(TypeError, match="no metrics"):
        PrometheusCollector(object())
    with pytest.raises(TypeError, match="neither metrics nor health"):
        serve(0, object())


def test_import_nova_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, nova; assert 'prometheus_client' not in sys.modules; "
        "import nova.metrics; assert 'prometheus_client' in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- the HTTP endpoint --------------------------------------------------------------------------


def test_metrics_endpoint(server_factory: Any) -> None:
    server = server_factory(FakeComponent("orders", FULL))
    assert server.port > 0 and server.addr == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}"
    status, content_type, body = get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert (
        value(body, "nova_events_emitted_total", component="orders", type="order.created", result="accepted")
        == 7
    )
    status, _, body = get(server.url + "/metrics?name[]=nova_queue_size")
    assert status == 200 and "nova_queue_size" in body


def test_openmetrics_when_asked(server_factory: Any) -> None:
    server = server_factory(FakeComponent("orders", FULL))
    request = urllib.request.Request(
        server.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().decode().rstrip().endswith("# EOF")


def test_healthz_without_managers_is_healthy(server_factory: Any) -> None:
    server = server_factory(FakeComponent("orders", FULL))
    status, content_type, body = get(server.url + "/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"status": "healthy", "listeners": {}}


@pytest.mark.parametrize(
    ("healths", "code", "status"),
    [
        ({"a": Health.HEALTHY}, 200, "healthy"),
        ({"a": Health.HEALTHY, "b": Health.DEGRADED}, 200, "degraded"),
        ({"a": Health.CIRCUIT_OPEN, "b": Health.DEGRADED}, 200, "circuit_open"),
        ({"a": Health.UNHEALTHY, "b": Health.CIRCUIT_OPEN}, 503, "unhealthy"),
        ({}, 200, "healthy"),
    ],
)
def test_healthz_status_codes(
    server_factory: Any, healths: dict[str, Health], code: int, status: str
) -> None:
    server = server_factory(FakeManager("listeners", healths), FakeComponent("em", {}))
    got_code, _, body = get(server.url + "/healthz")
    assert got_code == code
    assert json.loads(body) == {
        "status": status,
        "listeners": {name: str(h) for name, h in healths.items()},
    }


def test_healthz_takes_the_worst_of_several_managers(server_factory: Any) -> None:
    first = FakeManager("m1", {"a": Health.HEALTHY})
    second = FakeManager("m2", {"b": Health.UNHEALTHY})
    server = server_factory(first, second)
    code, _, body = get(server.url + "/healthz")
    assert code == 503
    assert json.loads(body) == {"status": "unhealthy", "listeners": {"a": "healthy", "b": "unhealthy"}}
    second.healths["b"] = Health.DEGRADED  # health is computed per request
    code, _, body = get(server.url + "/healthz")
    assert code == 200 and json.loads(body)["status"] == "degraded"


def test_a_component_with_health_only_is_served(server_factory: Any) -> None:
    class HealthOnly:
        def health(self) -> Health:
            return Health.CIRCUIT_OPEN

    server = server_factory(HealthOnly())
    code, _, body = get(server.url + "/healthz")
    assert code == 200 and json.loads(body) == {"status": "circuit_open", "listeners": {}}
    assert get(server.url + "/metrics")[0] == 200


def test_unknown_paths_and_head(server_factory: Any) -> None:
    server = server_factory(FakeComponent("orders", FULL))
    assert get(server.url + "/")[0] == 404
    assert get(server.url + "/metricsx")[0] == 404
    request = urllib.request.Request(server.url + "/healthz", method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.read() == b""
        assert int(response.headers["Content-Length"]) > 0


def test_concurrent_scrapes(server_factory: Any) -> None:
    server = server_factory(FakeComponent("orders", FULL))
    results: list[int] = []

    def hit() -> None:
        for _ in range(10):
            results.append(get(server.url + "/metrics")[0])

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 40


def test_close_is_idempotent_and_frees_the_port() -> None:
    with serve(0, FakeComponent("c", {})) as server:
        port = server.port
        assert get(server.url + "/healthz")[0] == 200
        assert not server.closed
    assert server.closed
    server.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # The port can be bound again at once.
    again = serve(port, FakeComponent("c", {}))
    try:
        assert again.port == port
    finally:
        again.close()


def test_a_port_in_use_raises_at_once() -> None:
    with serve(0) as server:
        with pytest.raises(OSError):
            serve(server.port)


def test_serve_on_ipv6_loopback_when_available() -> None:
    if not socket.has_ipv6:
        return
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        return  # no IPv6 loopback here; the IPv4 tests cover the server
    with serve(0, FakeComponent("c", {}), addr="::1") as server:
        assert server.url == f"http://[::1]:{server.port}"
        assert get(server.url + "/healthz")[0] == 200


# -- integration with the real Emitter ----------------------------------------------------------


def test_real_emitter_scraped_over_http() -> None:
    em = nova.Emitter(name="shop", validator=nova.strict_type_names)
    try:

        def created(event: nova.Event) -> None:
            pass

        em.subscribe("order.created", created)

        def broken(event: nova.Event) -> None:
            raise ValueError("bad")

        em.subscribe("order.broken", broken)
        for _ in range(3):
            em.emit(nova.Event("order.created"))
        for _ in range(2):
            em.emit_async(nova.Event("order.created"))
        assert em.flush(timeout=10)
        with pytest.raises(nova.ListenerError):
            em.emit(nova.Event("order.broken"))
        with pytest.raises(nova.ValidationError):
            em.emit(nova.Event("NotDotted"))

        with serve(0, em) as server:
            code, _, text = get(server.url + "/metrics")
        assert code == 200

        def v(name: str, **labels: str) -> float:
            return value(text, name, **labels)

        assert v("nova_events_emitted_total", component="shop", type="order.created", result="accepted") == 5
        assert v("nova_events_emitted_total", component="shop", type="order.broken", result="accepted") == 1
        assert v("nova_events_emitted_total", component="shop", type="NotDotted", result="rejected") == 1
        assert (
            v(
                "nova_events_processed_total",
                component="shop",
                listener=created.__qualname__,
                result="success",
            )
            == 5
        )
        assert (
            v("nova_events_processed_total", component="shop", listener=broken.__qualname__, result="failure")
            == 1
        )
        assert v("nova_listener_duration_seconds_count", component="shop", listener=created.__qualname__) == 5
        assert (
            v(
                "nova_listener_duration_seconds_bucket",
                component="shop",
                listener=created.__qualname__,
                le="+Inf",
            )
            == 5
        )
        assert v("nova_listener_duration_seconds_sum", component="shop", listener=created.__qualname__) >= 0.0
        assert v("nova_queue_size", component="shop") == 0
        assert v("nova_active_listeners", component="shop") == 2
        stats = em.stats()
        assert stats.events_processed == 6 and stats.failed_events == 1
    finally:
        em.shutdown(timeout=5)


def test_real_emitter_drops_are_exposed() -> None:
    gate = threading.Event()
    pool = nova.WorkerPool(1)
    em = nova.Emitter(name="lossy", pool=pool, buffer_size=2, on_full=nova.OnFull.DROP_NEWEST)
    try:
        em.subscribe("a.b", lambda e: gate.wait(10))
        for _ in range(10):
            em.emit_async(nova.Event("a.b"))
        collector = PrometheusCollector(em)
        registry = CollectorRegistry()
        registry.register(collector)
        text = generate_latest(registry).decode()
        dropped = em.stats().dropped_events
        assert dropped >= 7  # at most one in flight and two buffered
        assert value(text, "nova_events_dropped_total", component="lossy", reason="buffer_full") == dropped
        assert (
            value(text, "nova_events_emitted_total", component="lossy", type="a.b", result="dropped")
            == dropped
        )
        assert (
            value(text, "nova_events_emitted_total", component="lossy", type="a.b", result="accepted")
            == 10 - dropped
            == em.stats().events_emitted
        )
    finally:
        gate.set()
        em.shutdown(timeout=5)
        pool.close(timeout=5)


# -- integration with the real ListenerManager --------------------------------------------------


def _manager_parts() -> Any:
    # Every name is re-exported from nova once the package wires it; the modules are stable.
    from nova import resilience

    return resilience


def _fail(event: nova.Event) -> None:
    raise ValueError("always fails")


def _ok(event: nova.Event) -> None:
    pass


def test_real_manager_health_and_resilience_metrics() -> None:
    r = _manager_parts()
    manager = r.ListenerManager(name="billing")
    dead_letters = r.DeadLetterQueue()
    quick_retry = r.RetryPolicy(max_attempts=3, initial_delay=0.001, backoff=r.Backoff.FIXED)
    manager.register(
        nova.Listener("charge", _fail),
        r.ListenerConfig(retry=quick_retry, dead_letter=r.DeadLetterConfig(enabled=True, queue=dead_letters)),
    )
    manager.register(nova.Listener("receipt", _ok), r.ListenerConfig())
    manager.start()
    try:
        for _ in range(2):
            with pytest.raises(nova.RetryLimitExceeded):
                manager.process("charge", nova.Event("order.paid"))
        manager.process("receipt", nova.Event("order.paid"))

        with serve(0, manager) as server:
            code, _, body = get(server.url + "/healthz")
            assert code == 503
            assert json.loads(body) == {
                "status": "unhealthy",
                "listeners": {"charge": "unhealthy", "receipt": "healthy"},
            }
            code, _, text = get(server.url + "/metrics")
        assert code == 200
        assert value(text, "nova_retries_total", listener="charge") == 4
        assert value(text, "nova_retries_total", listener="receipt") == 0
        assert value(text, "nova_dead_letters_total", listener="charge") == 2
        assert dead_letters.count() == 2
        assert value(text, "nova_circuit_state", listener="charge") == 0
        assert (
            value(
                text, "nova_events_processed_total", component="billing", listener="charge", result="failure"
            )
            == 2
        )
        assert (
            value(
                text, "nova_events_processed_total", component="billing", listener="receipt", result="success"
            )
            == 1
        )
        assert value(text, "nova_active_listeners", component="billing") == 2
        attempts = value(text, "nova_listener_duration_seconds_count", component="billing", listener="charge")
        assert attempts == 6  # every attempt is timed
    finally:
        manager.stop(5)


def test_real_manager_with_an_open_circuit_is_not_unhealthy() -> None:
    r = _manager_parts()
    manager = r.ListenerManager(name="shipping")
    manager.register(
        nova.Listener("label", _fail),
        r.ListenerConfig(
            retry=r.RetryPolicy(max_attempts=1),
            circuit=r.CircuitConfig(enabled=True, failure_threshold=2, timeout=60.0),
        ),
    )
    manager.start()
    try:
        for _ in range(3):
            with pytest.raises(nova.RetryLimitExceeded):
                manager.process("label", nova.Event("order.shipped"))
        with serve(0, manager) as server:
            code, _, body = get(server.url + "/healthz")
            assert code == 200
            assert json.loads(body) == {"status": "circuit_open", "listeners": {"label": "circuit_open"}}
            _, _, text = get(server.url + "/metrics")
        assert value(text, "nova_circuit_state", listener="label") == 2
    finally:
        manager.stop(5)


def test_emitter_and_manager_served_together() -> None:
    r = _manager_parts()
    manager = r.ListenerManager(name="listeners")
    manager.register(nova.Listener("audit", _ok), r.ListenerConfig())
    manager.start()
    em = nova.Emitter(name="frontend")
    try:
        em.subscribe("page.viewed", _ok)
        em.emit(nova.Event("page.viewed"))
        manager.process("audit", nova.Event("page.viewed"))
        with serve(0, em, manager) as server:
            code, _, body = get(server.url + "/healthz")
            assert code == 200
            assert json.loads(body) == {"status": "healthy", "listeners": {"audit": "healthy"}}
            _, _, text = get(server.url + "/metrics")
        assert value(text, "nova_active_listeners", component="frontend") == 1
        assert value(text, "nova_active_listeners", component="listeners") == 1
        assert (
            value(
                text,
                "nova_events_processed_total",
                component="frontend",
                listener=_ok.__qualname__,
                result="success",
            )
            == 1
        )
        assert (
            value(
                text, "nova_events_processed_total", component="listeners", listener="audit", result="success"
            )
            == 1
        )
    finally:
        em.shutdown(timeout=5)
        manager.stop(5)


# -- integration with the real Bus --------------------------------------------------------------


def test_real_bus_at_most_once_failures_are_counted_as_drops() -> None:
    bus = nova.Bus(name="events-bus")
    try:
        bus.create_topic("orders", delivery_mode=nova.DeliveryMode.AT_MOST_ONCE, partitions=2)
        bus.subscribe("orders", _fail)
        bus.subscribe("orders", _ok)
        for _ in range(3):
            bus.publish("orders", nova.Event("order.created"))
        assert bus.flush(timeout=10)
        with serve(0, bus) as server:
            code, _, text = get(server.url + "/metrics")
        assert code == 200

        def v(name: str, **labels: str) -> float:
            return value(text, name, component="events-bus", **labels)

        assert v("nova_events_emitted_total", type="order.created", result="accepted") == 3
        assert v("nova_events_processed_total", listener=_fail.__qualname__, result="failure") == 3
        assert v("nova_events_processed_total", listener=_ok.__qualname__, result="success") == 3
        assert v("nova_events_dropped_total", reason="at_most_once") == 3
        assert v("nova_active_listeners") == 2
        assert v("nova_queue_size") == 0
        assert v("nova_listener_duration_seconds_count", listener=_ok.__qualname__) == 3
        assert bus.stats().dropped_events == 3
    finally:
        bus.shutdown(timeout=5)
