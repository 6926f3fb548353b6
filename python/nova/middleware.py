"""Middleware: code that runs around every event a component dispatches (see docs/api.md,
Middleware)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

from ._core import Event

__all__ = ["Middleware", "middleware"]


@runtime_checkable
class Middleware(Protocol):
    """``before`` runs in ``use`` order and may return a replacement event (None keeps it);
    ``after`` runs in reverse order with the final event and the outcome (None, a
    ``ListenerError`` or an ``ExceptionGroup``). A ``before`` that raises rejects the event."""

    def before(self, event: Event) -> Event | None: ...

    def after(self, event: Event, error: BaseException | None) -> None: ...


class _FunctionMiddleware:
    __slots__ = ("before", "after")

    def __init__(
        self,
        before: Callable[[Event], Event | None] | None,
        after: Callable[[Event, BaseException | None], None] | None,
    ) -> None:
        self.before = before
        self.after = after

    def __repr__(self) -> str:
        return f"middleware(before={self.before!r}, after={self.after!r})"


def middleware(
    before: Callable[[Event], Event | None] | None = None,
    after: Callable[[Event, BaseException | None], None] | None = None,
) -> Middleware:
    """Build a middleware from one or two functions."""
    from .errors import ValidationError

    if before is None and after is None:
        raise ValidationError("nova.middleware needs before=, after= or both")
    for field, fn in (("before", before), ("after", after)):
        if fn is not None and not callable(fn):
            raise ValidationError(f"nova.middleware: {field} must be callable, got {type(fn).__name__}")
    # A hook left as None is skipped by the core, so the object fits the protocol in use.
    return cast(Middleware, _FunctionMiddleware(before, after))
