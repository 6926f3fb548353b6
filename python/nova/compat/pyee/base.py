"""pyee's ``EventEmitter`` on Nova's Rust listener table (the counterpart of ``pyee.base``).

The handler table and ``emit`` live in Rust (``nova._core.PyeeTable``): an emit is one call into
Rust, which looks the event up and calls each handler. Everything else here is the pyee 13 API
around that table.
"""

from __future__ import annotations

import copyreg
from collections import OrderedDict
from collections.abc import Callable, Mapping
from threading import Lock
from typing import Any, TypeVar, overload

from .._table import OnceCall, PyeeTable

__all__ = ["EventEmitter", "Handler", "PyeeError", "PyeeException"]


class PyeeException(Exception):
    """An exception internal to pyee. Deprecated in favour of PyeeError (as in pyee)."""


class PyeeError(PyeeException):
    """An error internal to pyee: an unhandled ``error`` event whose argument is no exception."""


Handler = TypeVar("Handler", bound=Callable[..., Any])


def _native(tag: str) -> Callable[[Handler], Handler]:
    """Mark a method as the one the Rust emitter implements itself (see PyeeTable.new): a
    subclass that overrides it gets its override called instead."""

    def mark(f: Handler) -> Handler:
        f._nova_native = tag  # type: ignore[attr-defined]
        return f

    return mark


class EventEmitter(PyeeTable):
    """An event emitter like pyee's: handlers are registered with :meth:`on` and :meth:`once`
    and called, synchronously and in registration order, by :meth:`emit`.

    Two events are special, as in pyee:

    - ``"new_listener"`` is emitted with ``(event, handler)`` before a handler is added;
    - ``"error"``, when emitted with no handler, raises its argument if it is an exception and
      :class:`PyeeError` otherwise.

    Exceptions raised by handlers propagate out of :meth:`emit`.
    """

    def __init__(self) -> None:
        self._lock: Lock = Lock()

    # -- pickling: the handlers travel in ``_events``; the lock is dropped and made anew -------

    def __getstate__(self) -> Mapping[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        state["_events"] = self._events
        return state

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        state = dict(state)
        events = state.pop("_events", {})
        self.__dict__.update(state)
        self._lock = Lock()
        self._events = events

    def __reduce__(self) -> tuple[Any, ...]:
        return (copyreg.__newobj__, (type(self),), self.__getstate__())  # type: ignore[attr-defined]

    @property
    def _events(self) -> dict[Any, OrderedDict[Callable[..., Any], Callable[..., Any]]]:
        """A snapshot of the table as pyee keeps it: ``{event: OrderedDict({handler: value})}``
        (for a ``once`` handler the value is its ``OnceCall`` wrapper). Changing the snapshot
        changes nothing; assigning ``_events`` replaces the table."""
        return {event: OrderedDict(pairs) for event, pairs in self._nova_items()}

    @_events.setter
    def _events(self, events: Mapping[Any, Mapping[Callable[..., Any], Callable[..., Any]]]) -> None:
        self._nova_clear()
        for event, handlers in events.items():
            if not handlers:
                self._nova_clear(event)
            for k, v in handlers.items():
                self._nova_add(event, k, v)

    # -- registering -------------------------------------------------------------------------

    @overload
    def on(self, event: Any) -> Callable[[Handler], Handler]: ...
    @overload
    def on(self, event: Any, f: Handler) -> Handler: ...

    def on(self, event: Any, f: Handler | None = None) -> Handler | Callable[[Handler], Handler]:
        """Register ``f`` for ``event`` and return it; without ``f``, return a decorator that does."""
        if f is None:
            return self.listens_to(event)
        return self.add_listener(event, f)

    def listens_to(self, event: Any) -> Callable[[Handler], Handler]:
        """A decorator registering the decorated function for ``event``."""

        def on(f: Handler) -> Handler:
            self._add_event_handler(event, f, f)
            return f

        return on

    def add_listener(self, event: Any, f: Handler) -> Handler:
        """Register ``f`` for ``event`` and return it."""
        self._add_event_handler(event, f, f)
        return f

    def _add_event_handler(self, event: Any, k: Callable[..., Any], v: Callable[..., Any]) -> None:
        # "new_listener" fires before the handler is added, so it never sees itself added.
        self.emit("new_listener", event, k)
        self._nova_add(event, k, v)

    @overload
    def once(self, event: Any) -> Callable[[Handler], Handler]: ...
    @overload
    def once(self, event: Any, f: Handler) -> Handler: ...

    def once(self, event: Any, f: Handler | None = None) -> Handler | Callable[[Handler], Handler]:
        """Like :meth:`on`, but the handler is removed before its first call."""

        def register(f: Handler) -> Handler:
            self._add_event_handler(event, f, OnceCall(f))
            return f

        if f is None:
            return register
        return register(f)

    # -- emitting: ``emit`` is PyeeTable.emit (Rust); these are the hooks pyee subclasses know --

    @_native("sync")
    def _emit_run(self, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        f(*args, **kwargs)

    @_native("default")
    def _emit_handle_potential_error(self, event: Any, error: Any) -> None:
        if event == "error":
            if isinstance(error, Exception):
                raise error
            raise PyeeError(f"Uncaught, unspecified 'error' event: {error}")

    @_native("default")
    def _call_handlers(self, event: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        return self._nova_call_handlers(event, args, kwargs)

    # -- removing and inspecting ---------------------------------------------------------------

    def _remove_listener(self, event: Any, f: Callable[..., Any]) -> None:
        self._nova_remove(event, f)

    def remove_listener(self, event: Any, f: Callable[..., Any]) -> None:
        """Remove ``f`` from ``event`` (``KeyError`` if the event has handlers but not ``f``)."""
        self._remove_listener(event, f)

    def remove_all_listeners(self, event: Any = None) -> None:
        """Remove the handlers of ``event``, or of every event when it is None."""
        self._nova_clear(event)

    def listeners(self, event: Any) -> list[Callable[..., Any]]:
        """A copy of the handlers registered for ``event``, in order."""
        return self._nova_listeners(event)

    def event_names(self) -> set[Any]:
        """The events that have handlers."""
        return self._nova_names()
