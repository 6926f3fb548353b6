"""Structured logging of Nova dispatch through the standard library (see docs/api.md, Logging).

``LoggingMiddleware`` writes one record before and one after each event a component
dispatches. Both carry the structured attributes ``event_id``, ``event_type`` and ``metadata``
(a plain ``dict``) — passed with ``extra=``, so they are attributes of the ``LogRecord`` — and
the second also ``error`` (``None``, or ``"ExcType: message"``) and ``duration_ms`` (a float,
measured with :func:`time.perf_counter`). A failed dispatch is logged at ``ERROR``.

Nothing here depends on structlog; with structlog's standard-library integration
(``structlog.stdlib.ProcessorFormatter`` with ``structlog.stdlib.ExtraAdder()`` in its
``foreign_pre_chain``) the attributes become keys of the rendered event dict. See
docs/observability.md.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any, NamedTuple

from ._eventlike import MAX_NESTED_DISPATCHES, EventLike

__all__ = ["LoggingMiddleware"]


class _Started(NamedTuple):
    event_id: str
    start: float


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class LoggingMiddleware:
    """Middleware logging each dispatch: ``"nova event <type> <id> received"`` before the
    listeners, ``"nova event <type> <id> handled in <ms> ms"`` (at ``level``) or
    ``"nova event <type> <id> failed in <ms> ms: <error>"`` (at ``ERROR``) after them.

    ``logger`` is a :class:`logging.Logger`, a :class:`logging.LoggerAdapter` or a logger name;
    it defaults to the ``nova`` logger. ``level`` is the level of the records of successful
    dispatches (and of the first record of every dispatch).
    """

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any] | str | None = None,
        level: int = logging.INFO,
    ) -> None:
        if logger is None:
            logger = logging.getLogger("nova")
        elif isinstance(logger, str):
            logger = logging.getLogger(logger)
        if not isinstance(level, int) or isinstance(level, bool):
            raise TypeError(f"LoggingMiddleware: level must be an int, got {type(level).__name__}")
        self.logger = logger
        self.level = level
        self._stack: contextvars.ContextVar[tuple[_Started, ...]] = contextvars.ContextVar(
            f"nova.logging.{id(self):x}", default=()
        )
        # Start times by event id, for an after() that comes from another context (the final
        # outcome of an event that waited for a retry, reported from another worker).
        self._started: dict[str, list[float]] = {}

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"LoggingMiddleware(logger={self.logger!r}, level={level})"

    def before(self, event: EventLike) -> None:
        if self.logger.isEnabledFor(self.level):
            self.logger.log(
                self.level,
                "nova event %s %s received",
                event.type,
                event.id,
                extra={
                    "event_id": event.id,
                    "event_type": event.type,
                    "metadata": dict(event.metadata),
                },
            )
        # Timed from after the first record, so its handlers' I/O is not counted.
        stack = self._stack.get()
        if len(stack) >= MAX_NESTED_DISPATCHES:
            stack = stack[len(stack) - MAX_NESTED_DISPATCHES + 1 :]
        started = time.perf_counter()
        self._stack.set((*stack, _Started(event.id, started)))
        self._started.setdefault(event.id, []).append(started)

    def after(self, event: EventLike, error: BaseException | None) -> None:
        end = time.perf_counter()
        stack = self._stack.get()
        start: float | None = None
        for index in range(len(stack) - 1, -1, -1):
            if stack[index].event_id == event.id:
                start = stack[index].start
                self._stack.set(stack[:index])
                break
        starts = self._started.get(event.id)
        if starts:
            if start is None:
                start = starts[0]
            if start in starts:
                starts.remove(start)
            else:
                starts.pop(0)
            if not starts:
                del self._started[event.id]
        duration_ms = (end - start) * 1000.0 if start is not None else float("nan")
        level = self.level if error is None else logging.ERROR
        if not self.logger.isEnabledFor(level):
            return
        extra = {
            "event_id": event.id,
            "event_type": event.type,
            "metadata": dict(event.metadata),
            "error": None if error is None else _describe(error),
            "duration_ms": duration_ms,
        }
        if error is None:
            self.logger.log(
                level,
                "nova event %s %s handled in %.3f ms",
                event.type,
                event.id,
                duration_ms,
                extra=extra,
            )
        else:
            self.logger.log(
                level,
                "nova event %s %s failed in %.3f ms: %s",
                event.type,
                event.id,
                duration_ms,
                extra["error"],
                extra=extra,
            )
