"""SqliteStore: a durable event store in one SQLite file (stdlib ``sqlite3``).

Layout (schema version 1)::

    nova_meta(key, value)                 'format' = FORMAT, 'schema_version' = '1'
    nova_streams(name, version, event_count)
    nova_events(gpos, stream, pos, ts, body)
        gpos   global position + 1 (INTEGER PRIMARY KEY AUTOINCREMENT: never reused, so
               global positions stay stable when retention deletes rows)
        pos    position in the stream; UNIQUE (stream, pos)
        ts     the event's timestamp in microseconds since the Unix epoch (indexed)
        body   the event as JSON text: Event.to_dict() — id, type, data, metadata, timestamp

Durability: the database runs in WAL mode and each append is one ``BEGIN IMMEDIATE ...
COMMIT`` transaction. With the default ``synchronous="NORMAL"`` a commit has written the
transaction to the WAL file (the OS holds it) before ``append`` returns, so a killed process
-- SIGKILL, a crash, an OOM kill -- loses no append that returned: the OS writes the file out
whatever happens to the process, and the next open replays the WAL. Only an OS crash or a
power cut can lose the last appends (never corrupting the file). ``synchronous="FULL"`` also
fsyncs the WAL at every commit, which keeps those too, at the price of an fsync per append:
0.7 to 4 ms on the shared disks measured, against about 0.1 ms for the rest of an append of
100 events. NORMAL is the default because it keeps the promise of the API (a killed process
loses nothing) at a steady speed.

Concurrency: one writer connection and one reader connection, each behind its own lock, so
reads (replays, subscriptions) never wait for an append's fsync. Several processes may open
the same file; SQLite's locking serialises their appends (each reads the stream version
inside its write transaction, so ``expected_version`` holds across processes too).
"""

from __future__ import annotations

import functools
import heapq
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from .._core import Event
from ..errors import ConcurrencyError, NovaError, StoreError, ValidationError
from ._base import ALL, BaseStore, StreamInfo
from ._codec import MAX_DEPTH, EncodeError, NestingError, decode, encode, stored_id
from ._wal import BACKSTOP_PAGES, Checkpointer
from ._time import MAX_MICROS, MIN_MICROS, from_micros, to_micros

__all__ = ["SqliteStore"]

SCHEMA_VERSION = 1
FORMAT = "nova-events event store"
APPLICATION_ID = 0x4E4F5641  # "NOVA", in the SQLite header (for `file` and the like)

_PAGE = 1000  # rows fetched per query by replays, time ranges and full reads

_SCHEMA = (
    "CREATE TABLE nova_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE nova_streams (name TEXT PRIMARY KEY, version INTEGER NOT NULL,"
    " event_count INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE nova_events (gpos INTEGER PRIMARY KEY AUTOINCREMENT,"
    " stream TEXT NOT NULL, pos INTEGER NOT NULL, ts INTEGER NOT NULL, body TEXT NOT NULL)",
    "CREATE UNIQUE INDEX nova_events_stream_pos ON nova_events (stream, pos)",
    "CREATE INDEX nova_events_ts ON nova_events (ts)",
)

# One INSERT of many rows costs a quarter less than executemany of one-row INSERTs.
_ROWS_PER_INSERT = 100


@functools.lru_cache(maxsize=None)
def _insert_sql(rows: int) -> str:
    return "INSERT INTO nova_events (stream, pos, ts, body) VALUES " + ",".join(["(?, ?, ?, ?)"] * rows)


