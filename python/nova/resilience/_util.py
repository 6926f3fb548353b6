"""Small helpers shared by the resilience modules."""

from __future__ import annotations

import ctypes
from typing import Any

from .. import _core  # type: ignore[attr-defined, unused-ignore]

__all__ = ["listener_name", "as_listener", "describe", "set_async_exc"]


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


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.restype = ctypes.c_int


def set_async_exc(thread_id: int, exc_type: type[BaseException] | None) -> int:
    """Raise ``exc_type`` in thread ``thread_id`` at its next bytecode (``None`` clears a
    pending one); returns how many thread states were modified."""
    # None must reach C as NULL (which clears), not as Py_None.
    exc = ctypes.py_object(exc_type) if exc_type is not None else None
    return int(_set_async_exc(ctypes.c_ulong(thread_id), exc))
