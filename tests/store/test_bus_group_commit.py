"""A bus with a durable store commits in groups (durability="batch", the default) or per
publish (durability="event"). What a SIGKILL may lose with each setting, and that nothing else
is ever lost, duplicated or reordered (issue: fast on the path users take, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

import nova
from nova.store import SqliteStore
from support.processes import lines_until_killed

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
    published = flushed = -1
    for line in lines_until_killed(CHILD, [str(path), durability], lines_wanted):
        kind, n = line.split()
        if kind == b"p":
            published = int(n)
        else:
            flushed = int(n)
    return published, flushed


def publish_keyed(store: SqliteStore, n: int, partitions: int) -> nova.Bus:
    """A bus on `store` with `n` events published to a keyed topic of `partitions`."""
    bus = nova.Bus(store=store)
    bus.create_topic("orders", partitions=partitions, ordering_key="k", on_full=nova.OnFull.BLOCK)
    bus.subscribe("orders", lambda event: None)
    for i in range(n):
        bus.publish("orders", nova.Event("order.created", i, metadata={"k": str(i % partitions)}))
    return bus


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
        bus = publish_keyed(store, 3000, 16)
        assert bus.flush(30)
        assert [e.data for e in store.read_stream("orders")] == list(range(3000))
        assert sum(appends) == 3000 and len(appends) < 3000  # grouped, not one per publish
        bus.shutdown(5)


def test_shutdown_stores_every_accepted_event(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.db") as store:
        bus = publish_keyed(store, 2000, 4)
        bus.shutdown(0)  # even with no time left, what was accepted is appended
        assert [e.data for e in store.read_stream("orders")] == list(range(2000))


def test_durability_must_be_batch_or_event() -> None:
    with pytest.raises(nova.ValidationError, match="durability"):
        nova.Bus(durability="sometimes")  # type: ignore[arg-type]
