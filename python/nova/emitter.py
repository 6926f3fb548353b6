"""``nova.Emitter``: the Rust emitter plus its Python conveniences (decorator, asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from . import _aio, _core
from ._closing import ClosesOnExit
from ._managed import managed, with_manager_metrics

__all__ = ["Emitter"]

F = TypeVar("F", bound=Callable[..., Any])


class Emitter(ClosesOnExit, _core.Emitter):
    """Events routed by type to listeners (see docs/api.md, Emitter)."""

    def _close_on_exit(self) -> object:
        """``with`` ends with ``shutdown()`` (its default 30 s deadline)."""
        return self.shutdown()

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
        """``emit`` awaited: returns when every listener has finished, raising what ``emit``
        would. On the loop the listeners run on (with no middleware set), its plain ``async
        def`` listeners run right here, on this loop, and its sync listeners on the worker pool
        meanwhile; otherwise the whole emit runs on the worker pool, so the loop is never
        blocked."""
        here = self._aemit_here(event)
        if here is None:
            # submit() runs the call inside a copy of this task's context.
            future = self.pool.submit(self.emit, event)
            await asyncio.wrap_future(future)
            return
        calls, sync_part = here
        if sync_part is None and len(calls) == 1:  # the common case: no gather, no extra task
            coro, run = calls[0]
            try:
                await coro
            except Exception as e:
                error = run.finish_raising(e)
            else:
                error = run.finish_raising(None)
            if error is not None:
                raise error
            return
        sync_errors = None if sync_part is None else asyncio.wrap_future(self.pool.submit(sync_part))
        outcomes = await asyncio.gather(*(coro for coro, _ in calls), return_exceptions=True)
        errors = [
            err
            for (_, run), outcome in zip(calls, outcomes)
            if (err := run.finish_raising(outcome if isinstance(outcome, BaseException) else None))
            is not None
        ]
        if sync_errors is not None:
            errors.extend(await sync_errors)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ExceptionGroup(f"{len(errors)} listeners failed on {_describe(event)}", errors)

    async def aemit_async(self, event: _core.Event) -> None:
        """``emit_async`` that waits (without blocking the loop) for room in the buffer."""
        await _aio.until_room(lambda: self._try_emit_async(event), self._wait_room)

    def _metrics(self) -> dict[str, Any]:
        """Counters for nova.metrics, with those of the private listener manager."""
        return with_manager_metrics(self, super()._metrics())


def _describe(event: _core.Event) -> str:
    return f"event {event.id} ({event.type})"
