"""Small helpers shared by the resilience modules."""

from __future__ import annotations

from typing import Any

from .. import _core  # type: ignore[attr-defined, unused-ignore]

__all__ = ["listener_name", "as_listener", "describe"]


def listener_name(obj: Any) -> str:
    """The name Nova gives a listener: a ``Listener``'s ``name``, else the callable's
    ``__qualname__`` (an object without one: its ``name`` attribute, else its class's)."""
    if isinstance(obj, _core.Listener):
        return str(obj.name)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(qualname, str) and qualname:
        return qualname
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(type(obj).__qualname__)


def as_listener(obj: Any) -> Any:
    """``obj`` as a ``nova.Listener`` (a plain callable is wrapped, named by ``__qualname__``)."""
    if isinstance(obj, _core.Listener):
        return obj
    if not callable(obj):
        from ..errors import ValidationError

        raise ValidationError(f"a listener must be callable or a nova.Listener, got {obj!r}")
    return _core.Listener(listener_name(obj), obj)


def describe(event: Any) -> str:
    """``<id> (<type>)`` for messages."""
    return f"{getattr(event, 'id', '?')} ({getattr(event, 'type', '?')})"
