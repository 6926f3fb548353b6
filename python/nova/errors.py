"""The exception hierarchy of Nova (see docs/api.md, Errors).

Every error Nova raises derives from :class:`NovaError`. The Rust core imports these classes,
so an error raised in a native worker is the same class a user catches.
"""

from __future__ import annotations

from typing import Any


class NovaError(Exception):
    """Base class of every error Nova raises."""


class ValidationError(NovaError, ValueError):
    """Bad input: an invalid event, configuration or argument. The message names the field."""


class BufferFull(NovaError):
    """A bounded buffer (emitter, topic partition, pool queue) had no room for the event."""


class ClosedError(NovaError):
    """The component was shut down or closed."""


class EmitterClosed(ClosedError):
    """The emitter was shut down."""


class BusClosed(ClosedError):
    """The bus was shut down."""


class StoreClosed(ClosedError):
    """The event store was closed."""


class PoolClosed(ClosedError):
    """The worker pool was closed."""


class ListenerError(NovaError):
    """A listener failed on an event; the original exception is ``__cause__``."""

    def __init__(self, message: str, *, listener: str = "", event: Any = None) -> None:
        super().__init__(message)
        self.listener = listener
        self.event = event

    def __reduce__(self) -> Any:
        return (_rebuild_listener_error, (type(self), str(self), self.listener, self.event))


def _rebuild_listener_error(
    cls: type[ListenerError], message: str, listener: str, event: Any
) -> ListenerError:
    return cls(message, listener=listener, event=event)


class MiddlewareError(NovaError):
    """A middleware ``before`` hook raised and the event was rejected (``__cause__``)."""


class ListenerTimeout(NovaError, TimeoutError):
    """A listener attempt ran past its configured timeout."""


class CircuitOpenError(NovaError):
    """The listener's circuit breaker is open; the event was not handed to the listener."""


class RetryLimitExceeded(NovaError):
    """Every attempt failed; the last error is ``__cause__``."""


class TopicNotFound(NovaError, KeyError):
    """No topic of that name exists on the bus."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ListenerNotFound(NovaError, KeyError):
    """No listener of that name is registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StreamNotFound(NovaError, KeyError):
    """The stream was never written."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConcurrencyError(NovaError):
    """An append's ``expected_version`` did not match the stream's version."""


class StoreFull(NovaError):
    """An append would pass a store limit; nothing was appended."""


class StoreError(NovaError):
    """A store file is corrupt, foreign, or of an unknown schema version."""


class BackendError(NovaError):
    """A distributed backend is unreachable or refused us."""


class RetryableError(NovaError):
    """Base for user errors that are worth retrying (a temporary failure).

    Derives from :class:`NovaError` like every exception class Nova exports (see docs/api.md,
    Errors), so ``except nova.NovaError`` also catches it; otherwise it is a plain ``Exception``.
    """


class PermanentError(NovaError):
    """Base for user errors that retrying cannot fix; never retried unless listed.

    Derives from :class:`NovaError` like every exception class Nova exports (see docs/api.md,
    Errors).
    A ``RetryPolicy(retry_on=(nova.NovaError,))`` still does not retry it: only listing
    ``PermanentError`` (or a subclass) does.
    """


# Every class above, in the order defined (``from nova.errors import *``). Made rather than
# written out: nova/__init__.py already lists these names, as type checkers need it to.
__all__ = [
    name
    for name, value in list(globals().items())
    if isinstance(value, type) and value.__module__ == __name__
]
