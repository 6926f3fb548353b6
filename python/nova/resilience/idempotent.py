"""``nova.idempotent``: a listener wrapper that processes each event (key) once.

The seed's ``IsProcessed`` / ``MarkProcessed`` pattern, done once for everyone: the wrapper asks
the seen-set whether the event's key (its id by default) was already processed successfully;
if so the event is skipped, else the listener runs and the key is marked only when it
succeeded (an ``on_error`` that handles the error counts as success). A failed attempt is not
marked, so a retry or a redelivery runs it again.

Seen-sets: :class:`MemorySeenSet` (the default; bounded, it forgets the oldest keys past
``max_size`` = 100 000, like the bus's ``dedup_window``) or :class:`SqliteSeenSet` (a path;
unbounded and durable across restarts). Any object with ``__contains__(key)`` and
``add(key)`` works too. The returned listener exposes its seen-set as ``.seen``. Within one process, duplicates arriving at the same time on several
threads run one after the other (the second sees the key marked and is skipped); async
handlers are not serialised that way.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Protocol, runtime_checkable

from .. import _aio
from .. import _core  # type: ignore[attr-defined, unused-ignore]
from .._closing import ClosesOnExit
from ..errors import StoreError, ValidationError
from ._util import as_listener

__all__ = ["idempotent", "IdempotentListener", "SeenSet", "MemorySeenSet", "SqliteSeenSet"]


@runtime_checkable
class SeenSet(Protocol):
    """Keys of events already processed successfully."""

    def __contains__(self, key: object) -> bool: ...

    def add(self, key: Any) -> None: ...


class MemorySeenSet:
    """Seen keys in memory; past ``max_size`` (None: unbounded) the oldest are forgotten."""

    def __init__(self, max_size: int | None = 100_000) -> None:
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1
        ):
            raise ValidationError(f"MemorySeenSet.max_size must be an integer >= 1 or None, got {max_size!r}")
        self.max_size = max_size
        self._keys: OrderedDict[Hashable, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    def add(self, key: Hashable) -> None:
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            if self.max_size is not None:
                while len(self._keys) > self.max_size:
                    self._keys.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._keys.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)

    def close(self) -> None:
        pass


class SqliteSeenSet(ClosesOnExit):
    """Seen keys in an SQLite file (keys are stored as ``str(key)``); survives a restart."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS nova_seen (key TEXT PRIMARY KEY, seen_at REAL NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"idempotent: {self.path!r} is not a usable seen-set database: {exc}") from exc
        self._closed = False

    def __contains__(self, key: object) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM nova_seen WHERE key = ?", (str(key),)).fetchone()
        return row is not None

    def add(self, key: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO nova_seen (key, seen_at) VALUES (?, ?)", (str(key), time.time())
            )

    def discard(self, key: Any) -> None:
        with self._lock:
            self._db.execute("DELETE FROM nova_seen WHERE key = ?", (str(key),))

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM nova_seen")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM nova_seen").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


class _KeyLocks:
    """One lock per key being processed, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[Hashable, list[Any]] = {}

    def acquire(self, key: Hashable) -> threading.Lock:
        with self._lock:
            slot = self._locks.get(key)
            if slot is None:
                slot = self._locks[key] = [threading.Lock(), 0]
            slot[1] += 1
            lock: threading.Lock = slot[0]
        lock.acquire()
        return lock

    def release(self, key: Hashable, lock: threading.Lock) -> None:
        lock.release()
        with self._lock:
            slot = self._locks.get(key)
            if slot is not None:
                slot[1] -= 1
                if slot[1] <= 0:
                    del self._locks[key]


def _default_key(event: Any) -> Any:
    return event.id


def idempotent(
    listener: Any,
    *,
    key: Callable[[Any], Hashable] = _default_key,
    seen: SeenSet | str | os.PathLike[str] | None = None,
) -> IdempotentListener:
    """Wrap ``listener`` (a callable or ``nova.Listener``) so an event whose ``key(event)`` was
    already processed successfully is skipped. Returns a ``nova.Listener`` with the wrapped
    listener's name; ``seen`` is a seen-set object, an SQLite path, or None (in memory)."""
    if not callable(key):
        raise ValidationError(f"idempotent: key must be a callable event -> key, got {key!r}")
    store: Any
    if seen is None:
        store = MemorySeenSet()
    elif isinstance(seen, (str, os.PathLike)):
        store = SqliteSeenSet(seen)
    elif hasattr(seen, "__contains__") and callable(getattr(seen, "add", None)):
        store = seen
    else:
        raise ValidationError(
            "idempotent: seen must be None (memory), an SQLite path, or an object with "
            f"__contains__(key) and add(key); got {seen!r}"
        )
    inner = as_listener(listener)
    handler = inner.handler
    on_error = inner.on_error

    if _aio.is_async(handler):

        async def run_async(event: Any) -> Any:
            k = key(event)
            if k in store:
                return None
            try:
                result = await handler(event)
            except Exception as exc:
                if on_error is None:
                    raise
                handled = on_error(event, exc)
                if _aio.is_async(on_error):
                    await handled
                result = None
            store.add(k)
            return result

        wrapper: Callable[[Any], Any] = run_async
    else:
        locks = _KeyLocks()

        def run(event: Any) -> Any:
            k = key(event)
            if k in store:
                return None
            lock = locks.acquire(k)
            try:
                if k in store:
                    return None
                try:
                    result = handler(event)
                except Exception as exc:
                    if on_error is None:
                        raise
                    on_error(event, exc)
                    result = None
                store.add(k)
                return result
            finally:
                locks.release(k, lock)

        wrapper = run

    name = str(inner.name)
    wrapper.__qualname__ = name
    wrapper.__name__ = name
    wrapped = IdempotentListener(name, wrapper)
    wrapped.seen = store
    wrapped.wrapped = inner
    return wrapped


class IdempotentListener(_core.Listener):  # type: ignore[misc, unused-ignore]
    """A ``nova.Listener`` that also exposes its seen-set (``.seen``) and the listener it
    wraps (``.wrapped``)."""

    seen: Any
    wrapped: Any
