"""WAL checkpoints off the append path, for :class:`~nova.store.SqliteStore`.

In WAL mode SQLite appends committed pages to the ``-wal`` file and, by default, the commit
that makes the WAL pass 1,000 pages copies them back into the database and fsyncs it — a
pause of milliseconds inside whichever ``append`` drew the short straw. Here a daemon thread
with its own connection runs PASSIVE checkpoints (which never block writers or readers)
shortly after appends, with the GIL released while SQLite works. The writer keeps an
automatic checkpoint at a higher mark as a backstop, so the WAL stays bounded even if this
thread falls behind.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

_log = logging.getLogger("nova")

# Pages in the WAL at which the writer checkpoints by itself (backstop; 4 KiB pages).
BACKSTOP_PAGES = 10_000


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` at most every ``interval`` seconds while
    :meth:`poke` is being called (after each append)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str, interval: float = 0.1) -> None:
        self._connect: Callable[[], sqlite3.Connection] | None = connect
        self._interval = interval
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poke(self) -> None:
        """Note that the WAL grew."""
        if not self._dirty.is_set():
            self._dirty.set()

    def halt(self) -> None:
        """Ask the thread to stop, without waiting for it."""
        self._stopping.set()
        self._dirty.set()

    def stop(self) -> None:
        """Stop the thread, letting a checkpoint in progress finish (idempotent)."""
        self.halt()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        connect, self._connect = self._connect, None  # hold no reference to the store
        try:
            assert connect is not None
            conn = connect()
        except Exception:  # the writer's backstop checkpoints instead
            _log.exception("nova store: cannot open a checkpoint connection")
            return
        del connect
        try:
            while True:
                self._dirty.wait()
                # Let appends accumulate: one checkpoint covers many of them.
                if self._stopping.wait(self._interval):
                    return
                self._dirty.clear()
                if self._stopping.is_set():  # halt() came after the wait: its wake-up was cleared
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # busy or damaged: the writer's backstop remains
                    _log.debug("nova store: WAL checkpoint failed", exc_info=True)
        finally:
            conn.close()
