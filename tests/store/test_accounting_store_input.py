"""Issue 15, item 9 (store): what ``append`` accepts, every read can give back.

Event data nested so deep that the JSON reader cannot decode it is refused at ``append`` with a
``ValidationError`` (naming the event and the limit); a stored event that does not decode makes
reads raise ``StoreError`` naming the event id, never a raw ``RecursionError``.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nova
from nova.store import _codec

# The documented limit (SqliteStore's docstring): data up to this many levels of lists and
# dicts is stored and read back; deeper is refused at append.
LIMIT: int = getattr(_codec, "MAX_DEPTH", 500)


def nested(depth: int, leaf: Any = 1, *, kind: str = "list") -> Any:
    data = leaf
    for _ in range(depth):
        data = [data] if kind == "list" else {"k": data}
    return data


def depth_of(data: Any) -> int:
    depth = 0
    while isinstance(data, (list, dict)):
        data = data[0] if isinstance(data, list) else data["k"]
        depth += 1
    return depth


def at_stack_depth(frames: int, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with ``frames`` more Python frames on the stack (a reader deep in an
    application, as under a web framework or pytest)."""
    if frames == 0:
        return fn()
    return at_stack_depth(frames - 1, fn)


@pytest.fixture(params=["memory-file", "file"])
def sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[nova.SqliteStore]:
    path = ":memory:" if request.param == "memory-file" else str(tmp_path / "events.db")
    s = nova.SqliteStore(path)
    yield s
    s.close()


def _all_reads(s: nova.SqliteStore) -> dict[str, Callable[[], list[nova.Event]]]:
    def subscribe() -> list[nova.Event]:
        sub = s.subscribe("$all")
        try:
            return [next(iter(sub))]
        finally:
            sub.close()  # type: ignore[attr-defined]

    return {
        "read $all": lambda: s.read("$all")[0],
        "read stream": lambda: s.read("a")[0],
        "read_stream": lambda: list(s.read_stream("a")),
        "replay": lambda: list(s.replay()),
        "replay streams": lambda: list(s.replay(streams=["a"])),
        "read_time_range": lambda: list(s.read_time_range(None, None)),  # type: ignore[arg-type]
        "subscribe $all": subscribe,
    }


@pytest.mark.parametrize("depth", [990, 600, LIMIT + 1, 5000])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_append_refuses_data_nested_deeper_than_the_limit(
    sqlite_store: nova.SqliteStore, depth: int, kind: str
) -> None:
    event = nova.Event("x.y", nested(depth, kind=kind))
    with pytest.raises(nova.ValidationError) as info:
        sqlite_store.append("a", event)
    message = str(info.value)
    assert event.id in message
    assert "nested too deep" in message
    assert str(LIMIT) in message
    assert not isinstance(info.value.__cause__, RecursionError) or "nested" in message
    assert sqlite_store.read("$all")[0] == []  # nothing appended (the batch is all or nothing)


def test_a_refused_event_in_a_batch_appends_nothing(sqlite_store: nova.SqliteStore) -> None:
    good = nova.Event("x.y", {"ok": True})
    bad = nova.Event("x.y", nested(990))
    with pytest.raises(nova.ValidationError, match=bad.id):
        sqlite_store.append("a", good, bad)
    assert sqlite_store.read("$all")[0] == []


@pytest.mark.parametrize("frames", [0, 300, 700])
def test_data_at_the_limit_is_read_back_from_any_stack_depth(
    sqlite_store: nova.SqliteStore, frames: int
) -> None:
    data = {"deep": nested(LIMIT - 1, "leaf")}
    event = nova.Event("x.y", data)
    at_stack_depth(frames, lambda: sqlite_store.append("a", event))
    for name, read in _all_reads(sqlite_store).items():
        got = at_stack_depth(frames, read)
        assert [e.id for e in got] == [event.id], name
        assert depth_of(got[0].data["deep"]) == LIMIT - 1, name
        assert got[0].data == data, name


def test_wide_data_with_many_brackets_is_still_accepted(sqlite_store: nova.SqliteStore) -> None:
    data = {"rows": [{"i": i, "tags": [str(i)]} for i in range(3000)], "text": "[" * 5000 + "{" * 5000}
    event = nova.Event("x.y", data)
    sqlite_store.append("a", event)
    [got] = sqlite_store.read("a")[0]
    assert got.data == data


def test_a_reference_cycle_is_refused_as_not_serialisable(sqlite_store: nova.SqliteStore) -> None:
    loop: list[Any] = []
    loop.append(loop)
    event = nova.Event("x.y", {"loop": loop})
    with pytest.raises(nova.ValidationError, match=event.id) as info:
        sqlite_store.append("a", event)
    assert "refers to itself" in str(info.value) or "cycle" in str(info.value)


def _plant(path: Path, event_id: str, data_json: str) -> None:
    """Write a row the way an older release did, without the depth check."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    body = (
        '{"id":"%s","type":"x.y","data":%s,"metadata":{},'
        '"timestamp":"2024-01-01T00:00:00.000000+00:00"}' % (event_id, data_json)
    )
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO nova_events (stream, pos, ts, body) VALUES ('a', 0, ?, ?)", (1_704_067_200_000_000, body)
    )
    conn.execute("INSERT INTO nova_streams (name, version, event_count) VALUES ('a', 1, 1)")
    conn.execute("COMMIT")
    conn.close()


def test_reads_of_an_undecodable_stored_event_raise_store_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    nova.SqliteStore(str(path)).close()
    event_id = "0190a000-0000-7000-8000-00000000dead"
    depth = max(sys.getrecursionlimit(), 1000) * 200  # deeper than any reader can go
    _plant(path, event_id, "[" * depth + "]" * depth)
    s = nova.SqliteStore(str(path))
    try:
        for name, read in _all_reads(s).items():
            with pytest.raises(nova.StoreError) as info:
                read()
            message = str(info.value)
            assert event_id in message, name
            assert "nested too deep" in message, name
            assert not isinstance(info.value, RecursionError)
    finally:
        s.close()


def test_an_old_store_with_990_levels_is_readable_from_a_deep_stack(tmp_path: Path) -> None:
    """Rows of ~990 levels written before the limit existed are still read back (on a fresh
    stack when the reader's own is too deep), or refused with StoreError — never a raw
    RecursionError."""
    path = tmp_path / "old.db"
    nova.SqliteStore(str(path)).close()
    event_id = "0190a000-0000-7000-8000-000000000990"
    _plant(path, event_id, "[" * 990 + "1" + "]" * 990)
    s = nova.SqliteStore(str(path))
    try:
        for frames in (0, 500):
            for name, read in _all_reads(s).items():
                try:
                    got = at_stack_depth(frames, read)
                except nova.StoreError as exc:
                    assert event_id in str(exc), name
                else:
                    assert depth_of(got[0].data) == 990, name
    finally:
        s.close()


def test_reads_in_other_threads_decode_deep_data(sqlite_store: nova.SqliteStore) -> None:
    event = nova.Event("x.y", nested(LIMIT))
    sqlite_store.append("a", event)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            assert sqlite_store.read("$all")[0] == [event]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_memory_store_keeps_deep_data_as_given() -> None:
    """MemoryStore keeps the caller's object (no encoding), so any depth reads back."""
    data = nested(5000)
    with nova.MemoryStore() as s:
        event = nova.Event("x.y", data)
        s.append("a", event)
        assert s.read("$all")[0][0].data is data
        assert list(s.replay())[0].data is data
