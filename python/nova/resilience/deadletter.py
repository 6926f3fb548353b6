"""Dead letters: where an event goes after its last attempt failed (see docs/api.md, Resilience:
Dead letters).

A :class:`DeadLetterQueue` keeps :class:`DeadLetter` entries, oldest first, in memory or, given a
path, in an SQLite file that survives a restart. ``redrive`` hands entries back to an Emitter
(``emit_async``) or a Bus (``publish(entry.topic, event)``) and removes each one handed over.

SQLite storage: the event is stored with ``event.to_json()``. If its ``data`` is not
JSON-serialisable, ``repr(data)`` is stored instead and the event read back carries that string
as its ``data`` (its id, type, metadata and timestamp are kept exactly). An event of a
``nova.Event`` subclass comes back as that subclass when the class is importable from an
already-imported module, else as ``nova.Event``.

A dead letter is never lost to its text: a string SQLite cannot take as UTF-8 (an error message,
listener name, topic or error type holding a lone surrogate, such as ``"boom \\ud800"``) is
stored as the BLOB of its ``surrogatepass`` UTF-8 bytes and read back as the same ``str``, so
the entry round-trips exactly (and stays distinct from the literal text ``"\\ud800"``). Other
text is stored as TEXT, readable by any SQLite tool. An error whose ``str()`` raises is
recorded with a description of that failure as its message.

Any SQLite failure (a read-only or full disk, a locked or damaged file) raises
:class:`~nova.StoreError` naming the queue, the file and what to do, with the ``sqlite3``
error as ``__cause__``.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .. import _core  # type: ignore[attr-defined, unused-ignore]
from .._closing import ClosesOnExit
from ..errors import ClosedError, StoreError, ValidationError
from ._util import error_text

__all__ = ["DeadLetterConfig", "DeadLetter", "DeadLetterQueue"]

Event = Any  # nova.Event (the Rust class); kept as Any for the type checker


@dataclass(frozen=True)
class DeadLetter:
    """One event that exhausted its attempts.

    ``error_type`` is the last error's class ``__qualname__``, ``topic`` is ``None`` for an
    emitter, ``failed_at`` is timezone-aware UTC.
    """

    event: Event
    error_type: str
    error_message: str
    attempts: int
    listener: str
    topic: str | None
    failed_at: datetime

    @classmethod
    def from_error(
        cls,
        event: Event,
        error: BaseException,
        *,
        attempts: int,
        listener: str,
        topic: str | None = None,
        failed_at: datetime | None = None,
    ) -> DeadLetter:
        """An entry for ``event`` that failed with ``error``, stamped now (UTC). An error
        whose ``str()`` raises gets a message saying so (the entry is never lost to it)."""
        return cls(
            event=event,
            error_type=type(error).__qualname__,
            error_message=error_text(error),
            attempts=attempts,
            listener=listener,
            topic=topic,
            failed_at=failed_at if failed_at is not None else datetime.now(timezone.utc),
        )


@dataclass(frozen=True)
class DeadLetterConfig:
    """Where a listener's finally failed events go: ``handler(event, exc)`` and/or ``queue``."""

    enabled: bool = True
    handler: Callable[[Event, BaseException], Any] | None = None
    queue: DeadLetterQueue | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValidationError(f"DeadLetterConfig.enabled must be a bool, got {self.enabled!r}")
        if self.handler is not None and not callable(self.handler):
            raise ValidationError(
                f"DeadLetterConfig.handler must be a callable (event, exc) or None, got {self.handler!r}"
            )
        if self.queue is not None and not isinstance(self.queue, DeadLetterQueue):
            raise ValidationError(
                f"DeadLetterConfig.queue must be a nova.DeadLetterQueue or None, got {self.queue!r}"
            )


# -- storage ----------------------------------------------------------------------------------

_SCHEMA_VERSION = 1
_APP_TAG = "nova-dead-letters"


def _event_class_path(event: Event) -> str | None:
    cls = type(event)
    if cls is _core.Event:
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve_event_class(path: str | None) -> Any:
    """The stored subclass when its module is already imported (never imports anything)."""
    if not path:
        return _core.Event
    module_name, _, qualname = path.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        if obj is None:
            break
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, _core.Event):
        return obj
    return _core.Event


def _event_id(event: Event) -> str:
    return str(getattr(event, "id", "?"))


def _encode_event(event: Event) -> tuple[str, bool]:
    """(JSON text, whether data was replaced by its repr)."""
    try:
        return str(event.to_json()), False
    except (ValidationError, TypeError, ValueError):
        doc = event.to_dict()
        doc["data"] = repr(doc.get("data"))
        return json.dumps(doc), True


