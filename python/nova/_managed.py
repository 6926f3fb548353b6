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

                manager = ListenerManager(pool=component.pool, name=f"{component.name}-listeners")
                component.__dict__["_nova_manager"] = manager
    return manager


def managed(component: Any, listener: Any, config: Any) -> Any:
    """Register ``listener`` with ``config`` on the component's manager and return the
    managed listener to subscribe (the name is made unique per registration)."""
    from ._core import Listener

    manager = manager_for(component)
    base = listener if isinstance(listener, Listener) else Listener(_name_of(listener), listener)
    name = base.name
    if name in manager:
        name = f"{base.name}#{next(_count)}"
        base = Listener(name, base.handler, on_error=base.on_error)
    return manager.register(base, config)


def _name_of(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) and name else repr(fn)
