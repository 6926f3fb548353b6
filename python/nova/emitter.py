"""``nova.Emitter``: the Rust emitter plus its Python conveniences (decorator, asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from . import _core
from ._managed import managed, with_manager_metrics
from .errors import BufferFull

__all__ = ["Emitter"]

F = TypeVar("F", bound=Callable[..., Any])


class Emitter(_core.Emitter):
    """Events routed by type to listeners; see the API contract, section 5."""

    def subscribe(self, event_type: str, listener: Any, *, config: Any = None) -> _core.Subscription:
        """Subscribe ``listener`` to an event type or a ``*``/``#`` pattern. With ``config``
        (a ListenerConfig) it runs under that retry/circuit/dead-letter policy; without, it is
        called once per event."""
        if config is not None:
            listener = managed(self, listener, config)
        return self._subscribe(event_type, listener)

    def on(self, event_type: str, **kwargs: Any) -> Callable[[F], F]:
        """Decorator form of :meth:`subscribe`; returns the function unchanged."""

        def decorate(fn: F) -> F:
            self.subscribe(event_type, fn, **kwargs)
            return fn

        return decorate

    async def aemit(self, event: _core.Event) -> None:
        """``emit`` awaited: listeners run on the worker pool, so the loop is never blocked."""
        # submit() runs the call inside a copy of this task's context.
        future = self.pool.submit(self.emit, event)
        await asyncio.wrap_future(future)

    async def aemit_async(self, event: _core.Event) -> None:
        """``emit_async`` that waits (without blocking the loop) for room in the buffer."""
        delay = 0.0001
        while True:
            try:
                self._try_emit_async(event)
                return
            except BufferFull:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.01)

    def _metrics(self) -> dict[str, Any]:
        """Counters for nova.metrics, with those of the private listener manager."""
        return with_manager_metrics(self, super()._metrics())
