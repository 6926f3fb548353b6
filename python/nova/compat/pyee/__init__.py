"""A drop-in replacement for pyee 13 whose emitters dispatch through Nova's Rust core.

Swap ``from pyee import EventEmitter`` for ``from nova.compat.pyee import EventEmitter`` (or
``pyee.asyncio`` / ``pyee.executor`` for ``nova.compat.pyee.asyncio`` / ``.executor``); the
three emitter classes are also importable from here. See docs/migration.md.
"""

from .asyncio import AsyncIOEventEmitter
from .base import EventEmitter, Handler, PyeeError, PyeeException
from .executor import ExecutorEventEmitter

__all__ = [
    "AsyncIOEventEmitter",
    "EventEmitter",
    "ExecutorEventEmitter",
    "Handler",
    "PyeeError",
    "PyeeException",
]
