"""``nova.Bus``: the Rust bus plus its Python conveniences (topic configs, managed
subscriptions, asyncio, replay from the store, delegation to a distributed backend)."""

from __future__ import annotations

import warnings

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from . import _aio, _core
from ._closing import ClosesOnExit
from ._managed import managed, with_manager_metrics
from ._types import DeliveryMode, TopicConfig
from .errors import ValidationError

__all__ = ["Bus"]

F = TypeVar("F", bound=Callable[..., Any])
_FIELDS = {f.name for f in dataclasses.fields(TopicConfig)}


class Bus(ClosesOnExit, _core.Bus):
    """Topics of ordered partitions (see docs/api.md, Bus). With ``backend=`` its topics live in
    that backend (``nova.backends``), decided here, once: the bus made is then a
    ``nova.backends._remote.RemoteTopics``, which hands every topic call to the backend."""

    def __new__(cls, *args: Any, backend: Any = None, **kwargs: Any) -> Bus:
        if backend is not None:
            from .backends._remote import remote_class

            cls = remote_class(cls)
        bus: Bus = super().__new__(cls, *args, backend=backend, **kwargs)
        return bus

    def _close_on_exit(self) -> object:
        """``with`` ends with ``shutdown()`` (its default 30 s deadline)."""
        return self.shutdown()

    # -- topics ------------------------------------------------------------------------------

    def _config(self, config: TopicConfig | None, fields: dict[str, Any]) -> TopicConfig:
        unknown = set(fields) - _FIELDS
        if unknown:
            raise ValidationError(
                f"create_topic: unknown TopicConfig field(s) {sorted(unknown)}; valid: {sorted(_FIELDS)}"
            )
        if config is not None:
            if not isinstance(config, TopicConfig):
                raise ValidationError(
                    f"create_topic: config must be a nova.TopicConfig, got {type(config).__name__}"
                )
            return dataclasses.replace(config, **fields) if fields else config
        partitions, buffer_size, mode = self._defaults
        merged: dict[str, Any] = {"partitions": partitions, "buffer_size": buffer_size, "delivery_mode": mode}
        merged.update(fields)
        return TopicConfig(**merged)

    def create_topic(self, name: str, config: TopicConfig | None = None, **fields: Any) -> None:
        """Create a topic; fields not given take the bus defaults. Re-creating it with the same
        config is a no-op; with another config, a ValidationError."""
        if not isinstance(name, str) or not name:
            raise ValidationError(f"create_topic: name must be a non-empty str, got {name!r}")
        self._create_topic(name, self._config(config, fields))

    def topic_config(self, name: str) -> TopicConfig | None:
        """The config a topic was created with (None if absent)."""
        return self._topic_config(name)

    # -- subscriptions -----------------------------------------------------------------------

    def _managed(self, topic: str | None, listener: Any, config: Any) -> Any:
        from .resilience import ManagedListener

        mode = self._mode_of(topic)
        if mode is DeliveryMode.AT_MOST_ONCE:
            policy = listener.config if isinstance(listener, ManagedListener) else config
            attempts = getattr(getattr(policy, "retry", None), "max_attempts", 1)
            if isinstance(attempts, int) and attempts > 1:
                warnings.warn(
                    f"topic {topic!r} is AT_MOST_ONCE: a failing event gets exactly one attempt, "
                    f"so this subscriber's retry policy ({attempts} attempts) is not used; "
                    "make the topic AT_LEAST_ONCE to retry",
                    UserWarning,
                    stacklevel=3,
                )
        if isinstance(listener, ManagedListener):
            return listener  # registered by the user with its own policy
        if config is None:
            if mode is DeliveryMode.AT_MOST_ONCE:
                return listener
            from .resilience import ListenerConfig

            config = ListenerConfig()
        return managed(self, listener, config)

    def _mode_of(self, topic: str | None) -> DeliveryMode:
        cfg = self.topic_config(topic) if topic is not None else None
        if cfg is not None:
            return cfg.delivery_mode
        mode: DeliveryMode = self._defaults[2]
        return mode

    def subscribe(self, topic: str, listener: Any, *, config: Any = None) -> _core.Subscription:
        """Subscribe to a topic (created with the defaults if absent). Without ``config`` a
        subscriber of an AT_LEAST_ONCE or EXACTLY_ONCE topic gets ``ListenerConfig()``."""
        if not isinstance(topic, str) or not topic:
            raise ValidationError(f"subscribe: topic must be a non-empty str, got {topic!r}")
        if self.topic_config(topic) is None:
            self.create_topic(topic)
        return self._subscribe(topic, self._managed(topic, listener, config))

    def subscribe_pattern(self, regex: str, listener: Any, *, config: Any = None) -> _core.Subscription:
        """Subscribe to every topic, existing or created later, whose whole name matches
        ``regex`` (a linear-time engine: no catastrophic backtracking)."""
        if not isinstance(regex, str):
            raise ValidationError(f"subscribe_pattern: regex must be a str, got {type(regex).__name__}")
        return self._subscribe_pattern(regex, self._managed(None, listener, config))

    def on(self, topic: str, **kwargs: Any) -> Callable[[F], F]:
        """Decorator form of :meth:`subscribe`."""

        def decorate(fn: F) -> F:
            self.subscribe(topic, fn, **kwargs)
            return fn

        return decorate

    # -- publishing ----------------------------------------------------------------------------

    async def apublish(self, topic: str, event: _core.Event) -> None:
        """``publish`` awaited: waits (without blocking the loop) for room in a full
        partition instead of raising BufferFull."""
        await _aio.until_room(
            lambda: self.publish(topic, event), lambda seconds: self._wait_room(topic, event, seconds)
        )

    # -- store -------------------------------------------------------------------------------

    def replay(
        self, topic: str, listener: Any, *, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        """Hand the stored events of ``topic`` with timestamps in [start, end) to ``listener``
        in order, synchronously; returns how many."""
        store = self.store
        if store is None:
            raise ValidationError(f"bus '{self.name}' has no store; create it with Bus(store=...)")
        call = listener.handler if isinstance(listener, _core.Listener) else listener
        if not callable(call):
            raise ValidationError(f"replay: listener must be callable, got {type(listener).__name__}")
        n = 0
        for event in store.replay(start, end, streams=[topic]):
            call(event)
            n += 1
        return n

    # -- metrics ---------------------------------------------------------------------------

    def _metrics(self) -> dict[str, Any]:
        """Counters for nova.metrics, with those of the private listener manager."""
        return with_manager_metrics(self, super()._metrics())
