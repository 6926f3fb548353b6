"""What a ``ListenerManager`` and its ``ManagedListener`` objects both read and write: the
manager's run state and the record of an event waiting for a retry.

Kept apart from both so that :mod:`~nova.resilience.manager` imports
:mod:`~nova.resilience.managed_listener` and never the reverse (except for type hints).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .managed_listener import ManagedListener

# The manager's state, mirrored in each listener's core (``_AttemptCore.set_state``), which
# compares it with these numbers: they must not change.
_RUNNING, _STOPPING, _STOPPED = 0, 1, 2


class _Waiter:
    """An event waiting for a retry: in ``process()``'s own wait, or on the core's timer
    (``owner`` set: the listener whose ``attempt()`` returned the delay)."""

    __slots__ = ("event", "wake_at", "abandoned", "owner")

    def __init__(self, event: Any, wake_at: float, owner: ManagedListener | None = None) -> None:
        self.event = event
        self.wake_at = wake_at
        self.abandoned = False
        self.owner = owner
