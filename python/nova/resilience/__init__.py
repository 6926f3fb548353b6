"""Resilience for listeners: retries, timeouts, concurrency limits, circuit breakers, dead
letters, health and idempotency (see docs/api.md, Resilience).

Everything here is re-exported from :mod:`nova`; the modules are
:mod:`~nova.resilience.retry`, :mod:`~nova.resilience.circuit`,
:mod:`~nova.resilience.deadletter`, :mod:`~nova.resilience.manager` (the manager),
:mod:`~nova.resilience.managed_listener` (one listener under its policy),
:mod:`~nova.resilience.idempotent` and :mod:`~nova.resilience.clock` (the injectable clock).
"""

from __future__ import annotations

from .circuit import CircuitBreaker, CircuitConfig, CircuitState
from .clock import SYSTEM_CLOCK, Clock, ManualClock, SystemClock
from .deadletter import DeadLetter, DeadLetterConfig, DeadLetterQueue
from .idempotent import IdempotentListener, MemorySeenSet, SeenSet, SqliteSeenSet, idempotent
from .manager import (
    DURATION_BOUNDS,
    ListenerConfig,
    ListenerManager,
    ManagedListener,
    ManagerStats,
)
from .retry import Backoff, RetryPolicy

__all__ = [
    "RetryPolicy",
    "Backoff",
    "CircuitConfig",
    "DeadLetterConfig",
    "ListenerConfig",
    "ListenerManager",
    "ManagedListener",
    "DeadLetterQueue",
    "DeadLetter",
    "ManagerStats",
    "idempotent",
    # extras of this package (not re-exported from nova)
    "CircuitBreaker",
    "CircuitState",
    "Clock",
    "SystemClock",
    "SYSTEM_CLOCK",
    "ManualClock",
    "SeenSet",
    "MemorySeenSet",
    "SqliteSeenSet",
    "IdempotentListener",
    "DURATION_BOUNDS",
]
