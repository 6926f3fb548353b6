"""Enums, stats and report dataclasses shared by the components (frozen, per API section 1)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._core import Event

__all__ = [
    "OnFull", "DeliveryMode", "Health", "ShutdownReport", "StopReport", "EmitterStats",
    "BusStats", "PoolStats", "TopicInfo",
]


class OnFull(enum.Enum):
    """What ``emit_async``/``publish`` do when the bounded buffer is full."""

    RAISE = "raise"
    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


class DeliveryMode(enum.Enum):
    """Per-topic delivery guarantee of the bus."""

    AT_MOST_ONCE = "at_most_once"
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class Health(enum.Enum):
    """Health of a listener over the last minute, from best to worst."""

    HEALTHY = 0
    DEGRADED = 1
    CIRCUIT_OPEN = 2
    UNHEALTHY = 3

    def __str__(self) -> str:
        return self.name.lower()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Health):
            return NotImplemented
        return self.value < other.value


@dataclass(frozen=True)
class ShutdownReport:
    """What a shutdown did: events processed during it, events never handed to a listener,
    and listener calls still running at the deadline."""

    drained: int = 0
    undelivered: list[Event] = field(default_factory=list)
    in_flight: int = 0


@dataclass(frozen=True)
class StopReport:
    """Events that waited for a retry and were neither processed nor dead-lettered."""

    undelivered: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class EmitterStats:
    events_emitted: int
    events_processed: int
    failed_events: int
    queued_events: int
    dropped_events: int
    active_listeners: int
    middleware_errors: int


@dataclass(frozen=True)
class BusStats:
    events_published: int
    events_processed: int
    failed_events: int
    queued_events: int
    dropped_events: int
    active_topics: int
    active_subscribers: int


@dataclass(frozen=True)
class PoolStats:
    workers: int
    busy: int
    queued: int
    completed: int


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    delivery_mode: DeliveryMode
    subscribers: int
    queued: int
