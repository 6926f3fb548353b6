"""How events cross the wire. JSON by default; never pickle."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ... import _codec

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


class JsonSerializer:
    """The JSON of ``Event.to_json`` (the format of :mod:`nova._codec`, compact separators),
    read back as ``Event.from_json`` reads it: the event's ``data`` must be JSON-serialisable
    (NaN and the infinities are written, as ``json.dumps`` writes them). Subclasses of Event
    arrive as plain ``nova.Event``."""

    def dumps(self, event: Event) -> str:
        return _codec.to_json(event)

    def loads(self, data: bytes) -> Event:
        return _codec.decode(data)

    def __repr__(self) -> str:
        return "JsonSerializer()"
