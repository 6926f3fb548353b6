"""How events cross the wire. JSON by default; never pickle."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from ... import _core  # type: ignore[attr-defined, unused-ignore]

Event = Any  # nova.Event (the Rust class); Any for the type checker

__all__ = ["Serializer", "JsonSerializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns an event into bytes (or str) for the stream and back.

    ``loads`` gets the bytes exactly as stored and must return a :class:`nova.Event`; any
    exception it raises (or another return type) sends the message to the dead-letter stream.
    """

    def dumps(self, event: Event) -> bytes | str: ...

    def loads(self, data: bytes) -> Event: ...


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class JsonSerializer:
    """The JSON of ``Event.to_json`` (compact separators), read back with
    ``Event.from_json``: the event's ``data`` must be JSON-serialisable. Subclasses of Event
    arrive as plain ``nova.Event``."""

    def dumps(self, event: Event) -> str:
        return _ENCODE(event.to_dict())

    def loads(self, data: bytes) -> Event:
        return _core.Event.from_json(data)

    def __repr__(self) -> str:
        return "JsonSerializer()"
