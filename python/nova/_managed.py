"""Turning ``subscribe(..., config=ListenerConfig(...))`` into a managed listener.

Each component keeps one private ListenerManager, created on first need, so the short form
behaves exactly like ``ListenerManager.register(listener, config)`` followed by a subscribe.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

_lock = threading.Lock()
_count = itertools.count(1)


def manager_for(component: Any) -> Any:
    """The component's private ListenerManager (shares its worker pool)."""
    manager = component.__dict__.get("_nova_manager")
    if manager is None:
        with _lock:
            manager = component.__dict__.get("_nova_manager")
            if manager is None:
                from .resilience import ListenerManager

                manager = ListenerManager(
                    pool=component.pool,
                    name=f"{component.name}-listeners",
                    loop=getattr(component, "_loop", None),
                )
                component.__dict__["_nova_manager"] = manager
    return manager


def managed(component: Any, listener: Any, config: Any) -> Any:
    """Register ``listener`` with ``config`` on the component's manager and return the
    managed listener to subscribe (the name is made unique per registration)."""
    from ._core import Listener
    from .resilience import ManagedListener

    if isinstance(listener, ManagedListener):
        return listener  # already under its own manager's policy
    manager = manager_for(component)
    base = listener if isinstance(listener, Listener) else Listener(_name_of(listener), listener)
    name = base.name
    if name in manager:
        name = f"{base.name}#{next(_count)}"
    return manager.register(base, config, name=name)


def _name_of(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) and name else repr(fn)


def with_manager_metrics(component: Any, snapshot: dict[str, Any]) -> dict[str, Any]:
    """Add the retries, dead letters and circuit states of the component's private manager
    (listeners subscribed with ``config=``) to its metrics snapshot."""
    manager = component.__dict__.get("_nova_manager")
    if manager is not None:
        extra = manager._metrics()
        for key in ("retries", "dead_letters", "circuit_state"):
            if extra.get(key):
                snapshot[key] = list(snapshot.get(key, [])) + list(extra[key])
    return snapshot
