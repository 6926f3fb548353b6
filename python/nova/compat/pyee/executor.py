"""pyee's ``ExecutorEventEmitter`` on Nova's Rust listener table (the counterpart of
``pyee.executor``)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from ..._closing import ClosesOnExit
from .base import EventEmitter

__all__ = ["ExecutorEventEmitter"]


class ExecutorEventEmitter(EventEmitter, ClosesOnExit):
    """An emitter that runs each handler call on a ``concurrent.futures`` executor (a new
    ``ThreadPoolExecutor`` unless one is given), so emit never blocks on handlers. Exceptions
    from handlers are emitted as the ``"error"`` event. Use :meth:`shutdown`, or the emitter as a
    context manager, to shut the executor down.
    """

    def __init__(self, executor: Executor | None = None) -> None:
        super().__init__()
        self._executor: Executor = executor if executor else ThreadPoolExecutor()

    def _emit_run(self, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        future: Future[Any] = self._executor.submit(f, *args, **kwargs)
        future.add_done_callback(self._nova_done)

    def _nova_done(self, future: Future[Any]) -> None:
        exc = future.exception()
        if isinstance(exc, Exception):
            self.emit("error", exc)
        elif exc is not None:
            raise exc

    def shutdown(self, wait: bool = True) -> None:
        """Shut the executor down (``Executor.shutdown(wait=wait)``)."""
        self._executor.shutdown(wait=wait)

    def _close_on_exit(self) -> None:
        self.shutdown()
