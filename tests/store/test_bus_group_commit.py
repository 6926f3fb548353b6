"""A bus with a durable store commits in groups (durability="batch", the default) or per
publish (durability="event"). What a SIGKILL may lose with each setting, and that nothing else
is ever lost, duplicated or reordered (issue: fast on the path users take, item 7)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nova
from nova.store import SqliteStore

# The child publishes events 0, 1, 2, ... one at a time on a keyed, 16-partition topic of a bus
# with a SqliteStore, printing "p <i>" once publish(i) returned and, every 50 events, "f <i>"
# once flush() returned (every event up to i is then committed).
CHILD = r"""
import sys
import nova
from nova.store import SqliteStore

bus = nova.Bus(store=SqliteStore(sys.argv[1]), durability=sys.argv[2])
bus.create_topic("orders", partitions=16, ordering_key="k", on_full=nova.OnFull.BLOCK)
bus.subscribe("orders", lambda event: None)
print("ready", flush=True)
i = 0
while True:
    bus.publish("orders", nova.Event("order.created", i, metadata={"k": str(i % 16)}))
    print("p", i, flush=True)
    if i % 50 == 49:
        bus.flush()
        print("f", i, flush=True)
    i += 1
"""


def publish_until_killed(path: Path, durability: str, lines_wanted: int) -> tuple[int, int]:
    """Run the child, SIGKILL it once it printed `lines_wanted` lines; the last event whose
    publish returned and the last event known flushed (-1 if none)."""
    env = dict(os.environ)
    package_root = str(Path(nova.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), durability],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    try:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else b""
        deadline = time.monotonic() + 60
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
    published = flushed = -1
    for line in lines:
        if not line.endswith(b"\n"):
            continue  # cut by the kill
        kind, n = line.split()
        if kind == b"p":
            published = int(n)
        else:
            flushed = int(n)
    return published, flushed


@pytest.mark.parametrize("durability", ["batch", "event"])
def test_what_a_sigkill_may_lose(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "bus.db"
    published, flushed = publish_until_killed(path, durability, lines_wanted=600)
    assert published >= 400 and flushed >= 399
    with SqliteStore(path) as store:
        stored = [e.data for e in store.read_stream("orders")]
    # Whatever the setting: a prefix of what was published, in publish order, no gaps, no
    # duplicates (the one publish cut by the kill may or may not be in).
    assert stored == list(range(len(stored)))
    assert len(stored) <= published + 2
    if durability == "event":
        # Every publish that returned was committed first.
        assert len(stored) >= published + 1
    else:
        # Every flush that returned was committed; what was published after the last one may
        # be lost (still queued for the store's writer when the process died).
        assert len(stored) >= flushed + 1


def test_group_commit_appends_in_batches_and_flush_waits_for_the_store(tmp_path: Path) -> None:
    appends: list[int] = []

    class CountingStore(SqliteStore):
        def append(self, stream: str, *events: nova.Event, expected_version: int | None = None) -> int:
            appends.append(len(events))
            return super().append(stream, *events, expected_version=expected_version)

    with CountingStore(tmp_path / "b.db") as store:
        bus = nova.Bus(store=store)
        bus.create_topic("orders", partitions=16, ordering_key="k", on_full=nova.OnFull.BLOCK)
        bus.subscribe("orders", lambda event: None)
        for i in range(3000):
            bus.publish("orders", nova.Event("order.created", i, metadata={"k": str(i % 16)}))
        assert bus.flush(30)
        assert [e.data for e in store.read_stream("orders")] == list(range(3000))
        assert sum(appends) == 3000 and len(appends) < 3000  # grouped, not one per publish
        bus.shutdown(5)


def test_shutdown_stores_every_accepted_event(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        bus = nova.Bus(store=store)
        bus.create_topic("orders", partitions=4, ordering_key="k", on_full=nova.OnFull.BLOCK)
        bus.subscribe("orders", lambda event: None)
        for i in range(2000):
            bus.publish("orders", nova.Event("order.created", i, metadata={"k": str(i % 4)}))
        bus.shutdown(0)  # even with no time left, what was accepted is appended
        assert [e.data for e in store.read_stream("orders")] == list(range(2000))


def test_durability_must_be_batch_or_event() -> None:
    with pytest.raises(nova.ValidationError, match="durability"):
        nova.Bus(durability="sometimes")  # type: ignore[arg-type]
