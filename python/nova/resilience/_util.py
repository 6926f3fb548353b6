"""Small helpers shared by the resilience modules."""

from __future__ import annotations

from typing import Any

from .. import _core  # type: ignore[attr-defined, unused-ignore]

__all__ = ["listener_name", "as_listener", "describe", "error_text", "error_repr"]


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


def error_text(error: BaseException) -> str:
    """``str(error)``, or a description of why it could not be had: an exception whose
    ``__str__`` raises must not stop Nova from reporting or dead-lettering the event."""
    try:
        return str(error)
    except Exception as exc:  # noqa: BLE001
        try:
            why = f"{type(exc).__qualname__}: {exc}"
        except Exception:  # noqa: BLE001
            why = type(exc).__qualname__
        return f"<str() of {type(error).__qualname__} raised {why}>"


def error_repr(error: BaseException) -> str:
    """``repr(error)``, or ``<Class>`` when its ``__repr__`` raises."""
    try:
        return repr(error)
    except Exception:  # noqa: BLE001
        return f"<{type(error).__qualname__}>"