def _to_db(text: str | None) -> str | bytes | None:
    """A str as SQLite can store it: itself, or for text that is not valid UTF-8 (lone
    surrogates) the BLOB of its ``surrogatepass`` UTF-8 bytes (see :func:`_from_db`)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def _from_db(value: Any) -> Any:
    """The str :func:`_to_db` stored (a BLOB is the surrogatepass UTF-8 of the text)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return value


def _is_read_only(exc: Exception) -> bool:
    name = str(getattr(exc, "sqlite_errorname", ""))
    return name.startswith("SQLITE_READONLY") or "readonly" in str(exc)


class _MemoryBackend:
    def __init__(self) -> None:
        self._entries: list[tuple[int, DeadLetter]] = []
        self._seq = 0

    def add(self, entry: DeadLetter) -> None:
        self._seq += 1
        self._entries.append((self._seq, entry))

    def oldest(self, limit: int | None) -> list[tuple[int, DeadLetter]]:
        return list(self._entries if limit is None else self._entries[:limit])

    def count(self) -> int:
        return len(self._entries)

    def remove(self, key: int) -> None:
        for i, (seq, _entry) in enumerate(self._entries):
            if seq == key:
                del self._entries[i]
                return

    def purge(self) -> int:
        n = len(self._entries)
        self._entries.clear()
        return n

    def close(self) -> None:
        pass


