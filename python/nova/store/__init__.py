"""Event stores (see docs/api.md, Event store): append-only streams of events you can read,
replay and follow live.

- :class:`MemoryStore` keeps events in memory, bounded by limits.
- :class:`SqliteStore` keeps them in an SQLite file (WAL mode), surviving a killed process.

Both have the same API: ``append``, ``read``, ``read_stream``, ``read_time_range``,
``replay``, ``subscribe``, ``subscribe_async``, ``stream_info``, ``streams``, ``stats`` and
``close``; ``"$all"`` names every stream together in append order. See docs/store.md.
"""

from __future__ import annotations

from ._base import ALL, BaseStore, Cursor, StoreStats, StreamInfo
from ._subscription import AsyncStoreSubscription, StoreSubscription
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = [
    "MemoryStore",
    "SqliteStore",
    "Cursor",
    "StreamInfo",
    "StoreStats",
    "BaseStore",
    "StoreSubscription",
    "AsyncStoreSubscription",
    "ALL",
]
