"""Issue 15, item 9 (metrics server): a connection cannot hold a thread forever, and a client
that hangs up does not make the server print a traceback.

``nova.metrics.serve(..., timeout=5.0)``: every read and write on a connection waits at most
``timeout`` seconds (a few seconds by default); then the connection is closed and its thread
ends. A client that disconnects mid-request or before reading the answer is closed quietly.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
import urllib.request
from typing import Any

import prometheus_client  # noqa: F401 - required (a dev dependency): fail, never skip, without it
import pytest

import nova
from nova import metrics


class SlowHealth:
    """A component whose health check takes a while: the answer is written after the client
    has gone."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def health(self) -> nova.Health:
        self.calls += 1
        time.sleep(self.delay)
        return nova.Health.HEALTHY


def _connection_threads() -> int:
    # ThreadingHTTPServer names its per-connection threads after process_request_thread.
    return sum(1 for t in threading.enumerate() if "process_request_thread" in t.name)


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), bytes(response.read())


def test_the_default_connection_timeout_is_a_few_seconds() -> None:
    with metrics.serve(0) as server:
        assert 1.0 <= server.timeout <= 10.0
        assert server.timeout == metrics.CONNECTION_TIMEOUT


def test_timeout_is_validated() -> None:
    for bad in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(nova.ValidationError, match="timeout"):
            metrics.serve(0, timeout=bad)  # type: ignore[arg-type]


def test_a_half_sent_request_does_not_keep_its_thread(capsys: pytest.CaptureFixture[str]) -> None:
    before = _connection_threads()
    with metrics.serve(0, timeout=0.5) as server:
        clients = []
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no blank line: unfinished
            clients.append(sock)
        assert _wait_for(lambda: _connection_threads() >= before + 5, 2.0)
        # Others are still served meanwhile.
        assert _get(server.url + "/healthz")[0] == 200
        # Each stalled connection is dropped after the timeout, and its thread ends.
        assert _wait_for(lambda: _connection_threads() <= before, 3.0), (
            f"{_connection_threads() - before} connection threads still alive"
        )
        for sock in clients:
            sock.close()
        assert _get(server.url + "/healthz")[0] == 200
    err = capsys.readouterr().err
    assert "Traceback" not in err, err


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout() -> None:
    with metrics.serve(0, timeout=0.3) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        started = time.monotonic()
        try:
            data = sock.recv(1024)
        except ConnectionError:
            data = b""
        elapsed = time.monotonic() - started
        sock.close()
        assert data == b""
        assert elapsed < 3.0


def _hang_up_abruptly(sock: socket.socket) -> None:
    # SO_LINGER 0: close() sends a reset at once, so the server's write fails.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_hanging_up_before_the_answer_prints_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    slow = SlowHealth(0.2)
    with metrics.serve(0, slow) as server:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.05)  # the server has read the request and is computing the answer
            _hang_up_abruptly(sock)
        assert _wait_for(lambda: slow.calls >= 3, 5.0)
        time.sleep(0.4)  # the answers are written to the reset connections
        status, body = _get(server.url + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "healthy"
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert "BrokenPipeError" not in err and "ConnectionResetError" not in err, err


def test_a_client_hanging_up_mid_request_prints_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with metrics.serve(0, timeout=2.0) as server:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: ")
            _hang_up_abruptly(sock)
        before = _connection_threads()
        assert _wait_for(
            lambda: _connection_threads() <= max(before - 5, 0) or _connection_threads() == 0, 3.0
        )
        assert _get(server.url + "/metrics")[0] == 200
    err = capsys.readouterr().err
    assert "Traceback" not in err, err


def test_other_handler_errors_are_logged_not_printed(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A real bug in a request still leaves a trace, in the 'nova.metrics' logger."""
    server = metrics.serve(0)
    caplog.set_level(logging.DEBUG, logger="nova.metrics")
    try:
        try:
            raise RuntimeError("handler bug")
        except RuntimeError:
            server._server.handle_error(None, ("127.0.0.1", 1))  # type: ignore[arg-type]
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError:
            server._server.handle_error(None, ("127.0.0.1", 1))  # type: ignore[arg-type]
    finally:
        server.close()
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    [bug] = [r for r in caplog.records if r.exc_info and "handler bug" in str(r.exc_info[1])]
    assert bug.levelname == "ERROR" and bug.name == "nova.metrics"
    hang_ups = [r for r in caplog.records if "Broken pipe" in r.getMessage()]
    assert all(r.levelname == "DEBUG" for r in hang_ups)