class SqliteStore(BaseStore):
    """A durable event store in the SQLite file at ``path`` (created if missing; ``":memory:"``
    gives a private in-memory database). Thread-safe; several processes may share the file.

    Events are stored as JSON text, so ``data`` must be JSON-serialisable (else
    :class:`~nova.errors.ValidationError` naming the event) and comes back as JSON types
    (tuples as lists, dict keys as strings). ``data`` nested deeper than 500 levels of
    lists/dicts (``nova.store._codec.MAX_DEPTH``) is refused the same way, as JSON that deep
    cannot be read back on every interpreter; a stored event that does not decode (one written
    that deep by an older release) makes reads raise :class:`~nova.errors.StoreError` naming
    its id. Reading returns :class:`nova.Event` instances:
    the event's ``type`` string is kept, not its Python class. A file that is not a Nova
    store, is corrupt or has a schema version this release does not know raises
    :class:`~nova.errors.StoreError`.

    ``synchronous="NORMAL"`` (the default) keeps every append that returned through a killed
    process; ``"FULL"`` also through an OS crash or a power cut, at the cost of an fsync per
    append. ``retention`` (seconds) removes events whose timestamp is older, sweeping every
    ``retention / 10`` seconds.
    """

    _reads_block = True
    # Subscriptions re-read at least this often, to see appends by other processes.
    _poll_interval = 0.5

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: float | None = None,
        name: str = "sqlite-store",
        synchronous: str = "NORMAL",
    ) -> None:
        super().__init__(name=name, retention=retention)
        if not isinstance(synchronous, str) or synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValidationError(f"{name}: synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.synchronous = synchronous.upper()
        try:
            self.path = os.fsdecode(path)
        except TypeError:
            raise ValidationError(
                f"{name}: path must be a str or os.PathLike, got {type(path).__name__}"
            ) from None
        shared = self.path in ("", ":memory:")
        self._wlock = threading.Lock()
        self._wconn = self._connect()
        try:
            self._prepare(self._wconn)
            self._checkpointer: Checkpointer | None = None
            if shared:  # a second connection would be another database
                self._rlock, self._rconn = self._wlock, self._wconn
            else:
                self._rlock, self._rconn = threading.Lock(), self._connect()
                self._wconn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES:d}")
                self._checkpointer = Checkpointer(self._connect_checkpointer, name)
        except BaseException:
            self._wconn.close()
            raise
        if self._checkpointer is not None:
            self._checkpointer.start()
            # A store dropped without close() still lets its checkpoint thread end.
            weakref.finalize(self, self._checkpointer.halt)
        self._start_retention()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"SqliteStore({self.path!r}, name={self.name!r}{state})"

    # ----------------------------------------------------------------- opening

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.name}: cannot open {self.path!r}: {exc}. Check that the directory "
                "exists and is writable"
            ) from exc

    def _connect_checkpointer(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute(f"PRAGMA synchronous={self.synchronous}")  # how its checkpoints sync
        return conn

    def _not_a_store(self, why: str) -> StoreError:
        return StoreError(
            f"{self.name}: {self.path!r} is not a Nova event store: {why}. Give the path of "
            "a Nova store or of a new file"
        )

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the file is a Nova store of a known schema version (creating the schema in
        an empty database), then set WAL mode and the synchronous level."""
        try:
            tables = self._tables(conn)
            if not tables:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if not self._tables(conn):  # still empty: no other process won the race
                        for statement in _SCHEMA:
                            conn.execute(statement)
                        conn.executemany(
                            "INSERT INTO nova_meta (key, value) VALUES (?, ?)",
                            [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION))],
                        )
                        conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                tables = self._tables(conn)
            self._check_schema(conn, tables)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.DatabaseError as exc:
            raise self._not_a_store(f"it is not an SQLite database or it is corrupt ({exc})") from exc

    @staticmethod
    def _tables(conn: sqlite3.Connection) -> set[str]:
        """Names of every table, index, view and trigger (empty for a new database)."""
        rows = conn.execute("SELECT name FROM sqlite_master").fetchall()
        return {str(row[0]) for row in rows}

    def _check_schema(self, conn: sqlite3.Connection, tables: set[str]) -> None:
        if "nova_meta" not in tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise self._not_a_store(f"it is another application's database (it holds {shown})")
        try:
            meta = dict(conn.execute("SELECT key, value FROM nova_meta").fetchall())
        except sqlite3.OperationalError as exc:
            raise self._not_a_store(f"its nova_meta table is not Nova's ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise self._not_a_store("its nova_meta table has no Nova format marker")
        version = meta.get("schema_version")
        if version != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.name}: {self.path!r} is a Nova event store of schema version "
                f"{version!r}, but this release of nova-events reads schema version "
                f"{SCHEMA_VERSION} only. Open it with the nova-events release that wrote it "
                "(a newer one, if the version is higher)"
            )
        missing = {"nova_streams", "nova_events"} - tables
        if missing:
            raise StoreError(
                f"{self.name}: {self.path!r} is a damaged Nova event store: table(s) "
                f"{', '.join(sorted(missing))} missing. Restore it from a backup"
            )

    # ----------------------------------------------------------------- helpers

    @contextmanager
    def _db(self, action: str) -> Iterator[None]:
        """Turn SQLite errors into StoreError naming the store, the file and the action."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if self._closed:
                self._raise_closed()
            why = str(exc)
            if len(why) > 200:  # SQLite may quote a whole damaged row
                why = why[:200] + "..."
            raise StoreError(
                f"{self.name}: SQLite failed while {action} in {self.path!r}: {why}. If the "
                "file is corrupt, restore it from a backup"
            ) from exc
        except sqlite3.ProgrammingError as exc:  # a connection closed under us
            if self._closed:
                self._raise_closed()
            raise StoreError(f"{self.name}: {action} failed: {exc}") from exc

    def _check_name(self, stream: str) -> None:
        try:
            stream.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                f"{self.name}: stream {stream!r} cannot be stored: it is not valid "
                "Unicode text (lone surrogate)"
            ) from None

    def _encode(self, events: tuple[Event, ...]) -> list[tuple[int, str]]:
        out = []
        for event in events:
            try:
                out.append(encode(event))
            except NestingError as exc:
                why = (
                    "it refers to itself (a reference cycle)"
                    if exc.cycle
                    else f"it has more than {MAX_DEPTH} levels of lists/dicts"
                )
                raise ValidationError(
                    f"{self.name}: event {event.id} ({event.type}) cannot be stored: its "
                    f"data is nested too deep to be read back ({why}; the limit is "
                    f"{MAX_DEPTH}). Flatten the data, or store the deep part as a JSON "
                    "string"
                ) from exc
            except EncodeError as exc:
                raise ValidationError(
                    f"{self.name}: event {event.id} ({event.type}) cannot be stored: its "
                    f"data is not JSON-serialisable ({type(exc).__name__}: {exc}). Store "
                    "dicts, lists, str, int, finite float, bool and None only"
                ) from exc
        return out

    def _decode(self, body: str) -> Event:
        try:
            return decode(body)
        except NestingError as exc:
            raise StoreError(
                f"{self.name}: stored event {stored_id(body) or '(id unreadable)'} in "
                f"{self.path!r} cannot be read back: its data is nested too deep "
                f"({exc.depth} levels of lists/dicts; this release stores at most "
                f"{MAX_DEPTH}). It was written by an older release that did not refuse it: "
                "copy its body out with the sqlite3 tool if you need it, then delete that "
                "row from the nova_events table"
            ) from exc
        except (NovaError, ValueError, TypeError, RecursionError, MemoryError) as exc:
            event_id = stored_id(body)
            which = f"stored event {event_id}" if event_id else "a stored event"
            raise StoreError(
                f"{self.name}: {which} in {self.path!r} does not decode "
                f"({type(exc).__name__}: {exc}); the file is damaged. Restore it from a "
                "backup"
            ) from exc

    def _query(self, sql: str, params: Sequence[Any], action: str) -> list[Any]:
        with self._rlock:
            if self._closed:
                self._raise_closed()
            with self._db(action):
                return self._rconn.execute(sql, params).fetchall()

    def _last_gpos(self) -> int:
        rows = self._query(
            "SELECT seq FROM sqlite_sequence WHERE name = 'nova_events'", (), "reading the global position"
        )
        return int(rows[0][0]) if rows else 0

    # ----------------------------------------------------------------- primitives

    def _append(self, stream: str, events: tuple[Event, ...], expected_version: int | None) -> int:
        self._check_name(stream)
        encoded = self._encode(events)
        n = len(encoded)
        with self._wlock:
            if self._closed:
                self._raise_closed()
            conn = self._wconn
            with self._db(f"appending to stream {stream!r}"):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    row = conn.execute(
                        "SELECT version FROM nova_streams WHERE name = ?", (stream,)
                    ).fetchone()
                    version = 0 if row is None else int(row[0])
                    if expected_version is not None and expected_version != version:
                        raise ConcurrencyError(
                            f"{self.name}: stream {stream!r} is at version {version}, not "
                            f"the expected {expected_version}; nothing was appended. Read "
                            "the stream again and retry with its current version"
                        )
                    if n:
                        params: list[Any] = []
                        add = params.extend
                        for pos, (ts, body) in enumerate(encoded, version):
                            add((stream, pos, ts, body))
                        for i in range(0, n, _ROWS_PER_INSERT):
                            chunk = params[4 * i : 4 * (i + _ROWS_PER_INSERT)]
                            conn.execute(_insert_sql(len(chunk) // 4), chunk)
                        conn.execute(
                            "INSERT INTO nova_streams (name, version, event_count) "
                            "VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                            "version = excluded.version, "
                            "event_count = nova_streams.event_count + excluded.event_count",
                            (stream, version + n, n),
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            self._events_appended += n
        if n:
            if self._checkpointer is not None:
                self._checkpointer.poke()
            self._signal.bump()
        return version + n

    def _page(self, stream: str, position: int, limit: int) -> tuple[list[Event], Sequence[int]]:
        position = min(position, MAX_MICROS)
        limit = min(limit, MAX_MICROS)
        if stream == ALL:
            rows = self._query(
                "SELECT gpos - 1, body FROM nova_events WHERE gpos > ? ORDER BY gpos LIMIT ?",
                (position, limit),
                "reading '$all'",
            )
        else:
            self._check_name(stream)
            rows = self._query(
                "SELECT pos, body FROM nova_events WHERE stream = ? AND pos >= ? ORDER BY pos LIMIT ?",
                (stream, position, limit),
                f"reading {stream!r}",
            )
        decode = self._decode
        return [decode(row[1]) for row in rows], [row[0] for row in rows]

    # Query plans. Each read pages through one index in its own order with keyset
    # pagination, so a page costs what it returns, never a sort of everything before it;
    # "+column" keeps SQLite from switching to another index for a filter term.
    # - all streams, time order: the ts index (its entries are ordered by (ts, gpos));
    # - all streams, append order: the gpos primary key;
    # - chosen streams: each stream through the (stream, pos) index, merged in Python.

    def _time_range(
        self, start: datetime | None, end: datetime | None, streams: frozenset[str] | None
    ) -> list[Event]:
        lo = MIN_MICROS if start is None else to_micros(start)
        hi = MAX_MICROS if end is None else to_micros(end)
        if streams is not None:
            rows = [
                row
                for stream in sorted(streams)
                for row in self._stream_rows(stream, MAX_MICROS, lo, hi, _PAGE)
            ]
            rows.sort(key=lambda row: (row[0], row[1]))  # (ts, gpos)
            return [self._decode(row[2]) for row in rows]
        sql = (
            "SELECT ts, gpos, body FROM nova_events INDEXED BY nova_events_ts"
            " WHERE ts >= ? AND ts < ? AND (ts, gpos) > (?, ?) ORDER BY ts, gpos LIMIT ?"
        )
        out: list[Event] = []
        key = (lo, 0)
        while True:
            page = self._query(sql, (lo, hi, *key, _PAGE), "reading a time range")
            out.extend(self._decode(row[2]) for row in page)
            if len(page) < _PAGE:
                return out
            key = (page[-1][0], page[-1][1])

    def _stream_rows(
        self, stream: str, stop: int, lo: int, hi: int, page: int
    ) -> Iterator[tuple[int, int, str]]:
        """(ts, gpos, body) of a stream's events with ``gpos <= stop`` and ``lo <= ts < hi``,
        in position (hence global) order, a page at a time."""
        self._check_name(stream)
        sql = (
            "SELECT pos, ts, gpos, body FROM nova_events WHERE stream = ? AND pos > ?"
            " AND +gpos <= ? AND +ts >= ? AND +ts < ? ORDER BY pos LIMIT ?"
        )
        pos = -1
        while True:
            rows = self._query(sql, (stream, pos, stop, lo, hi, page), f"reading {stream!r}")
            for row in rows:
                yield row[1], row[2], row[3]
            if len(rows) < page:
                return
            pos = rows[-1][0]

    def _replay(
        self, start: datetime | None, end: datetime | None, streams: frozenset[str] | None
    ) -> Iterator[Event]:
        stop = self._last_gpos()
        lo = MIN_MICROS if start is None else to_micros(start)
        hi = MAX_MICROS if end is None else to_micros(end)
        if streams is not None:
            return self._replay_streams(sorted(streams), stop, lo, hi)
        return self._replay_all(stop, lo, hi)

    def _replay_all(self, stop: int, lo: int, hi: int) -> Iterator[Event]:
        sql = (
            "SELECT gpos, body FROM nova_events WHERE gpos > ? AND gpos <= ?"
            " AND +ts >= ? AND +ts < ? ORDER BY gpos LIMIT ?"
        )
        last = 0
        decode = self._decode
        while True:
            rows = self._query(sql, (last, stop, lo, hi, _PAGE), "replaying")
            for row in rows:
                yield decode(row[1])
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def _replay_streams(self, streams: list[str], stop: int, lo: int, hi: int) -> Iterator[Event]:
        page = max(50, _PAGE // max(len(streams), 1))  # bounded memory for any number
        merged = heapq.merge(
            *(self._stream_rows(s, stop, lo, hi, page) for s in streams), key=lambda row: row[1]
        )  # by gpos
        decode = self._decode
        for row in merged:
            yield decode(row[2])

    def _stream_info(self, stream: str) -> StreamInfo | None:
        if stream == ALL:
            rows = self._query("SELECT COALESCE(SUM(event_count), 0) FROM nova_streams", (), "reading '$all'")
            count, version = int(rows[0][0]), self._last_gpos()
            first = self._query("SELECT ts FROM nova_events ORDER BY gpos LIMIT 1", (), "reading '$all'")
            last = self._query("SELECT ts FROM nova_events ORDER BY gpos DESC LIMIT 1", (), "reading '$all'")
        else:
            self._check_name(stream)
            action = f"reading stream {stream!r}"
            rows = self._query(
                "SELECT version, event_count FROM nova_streams WHERE name = ?", (stream,), action
            )
            if not rows:
                return None
            version, count = int(rows[0][0]), int(rows[0][1])
            first = self._query(
                "SELECT ts FROM nova_events WHERE stream = ? ORDER BY pos LIMIT 1", (stream,), action
            )
            last = self._query(
                "SELECT ts FROM nova_events WHERE stream = ? ORDER BY pos DESC LIMIT 1", (stream,), action
            )
        return StreamInfo(
            stream=stream,
            event_count=count,
            first_timestamp=from_micros(first[0][0]) if first else None,
            last_timestamp=from_micros(last[0][0]) if last else None,
            version=version,
        )

    def _stream_infos(self) -> list[StreamInfo]:
        rows = self._query(
            "SELECT s.name, s.version, s.event_count,"
            " (SELECT ts FROM nova_events e WHERE e.stream = s.name ORDER BY e.pos LIMIT 1),"
            " (SELECT ts FROM nova_events e WHERE e.stream = s.name"
            "  ORDER BY e.pos DESC LIMIT 1)"
            " FROM nova_streams s ORDER BY s.name",
            (),
            "listing streams",
        )
        return [
            StreamInfo(
                stream=name,
                event_count=count,
                first_timestamp=None if first is None else from_micros(first),
                last_timestamp=None if last is None else from_micros(last),
                version=version,
            )
            for name, version, count, first, last in rows
        ]

    def _totals(self) -> tuple[int, int]:
        rows = self._query(
            "SELECT COALESCE(SUM(event_count), 0), COUNT(*) FROM nova_streams", (), "counting events"
        )
        return int(rows[0][0]), int(rows[0][1])

    def _sweep_before(self, cutoff: datetime) -> int:
        micros = to_micros(cutoff)
        with self._wlock:
            if self._closed:
                self._raise_closed()
            conn = self._wconn
            with self._db("removing expired events"):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    counts = conn.execute(
                        "SELECT stream, COUNT(*) FROM nova_events INDEXED BY nova_events_ts"
                        " WHERE ts < ? GROUP BY stream",
                        (micros,),
                    ).fetchall()
                    if counts:
                        conn.execute(
                            "DELETE FROM nova_events INDEXED BY nova_events_ts WHERE ts < ?", (micros,)
                        )
                        conn.executemany(
                            "UPDATE nova_streams SET event_count = event_count - ? WHERE name = ?",
                            [(n, stream) for stream, n in counts],
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        return sum(n for _, n in counts)

    def _close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._wlock:
            if self._rconn is not self._wconn:
                with self._rlock:
                    self._rconn.close()
            self._wconn.close()
