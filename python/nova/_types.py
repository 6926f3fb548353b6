"""Enums, stats and report dataclasses shared by the components (frozen; see docs/api.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._core import Event


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


@dataclass(frozen=True)
class TopicConfig:
    """How a bus topic partitions, buffers and delivers events (see docs/api.md, Bus).

    ``ordering_key``: a metadata key (read in Rust, no Python call), a callable
    ``event -> str`` (called once per event), or None (the event id: no ordering).
    """

    partitions: int = 1
    buffer_size: int = 1000
    delivery_mode: DeliveryMode = DeliveryMode.AT_LEAST_ONCE
    max_concurrency: int = 10
    on_full: OnFull = OnFull.RAISE
    ordering_key: Any = None
    retention: float | None = None
    dedup_window: int = 100_000

    def __post_init__(self) -> None:
        from .errors import ValidationError

        for name in ("partitions", "buffer_size", "max_concurrency", "dedup_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"TopicConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.delivery_mode, DeliveryMode):
            raise ValidationError(
                f"TopicConfig.delivery_mode must be a nova.DeliveryMode, got {self.delivery_mode!r}"
            )
        if not isinstance(self.on_full, OnFull):
            raise ValidationError(f"TopicConfig.on_full must be a nova.OnFull, got {self.on_full!r}")
        if self.on_full in (OnFull.DROP_NEWEST, OnFull.DROP_OLDEST) and (
            self.delivery_mode is not DeliveryMode.AT_MOST_ONCE
        ):
            raise ValidationError(
                f"TopicConfig.on_full={self.on_full} drops events, which only an AT_MOST_ONCE topic "
                "allows; use OnFull.RAISE or OnFull.BLOCK, or delivery_mode=DeliveryMode.AT_MOST_ONCE"
            )
        key = self.ordering_key
        if key is not None and not isinstance(key, str) and not callable(key):
            raise ValidationError(
                "TopicConfig.ordering_key must be a metadata key (str), a callable event -> str, "
                f"or None, got {type(key).__name__}"
            )
        if self.retention is not None and (
            isinstance(self.retention, bool)
            or not isinstance(self.retention, (int, float))
            or not self.retention > 0  # also refuses nan
        ):
            raise ValidationError(
                f"TopicConfig.retention must be positive seconds or None, got {self.retention!r}"
            )
