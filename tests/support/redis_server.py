"""A real redis-server for the tests: started on a free loopback port in a temporary
directory, stopped after. A missing binary or a server that does not start FAILS the test
(never a skip): CI installs Debian's redis-server.

tests/conftest.py makes the fixtures (``redis_server``, ``redis_url``) available to every test;
a module that needs a helper imports it::

    from support.redis_server import RedisServer, free_port, tmp_server
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server", "redis_url", "free_port"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process. ``persistent=True`` turns on the append-only file with an
    fsync per write, so a restart keeps every acknowledged write."""

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        persistent: bool = False,
        port: int | None = None,
        tls: bool = False,
    ) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail(
                "redis-server is not installed: the Redis backend tests need a real server "
                "(apt-get install -y redis-server); they are never skipped"
            )
        self.directory = directory
        self.password = password
        self.persistent = persistent
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"
        self.tls = tls
        self.cert = directory / "cert.pem"
        self.key = directory / "key.pem"
        if tls:
            self._make_cert()

    def _make_cert(self) -> None:
        """A self-signed certificate for 127.0.0.1 (openssl is in the machine image)."""
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.fail("openssl is not installed: the TLS test needs it to make a certificate")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        if self.password:
            return f"{scheme}://:{self.password}@127.0.0.1:{self.port}/0"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        assert self.binary is not None
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args[2] = "0"  # no plain port
            args += [
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.cert),
                "--tls-key-file",
                str(self.key),
                "--tls-ca-cert-file",
                str(self.cert),
                "--tls-auth-clients",
                "no",
            ]
        return args

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                pytest.fail(f"redis-server exited at start (status {self.proc.returncode}): {err}\n{log}")
            if self._ready():
                return
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not answer on 127.0.0.1:{self.port} within {timeout}s")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as plain:
                s: socket.socket = plain
                if self.tls:
                    ctx = ssl.create_default_context(cafile=str(self.cert))
                    s = ctx.wrap_socket(plain, server_hostname="127.0.0.1")
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    if not s.recv(64).startswith(b"+OK"):
                        return False
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server (SIGTERM) and start it again on the same port and directory."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def flushall(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()


@pytest.fixture(scope="module")
def _redis_module_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="nova-redis-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture()
def redis_server(_redis_module_server: RedisServer) -> Iterator[RedisServer]:
    """A running redis-server shared by the tests of a module, emptied before each test."""
    if _redis_module_server.proc is None or _redis_module_server.proc.poll() is not None:
        _redis_module_server.start()
    _redis_module_server.flushall()
    yield _redis_module_server


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def tmp_server(tmp_path: Path, **kwargs: object) -> RedisServer:
    """A private server for one test (persistence, a password...); stop it yourself."""
    d = tmp_path / f"redis-{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    server = RedisServer(d, **kwargs)  # type: ignore[arg-type]
    server.start()
    return server
