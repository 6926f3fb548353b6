"""Nova: a fast, reliable event system for Python services, with a Rust core.

Emit events to listeners (:class:`Emitter`), route them through partitioned topics
(:class:`Bus`), survive failures with retries, circuit breakers and dead letters, keep them in
a store you can replay, and watch it all in Prometheus and OpenTelemetry.
"""

from __future__ import annotations

import atexit as _atexit
import os as _os

from typing import TYPE_CHECKING, Any

from . import _core
from ._core import Event, Listener, Subscription, WorkerPool
from .errors import (
    BackendError,
    BufferFull,
    BusClosed,
    CircuitOpenError,
    ClosedError,
    ConcurrencyError,
    EmitterClosed,
    ListenerError,
    ListenerNotFound,
    ListenerTimeout,
    MiddlewareError,
    NovaError,
    PermanentError,
    PoolClosed,
    RetryableError,
    RetryLimitExceeded,
    StoreClosed,
    StoreError,
    StoreFull,
    StreamNotFound,
    TopicNotFound,
    ValidationError,
)

# Eager, and light: the name `middleware` is also the submodule's, which importing it
# anywhere would bind here over a lazily loaded function.
from .middleware import Middleware, middleware

if TYPE_CHECKING:
    from ._types import (
        BusStats,
        DeliveryMode,
        EmitterStats,
        Health,
        OnFull,
        PoolStats,
        ShutdownReport,
        StopReport,
        TopicConfig,
        TopicInfo,
    )
    from .bus import Bus
    from .emitter import Emitter
    from .lifecycle import run, shutdown
    from .resilience import (
        Backoff,
        CircuitConfig,
        DeadLetter,
        DeadLetterConfig,
        DeadLetterQueue,
        ListenerConfig,
        ListenerManager,
        ManagedListener,
        ManagerStats,
        RetryPolicy,
    )
    from .resilience.idempotent import idempotent
    from .store import Cursor, MemoryStore, SqliteStore, StoreStats, StreamInfo
    from .validation import strict_type_names

# Everything else loads on first use (PEP 562), so that a bare `import nova` does not pay for
# asyncio, dataclasses, sqlite3, ssl, the store and the resilience policies: a CLI, a
# serverless cold start and every test run import it. Name -> the module that defines it.
_LAZY = {
    **dict.fromkeys(
        (
            "BusStats",
            "DeliveryMode",
            "EmitterStats",
            "Health",
            "OnFull",
            "PoolStats",
            "ShutdownReport",
            "StopReport",
            "TopicConfig",
            "TopicInfo",
        ),
        "._types",
    ),
    "Bus": ".bus",
    "Emitter": ".emitter",
    "run": ".lifecycle",
    "shutdown": ".lifecycle",
    **dict.fromkeys(
        (
            "Backoff",
            "CircuitConfig",
            "DeadLetter",
            "DeadLetterConfig",
            "DeadLetterQueue",
            "ListenerConfig",
            "ListenerManager",
            "ManagedListener",
            "ManagerStats",
            "RetryPolicy",
            "idempotent",
        ),
        ".resilience",
    ),
    **dict.fromkeys(("Cursor", "MemoryStore", "SqliteStore", "StoreStats", "StreamInfo"), ".store"),
    "strict_type_names": ".validation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nova' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

# Native workers must be stopped before the interpreter finalises: the exit hook lets queued
# work finish (5 s), then stops every native thread from taking the GIL and joins the workers.
_atexit.register(_core._at_exit)
# A forked child must not make its parent's event ids.
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_core._after_fork_in_child)

# The one list of the package's public names, errors and enums included: type checkers read
# re-exports only from a literal list here, so nova.errors and nova._types do not repeat it.
__all__ = [
    "Event",
    "Listener",
    "Subscription",
    "Middleware",
    "middleware",
    "WorkerPool",
    "Emitter",
    "Bus",
    "TopicConfig",
    "OnFull",
    "DeliveryMode",
    "Health",
    "ShutdownReport",
    "StopReport",
    "EmitterStats",
    "BusStats",
    "PoolStats",
    "TopicInfo",
    "shutdown",
    "run",
    "strict_type_names",
    "ListenerManager",
    "ManagedListener",
    "ListenerConfig",
    "RetryPolicy",
    "Backoff",
    "CircuitConfig",
    "DeadLetterConfig",
    "DeadLetterQueue",
    "DeadLetter",
    "ManagerStats",
    "idempotent",
    "MemoryStore",
    "SqliteStore",
    "Cursor",
    "StreamInfo",
    "StoreStats",
    "NovaError",
    "ValidationError",
    "BufferFull",
    "ClosedError",
    "EmitterClosed",
    "BusClosed",
    "StoreClosed",
    "PoolClosed",
    "ListenerError",
    "MiddlewareError",
    "ListenerTimeout",
    "CircuitOpenError",
    "RetryLimitExceeded",
    "TopicNotFound",
    "ListenerNotFound",
    "StreamNotFound",
    "ConcurrencyError",
    "StoreFull",
    "StoreError",
    "BackendError",
    "RetryableError",
    "PermanentError",
]
