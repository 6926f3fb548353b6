"""A ``Bus`` whose topics live in a backend: ``nova.Bus(backend=...)`` makes one of these
(``Bus.__new__`` decides, once). Every topic call goes to the backend; the bus keeps what is
its own: the closed check, the validator and the store (appended in the publisher's call)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from .. import _core
from .._types import BusStats, ShutdownReport, TopicConfig, TopicInfo
from ..bus import Bus
from ..errors import ValidationError
from ._protocol import BusBackend

__all__ = ["RemoteTopics"]


class RemoteTopics(Bus):
    """``Bus`` with its topic calls handed to ``self.backend`` (a :class:`BusBackend`)."""

    @property
    def _remote(self) -> BusBackend:
        backend: BusBackend = self.backend
        return backend

    def create_topic(self, name: str, config: TopicConfig | None = None, **fields: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"create_topic: name must be a non-empty str, got {name!r}")
        self._remote.create_topic(name, self._config(config, fields))

    def topic_config(self, name: str) -> TopicConfig | None:
        return self._remote.topic_config(name)

    def delete_topic(self, name: str) -> None:
        self._remote.delete_topic(name)

    def topics(self) -> list[str]:
        return self._remote.topics()

    def topic_info(self, name: str) -> TopicInfo:
        return self._remote.topic_info(name)

    def subscribe(self, topic: str, listener: Any, *, config: Any = None) -> _core.Subscription:
        if not isinstance(topic, str) or not topic:
            raise ValidationError(f"subscribe: topic must be a non-empty str, got {topic!r}")
        return self._remote.subscribe(topic, listener, config=config)

    def subscribe_pattern(self, regex: str, listener: Any, *, config: Any = None) -> _core.Subscription:
        if not isinstance(regex, str):
            raise ValidationError(f"subscribe_pattern: regex must be a str, got {type(regex).__name__}")
        return self._remote.subscribe_pattern(regex, listener, config=config)

    def publish(self, topic: str, event: _core.Event) -> None:
        self._admit_to_store(topic, [event])
        self._remote.publish(topic, event)

    def publish_batch(self, topic: str, events: Iterable[_core.Event]) -> None:
        batch = list(events)
        self._admit_to_store(topic, batch)
        self._remote.publish_batch(topic, batch)

    async def apublish(self, topic: str, event: _core.Event) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.publish, topic, event)

    def flush(self, timeout: float | None = None) -> bool:
        return self._remote.flush(timeout)

    def stats(self) -> BusStats:
        return self._remote.stats()

    def shutdown(self, timeout: float | None = 30.0) -> ShutdownReport:
        try:
            return self._remote.shutdown(timeout)
        finally:
            self._close_local()


_made: dict[type[Bus], type[Bus]] = {}


def remote_class(cls: type[Bus]) -> type[Bus]:
    """``cls`` (``nova.Bus`` or a subclass of it) with its topics in a backend."""
    if issubclass(cls, RemoteTopics):
        return cls
    made = _made.get(cls)
    if made is None:
        made = _made[cls] = type(cls.__name__, (RemoteTopics, cls), {"__module__": cls.__module__})
    return made
