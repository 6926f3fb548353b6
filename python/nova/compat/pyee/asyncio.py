"""pyee's ``AsyncIOEventEmitter`` on Nova's Rust listener table (the counterpart of
``pyee.asyncio``)."""

from __future__ import annotations

from asyncio import AbstractEventLoop, Future, ensure_future, iscoroutine, wait
from collections.abc import Callable
from typing import Any

from .base import EventEmitter, _native

__all__ = ["AsyncIOEventEmitter"]


class AsyncIOEventEmitter(EventEmitter):
    """An emitter whose handlers may be coroutine functions: the coroutine a handler returns is
    scheduled with ``asyncio.ensure_future`` (on ``loop`` when given), and emit does not wait for
    it. Exceptions from handlers, synchronous or not, are emitted as the ``"error"`` event.

    Pending futures can be awaited with :meth:`wait_for_complete` or cancelled with
    :meth:`cancel`; :attr:`complete` tells whether any are pending.
    """

    def __init__(self, loop: AbstractEventLoop | None = None) -> None:
        super().__init__()
        self._loop: AbstractEventLoop | None = loop
        self._waiting: set[Future[Any]] = set()

    @_native("asyncio")
    def _emit_run(self, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # What the Rust emitter does itself for this class; kept for subclasses calling super().
        try:
            result = f(*args, **kwargs)
        except Exception as exc:
            self.emit("error", exc)
        else:
            self._nova_schedule(result)

    def _nova_schedule(self, result: Any) -> None:
        """Track (and schedule, for a coroutine) what a handler returned."""
        fut: Future[Any]
        if iscoroutine(result):
            fut = ensure_future(result, loop=self._loop) if self._loop else ensure_future(result)
        elif isinstance(result, Future):
            fut = result
        else:
            return
        fut.add_done_callback(self._nova_done)
        self._waiting.add(fut)

    def _nova_done(self, fut: Future[Any]) -> None:
        self._waiting.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc:
            self.emit("error", exc)

    async def wait_for_complete(self) -> None:
        """Wait until every pending handler future is done."""
        if self._waiting:
            await wait(self._waiting)

    def cancel(self) -> None:
        """Cancel every pending handler future."""
        for fut in self._waiting:
            if not fut.done() and not fut.cancelled():
                fut.cancel()
        self._waiting.clear()

    @property
    def complete(self) -> bool:
        """True when no handler future is pending."""
        return not self._waiting