class _SqliteBackend:
    def __init__(self, path: str, name: str = "dead-letters") -> None:
        self.path = path
        self.name = name
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        except sqlite3.Error as exc:
            raise StoreError(
                f"dead-letter queue '{name}': cannot open {path!r}: {exc}. Check that the "
                "directory exists and is writable"
            ) from exc
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise self._error("opening", exc) from exc
            raise StoreError(
                f"dead-letter queue '{name}': {path!r} is not a Nova dead-letter database "
                f"({exc}); give a new path or delete the file"
            ) from exc
        except BaseException:
            self._db.close()
            raise

    def _error(self, action: str, exc: Exception) -> StoreError:
        why = str(exc)
        if len(why) > 200:
            why = why[:200] + "..."
        if _is_read_only(exc):
            todo = (
                "the file (or its directory, for the WAL files) is read-only: make both "
                "writable by this process, or give another path"
            )
        elif isinstance(exc, sqlite3.OperationalError):
            todo = "check the disk has room and no other process holds the file locked, then retry"
        else:
            todo = "if the file is damaged, move it aside and give a new path"
        return StoreError(
            f"dead-letter queue '{self.name}': SQLite failed while {action} in {self.path!r}: {why}; {todo}"
        )

    @contextmanager
    def _sql(self, action: str) -> Iterator[None]:
        """SQLite errors (and a connection closed under us) as StoreError."""
        try:
            yield
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise self._error(action, exc) from exc

    def _setup(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS nova_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            rows = dict(db.execute("SELECT key, value FROM nova_meta").fetchall())
            if not rows:
                tables = {
                    r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
                }
                if tables - {"nova_meta"}:
                    raise StoreError(
                        f"dead-letter queue: {self.path!r} holds other tables "
                        f"({', '.join(sorted(tables - {'nova_meta'}))}); give a new path"
                    )
                db.execute(
                    "INSERT INTO nova_meta (key, value) VALUES (?, ?), (?, ?)",
                    ("app", _APP_TAG, "schema_version", str(_SCHEMA_VERSION)),
                )
            elif rows.get("app") != _APP_TAG:
                raise StoreError(f"dead-letter queue: {self.path!r} is not a Nova dead-letter database")
            elif rows.get("schema_version") != str(_SCHEMA_VERSION):
                raise StoreError(
                    f"dead-letter queue: {self.path!r} has schema version "
                    f"{rows.get('schema_version')!r}, this Nova reads version {_SCHEMA_VERSION}"
                )
            db.execute(
                "CREATE TABLE IF NOT EXISTS dead_letters ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " event TEXT NOT NULL,"
                " event_class TEXT,"
                " data_is_repr INTEGER NOT NULL DEFAULT 0,"
                " error_type TEXT NOT NULL,"
                " error_message TEXT NOT NULL,"
                " attempts INTEGER NOT NULL,"
                " listener TEXT NOT NULL,"
                " topic TEXT,"
                " failed_at TEXT NOT NULL)"
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def add(self, entry: DeadLetter) -> None:
        text, is_repr = _encode_event(entry.event)
        with self._sql(f"adding a dead letter for event {_event_id(entry.event)}"):
            self._db.execute(
                "INSERT INTO dead_letters (event, event_class, data_is_repr, error_type,"
                " error_message, attempts, listener, topic, failed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _to_db(text),
                    _to_db(_event_class_path(entry.event)),
                    int(is_repr),
                    _to_db(entry.error_type),
                    _to_db(entry.error_message),
                    entry.attempts,
                    _to_db(entry.listener),
                    _to_db(entry.topic),
                    entry.failed_at.astimezone(timezone.utc).isoformat(),
                ),
            )

    def oldest(self, limit: int | None) -> list[tuple[int, DeadLetter]]:
        sql = (
            "SELECT seq, event, event_class, error_type, error_message, attempts, listener,"
            " topic, failed_at FROM dead_letters ORDER BY seq"
        )
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        with self._sql("reading dead letters"):
            rows = self._db.execute(sql, params).fetchall()
        out = []
        for seq, text, cls_path, etype, emsg, attempts, listener, topic, failed in rows:
            cls = _resolve_event_class(_from_db(cls_path))
            event = cls.from_json(_from_db(text))
            out.append(
                (
                    seq,
                    DeadLetter(
                        event,
                        _from_db(etype),
                        _from_db(emsg),
                        attempts,
                        _from_db(listener),
                        _from_db(topic),
                        datetime.fromisoformat(failed),
                    ),
                )
            )
        return out

    def count(self) -> int:
        with self._sql("counting dead letters"):
            return int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

    def remove(self, key: int) -> None:
        with self._sql("removing a redriven dead letter"):
            self._db.execute("DELETE FROM dead_letters WHERE seq = ?", (key,))

    def purge(self) -> int:
        with self._sql("purging dead letters"):
            return int(self._db.execute("DELETE FROM dead_letters").rowcount)

    def close(self) -> None:
        self._db.close()


class DeadLetterQueue(ClosesOnExit):
    """Dead letters in memory (``path=None``) or in an SQLite file that survives a restart.

    Thread-safe. Several listeners (and several processes, for a file) may share one queue.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, name: str = "dead-letters") -> None:
        self.name = name
        self.path = os.fspath(path) if path is not None else None
        self._lock = threading.RLock()
        self._closed = False
        self._backend: _MemoryBackend | _SqliteBackend = (
            _MemoryBackend() if self.path is None else _SqliteBackend(self.path, name)
        )

    def _check(self) -> None:
        if self._closed:
            raise ClosedError(f"dead-letter queue '{self.name}' is closed; open a new one")

    def add(self, entry: DeadLetter) -> None:
        """Append an entry (the listener manager does this after a final failure)."""
        if not isinstance(entry, DeadLetter):
            raise ValidationError(f"DeadLetterQueue.add takes a nova.DeadLetter, got {entry!r}")
        with self._lock:
            self._check()
            self._backend.add(entry)

    def list(self, limit: int | None = None) -> builtins.list[DeadLetter]:
        """The entries, oldest first (at most ``limit``)."""
        _check_limit(limit)
        with self._lock:
            self._check()
            return [entry for _key, entry in self._backend.oldest(limit)]

    def __iter__(self) -> Iterator[DeadLetter]:
        return iter(self.list())

    def count(self) -> int:
        with self._lock:
            self._check()
            return self._backend.count()

    def __len__(self) -> int:
        return self.count()

    def redrive(self, target: Any, *, limit: int | None = None) -> int:
        """Re-emit the oldest ``limit`` entries (all by default) and remove each one handed
        over: ``target.publish(entry.topic, event)`` for a Bus (an entry with a topic, a
        target with ``publish``), else ``target.emit_async(event)``. If handing one over
        raises (``BufferFull``, a closed target...), it and the later entries stay queued and
        the error propagates. Returns how many were handed over."""
        _check_limit(limit)
        publish = getattr(target, "publish", None)
        emit_async = getattr(target, "emit_async", None)
        if not callable(publish) and not callable(emit_async):
            raise ValidationError(
                f"DeadLetterQueue.redrive: target {target!r} has neither publish(topic, event) "
                "nor emit_async(event); pass a nova.Bus or a nova.Emitter"
            )
        done = 0
        with self._lock:
            self._check()
            for key, entry in self._backend.oldest(limit):
                if entry.topic is not None and callable(publish):
                    publish(entry.topic, entry.event)
                elif callable(emit_async):
                    emit_async(entry.event)
                else:
                    raise ValidationError(
                        f"DeadLetterQueue.redrive: entry for event {entry.event.id} has no topic "
                        f"and target {target!r} has no emit_async(event)"
                    )
                self._backend.remove(key)
                done += 1
        return done

    def purge(self) -> int:
        """Remove every entry; returns how many there were."""
        with self._lock:
            self._check()
            return self._backend.purge()

    def close(self, timeout: float | None = None) -> None:
        """Close the queue (idempotent); later calls raise :class:`~nova.ClosedError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._backend.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        where = "memory" if self.path is None else repr(self.path)
        return f"DeadLetterQueue({where}, name={self.name!r})"


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValidationError(f"limit must be an integer >= 0 or None, got {limit!r}")
