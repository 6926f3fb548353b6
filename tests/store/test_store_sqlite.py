"""SqliteStore specifics: durability through SIGKILL, files that are not Nova stores,
JSON encoding, the schema, and reopening."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nova
from support.processes import child_env, lines_until_killed
from nova.errors import StoreError, ValidationError
from nova.store import Cursor, SqliteStore
from nova.store._codec import decode, encode

UTC = timezone.utc
T0 = datetime(2024, 5, 1, tzinfo=UTC)

# The child appends batches of 1 to 3 events in a loop and prints each returned version.
CHILD = r"""
import sys
import nova
from nova.store import SqliteStore

store = SqliteStore(sys.argv[1])
start = int(sys.argv[2])
i = 0
print("ready", flush=True)
while True:
    size = 1 + i % 3
    version = store.append("s", *(nova.Event("kill.test", {"batch": start + i, "k": k})
                                  for k in range(size)))
    print(version, flush=True)
    i += 1
"""


def append_until_killed(path: Path, start: int, versions_wanted: int) -> list[int]:
    """Run the child, SIGKILL it once it printed ``versions_wanted`` versions (it keeps
    appending meanwhile), and return every version it printed in full."""
    return [int(line) for line in lines_until_killed(CHILD, [str(path), str(start)], versions_wanted, 30)]


def test_every_returned_append_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    printed: list[int] = []
    for round_ in range(3):
        printed += append_until_killed(path, start=round_ * 10_000, versions_wanted=150)
        assert len(printed) >= 150 * (round_ + 1)
        with SqliteStore(path) as store:
            info = store.stream_info("s")
            events = store.read_stream("s")
            # Every printed version is there, in order, with its whole batch.
            assert info.version >= max(printed)
            assert len(events) == info.version == info.event_count
            assert sorted(set(printed)) == printed
            boundaries = {0}
            for j, e in enumerate(events):
                if e.data["k"] == 0:
                    boundaries.add(j)
                else:  # the rest of a batch follows its first event
                    assert events[j - 1].data["batch"] == e.data["batch"]
                    assert events[j - 1].data["k"] == e.data["k"] - 1
            boundaries.add(len(events))
            assert set(printed) <= boundaries  # versions fall between whole batches
            assert len(events) in boundaries  # no torn batch at the end


# ---------------------------------------------------------------- not a Nova store


def test_random_bytes_are_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "random.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match="not a Nova event store") as info:
        SqliteStore(path, name="events")
    assert "events" in str(info.value) and "random.db" in str(info.value)


def test_a_text_file_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list: eggs, milk\n" * 100)
    with pytest.raises(StoreError, match="not an SQLite database"):
        SqliteStore(path)
    assert path.read_text().startswith("shopping list")  # untouched


def test_another_applications_database_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    with pytest.raises(StoreError, match="another application's database.*users"):
        SqliteStore(path)
    with sqlite3.connect(path) as conn:  # left as it was
        assert conn.execute("SELECT name FROM users").fetchall() == [("ada",)]
    conn.close()


def test_a_foreign_nova_meta_table_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE nova_meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO nova_meta VALUES ('format', 'something else')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a Nova event store"):
        SqliteStore(path)


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE nova_meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version '2'.*reads schema version 1"):
        SqliteStore(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        SqliteStore(tmp_path)


def make_store_file(path: Path, n: int = 2000) -> None:
    with SqliteStore(path) as store:
        for i in range(0, n, 100):
            store.append(
                f"s{i % 3}", *(nova.Event("c.x", {"i": i + k, "pad": "x" * 200}) for k in range(100))
            )


def use_everything(path: Path) -> None:
    with SqliteStore(path) as store:
        store.streams()
        store.read_stream("$all")
        list(store.replay())
        store.read_time_range(None, None)
        store.append("s0", nova.Event("c.x", 1))


@pytest.mark.parametrize("damage", ["header", "middle", "tail", "truncate"])
def test_a_corrupted_store_gives_store_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "corrupt.db"
    make_store_file(path)
    size = path.stat().st_size
    assert size > 16 * 4096
    raw = bytearray(path.read_bytes())
    garbage = bytes((i * 37 + 11) % 256 for i in range(8 * 4096))
    if damage == "header":
        raw[0:100] = garbage[:100]
    elif damage == "middle":
        raw[4096 : 4096 + len(garbage)] = garbage
    elif damage == "tail":
        raw[size - len(garbage) :] = garbage
    else:
        raw = raw[: size // 2 + 1234]
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError):
        use_everything(path)


# ---------------------------------------------------------------- JSON


def test_data_that_is_not_json_is_refused_naming_the_event(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "j.db") as store:
        good = nova.Event("ok.x", {"a": 1})
        for bad_data in [object(), {"t": {1, 2}}, float("nan"), {(1, 2): "tuple key"}]:
            bad = nova.Event("bad.x", bad_data)
            with pytest.raises(ValidationError, match=bad.id) as info:
                store.append("s", good, bad)
            assert "bad.x" in str(info.value) and "JSON" in str(info.value)
        cycle: list[object] = []
        cycle.append(cycle)
        with pytest.raises(ValidationError, match="JSON"):
            store.append("s", nova.Event("bad.x", cycle))
        assert store.read_stream("s") == []  # all or nothing
        assert store.append("s", good) == 1


def test_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rt.db"
    data = {
        "s": 'é ☃ \u2028 "q" \\',
        "n": [1, 2.5, -3, 10**18, None, True],
        "k": {"": {}},
        "emoji": "🎉",
        "nul": "a\x00b",
    }
    e = nova.Event(
        "round.trip",
        data,
        metadata={"trace": "t-1", "é": "ü"},
        timestamp=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-7))),
    )
    with SqliteStore(path) as store:
        store.append("s", e, nova.Event("tuple.x", (1, 2)))
    with SqliteStore(path) as store:
        got, other = store.read_stream("s")
    assert got.to_dict() == e.to_dict()
    assert got.timestamp.utcoffset() == timedelta(hours=-7)
    assert other.data == [1, 2]  # JSON has lists, not tuples


# ---------------------------------------------------------------- schema and reopening


def test_schema_wal_and_marker(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore(path) as store:
        store.append("s", nova.Event("a.b", 1))
        assert store._wconn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with SqliteStore(path, synchronous="full") as store:
        assert store._wconn.execute("PRAGMA synchronous").fetchone()[0] == 2
    with pytest.raises(ValidationError, match="synchronous"):
        SqliteStore(path, synchronous="OFF")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(conn.execute("SELECT key, value FROM nova_meta").fetchall())
    assert meta == {"format": "nova-events event store", "schema_version": "1"}
    [(body,)] = conn.execute("SELECT body FROM nova_events").fetchall()
    assert body.startswith('{"id":"') and '"data":1' in body
    conn.close()


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with SqliteStore(path) as store:
        store.append("a", nova.Event("a.b", 0, timestamp=T0), nova.Event("a.b", 1))
        store.append("b", nova.Event("a.b", 2))
        before = (store.streams(), store.read("$all"), store.stream_info("$all"))
    with SqliteStore(path) as store:
        assert (store.streams(), store.read("$all"), store.stream_info("$all")) == before
        assert store.append("a", nova.Event("a.b", 3), expected_version=2) == 3
        assert store.read("$all", 3)[1] == Cursor("$all", 4)
        stats = store.stats()
        assert (stats.total_events, stats.total_streams, stats.events_appended) == (4, 2, 1)


def test_global_positions_are_never_reused_after_retention(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with SqliteStore(path) as store:
        store.append("a", *(nova.Event("a.b", i, timestamp=T0) for i in range(3)))
        assert store._sweep_before(T0 + timedelta(seconds=1)) == 3
    with SqliteStore(path) as store:
        assert store.append("a", nova.Event("a.b", 3)) == 4
        events, cursor = store.read("$all")
        assert [e.data for e in events] == [3] and cursor == Cursor("$all", 4)
        assert store.stream_info("a").event_count == 1


def test_stream_names_are_data_not_sql(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "q.db") as store:
        name = "x'); DROP TABLE nova_events; --"
        store.append(name, nova.Event("a.b", 1))
        assert [s.stream for s in store.streams()] == [name]
        assert [e.data for e in store.read_time_range(None, None, streams=[name, "?"])] == [1]


def test_two_processes_share_a_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with SqliteStore(path) as store:
        sub = store.subscribe("s")
        code = (
            "import sys, nova\nfrom nova.store import SqliteStore\n"
            "with SqliteStore(sys.argv[1]) as s:\n"
            "    s.append('s', nova.Event('x.y', 'from child'))\n"
        )
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=child_env(), timeout=60)
        # The subscription sees another process's append (it polls the file).
        assert next(sub).data == "from child"
        sub.close()


def test_memory_path(tmp_path: Path) -> None:
    with SqliteStore(":memory:") as store:
        store.append("s", nova.Event("a.b", 1))
        assert [e.data for e in store.read_stream("s")] == [1]
        assert [e.data for e in store.replay()] == [1]


@given(
    st.datetimes(timezones=st.just(UTC))
    | st.datetimes(
        timezones=st.builds(
            lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60 - 59, 23 * 60 + 59)
        )
    )
)
@settings(max_examples=300, deadline=None)
def test_the_stored_timestamp_text_is_isoformat(ts: datetime) -> None:
    e = nova.Event("t.x", None, timestamp=ts)
    micros, body = encode(e)
    assert micros == (e.timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert json.loads(body) == json.loads(json.dumps(e.to_dict()))
    assert decode(body).to_dict() == e.to_dict()


def test_a_damaged_row_gives_store_error(tmp_path: Path) -> None:
    path = tmp_path / "row.db"
    with SqliteStore(path) as store:
        store.append("s", nova.Event("a.b", 1), nova.Event("a.b", 2))
    conn = sqlite3.connect(path)
    conn.execute('UPDATE nova_events SET body = \'{"type": "a.b", "data": \' WHERE pos = 1')
    conn.commit()
    conn.close()
    with SqliteStore(path) as store:
        assert [e.data for e in store.read("s", 0, limit=1)[0]] == [1]
        with pytest.raises(StoreError, match="does not decode"):
            store.read_stream("s")
        with pytest.raises(StoreError, match="does not decode"):
            list(store.replay())
