"""RedisBackend against failures: a Redis restart mid-run, refused connections, wrong
credentials, and credentials kept out of errors, logs and repr."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import redis
from support.redis_server import RedisServer, free_port, tmp_server

import nova
from nova.backends.redis import RedisBackend, redact_url

SECRET = "s3cr3t-Pa55word"


def test_restart_of_redis_is_survived_without_acknowledged_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = tmp_server(tmp_path, persistent=True)
    try:
        consumer = nova.Bus(backend=RedisBackend(server.url, group="g", lease_ttl=3.0))
        consumer.create_topic("t", partitions=4, ordering_key="key")
        seen: set[str] = set()
        lock = threading.Lock()

        def handle(event: nova.Event) -> None:
            with lock:
                seen.add(event.id)

        consumer.subscribe("t", nova.Listener("h", handle))
        publisher = nova.Bus(backend=RedisBackend(server.url, group="p"))
        acknowledged: list[str] = []
        refused = 0
        stop = threading.Event()

        def publish() -> None:
            nonlocal refused
            i = 0
            while not stop.is_set() and i < 1500:
                ev = nova.Event("e", {"n": i}, metadata={"key": f"k{i % 10}"})
                try:
                    publisher.publish("t", ev)
                except nova.BackendError as exc:
                    assert SECRET not in str(exc)
                    refused += 1
                    time.sleep(0.02)
                    continue  # this event was not acknowledged: publish another one
                acknowledged.append(ev.id)
                i += 1
                time.sleep(0.0005)

        t = threading.Thread(target=publish)
        t.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 400 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.restart(down_for=0.5)
        t.join(60)
        assert not t.is_alive()
        assert refused > 0, "publishes raised BackendError while Redis was down"
        assert len(acknowledged) == 1500
        assert consumer.flush(30), "the consumer caught up after the restart"
        with lock:
            missing = set(acknowledged) - seen
        assert not missing, f"{len(missing)} acknowledged events were never processed"
        assert any("retrying" in r.getMessage() for r in caplog.records)
        publisher.shutdown(5)
        consumer.shutdown(5)
    finally:
        server.stop()


def test_refused_connection_raises_backend_error() -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(nova.BackendError, match="cannot connect") as info:
        RedisBackend(f"redis://user:{SECRET}@127.0.0.1:{port}/0", group="g", connect_timeout=2)
    assert time.monotonic() - t0 < 5
    assert SECRET not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


def test_wrong_password_raises_backend_error_without_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = tmp_server(tmp_path, password=SECRET)
    try:
        wrong = f"redis://:{SECRET}-wrong@127.0.0.1:{server.port}/0"
        with pytest.raises(nova.BackendError) as info:
            RedisBackend(wrong, group="g")
        err = info.value
        texts = [str(err), repr(err)]
        cause = err.__cause__
        while cause is not None:
            texts += [str(cause), repr(cause)]
            cause = cause.__cause__
        assert all(SECRET not in t for t in texts), texts
        assert "credentials" in str(err) or "password" in str(err).lower()
        with pytest.raises(nova.BackendError):  # no password at all
            RedisBackend(f"redis://127.0.0.1:{server.port}/0", group="g")
        # The right password works, and never shows.
        backend = RedisBackend(server.url, group="g")
        bus = nova.Bus(backend=backend)
        got: list[nova.Event] = []
        bus.subscribe("t", got.append)
        bus.publish("t", nova.Event("e"))
        assert bus.flush(10) and len(got) == 1
        assert SECRET not in repr(backend) and SECRET not in backend.url
        assert SECRET not in repr(bus) and SECRET not in str(bus.stats())
        server.stop()  # now every call fails: the errors must not leak the password either
        with pytest.raises(nova.BackendError) as down:
            bus.publish("t", nova.Event("e"))
        assert SECRET not in str(down.value)
        time.sleep(0.5)
        bus.shutdown(2)
        assert all(SECRET not in r.getMessage() and SECRET not in str(r.args) for r in caplog.records)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
        ("redis://user:pw@host:6379/0", "redis://***@host:6379/0"),
        ("rediss://default:p%40ss@host:6380/1", "rediss://***@host:6380/1"),
        ("redis://host:6379/0?password=pw&db=2", "redis://host:6379/0?password=***&db=2"),
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock?password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_malformed_urls_are_validation_errors() -> None:
    with pytest.raises(nova.ValidationError, match="redis://"):
        RedisBackend(f"http://user:{SECRET}@host/", group="g")
    with pytest.raises(nova.ValidationError) as info:
        RedisBackend(f"redis://user:{SECRET}@host:notaport/0", group="g")
    assert SECRET not in str(info.value)
    with pytest.raises(nova.ValidationError):
        RedisBackend("redis://127.0.0.1:1/0", group="")


def test_tls_url_is_accepted_and_reported_without_credentials() -> None:
    # No TLS server here: the rediss:// URL must reach the TLS handshake and fail cleanly.
    port = free_port()
    with pytest.raises(nova.BackendError) as info:
        RedisBackend(f"rediss://user:{SECRET}@127.0.0.1:{port}/0", group="g", connect_timeout=2)
    assert "rediss://***@127.0.0.1" in str(info.value)
    assert SECRET not in str(info.value)


def test_tls_round_trip(tmp_path: Path) -> None:
    server = tmp_server(tmp_path, tls=True, password=SECRET)
    try:
        assert server.url.startswith("rediss://")
        with pytest.raises(nova.BackendError) as info:  # our CA is not trusted by default
            RedisBackend(server.url, group="g")
        assert SECRET not in str(info.value)
        backend = RedisBackend(server.url, group="g", redis_options={"ssl_ca_certs": str(server.cert)})
        bus = nova.Bus(backend=backend)
        got: list[nova.Event] = []
        bus.subscribe("t", got.append)
        bus.publish_batch("t", [nova.Event("e", i) for i in range(10)])
        assert bus.flush(10)
        assert [e.data for e in got] == list(range(10))
        assert repr(backend).startswith("RedisBackend(url='rediss://***@127.0.0.1")
        bus.shutdown(5)
    finally:
        server.stop()


def test_server_helper_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="never skipped"):
        RedisServer(tmp_path)
    assert isinstance(redis.Redis, type)
