"""The exception the timeout watchdog raises inside a synchronous handler that ran past its
deadline. The watchdog itself is native (src/watchdog.rs): one thread that sleeps until the
earliest deadline and fires with ``PyThreadState_SetAsyncExc``; ``ManagedListener`` turns the
interruption into a :class:`~nova.ListenerTimeout` naming the listener and the event.
"""

from __future__ import annotations

from ..errors import ListenerTimeout

__all__ = ["AsyncTimeout"]


class AsyncTimeout(ListenerTimeout):
    """Raised inside a sync handler by the watchdog (CPython instantiates the class)."""
