"""A child Python process run until SIGKILL: what the crash tests use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nova


def child_env() -> dict[str, str]:
    """The environment for a child that imports the nova under test."""
    env = dict(os.environ)
    package_root = str(Path(nova.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def lines_until_killed(code: str, args: list[str], lines_wanted: int, timeout: float = 60) -> list[bytes]:
    """Run `code` with `args`; once it printed "ready" and then `lines_wanted` lines, SIGKILL it
    (it keeps going meanwhile). Every whole line it printed after "ready": a line cut by the
    kill has no newline and is left out."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    try:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else b""
        deadline = time.monotonic() + timeout
        while len(lines) < lines_wanted and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        lines += proc.stdout.read().splitlines(keepends=True)  # printed before it died
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return [line for line in lines if line.endswith(b"\n")]
