"""How events cross the wire. JSON by default; never pickle."""

from __future__ import annotations

import json
from datetime import datetime
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
_DECODE = json.loads
_FROM_ISO = datetime.fromisoformat


class JsonSerializer:
    """The JSON of ``Event.to_json`` (compact separators), read back with
    ``Event.from_json``: the event's ``data`` must be JSON-serialisable. Subclasses of Event
    arrive as plain ``nova.Event``."""

    def dumps(self, event: Event) -> str:
        return _ENCODE(event.to_dict())

    def loads(self, data: bytes) -> Event:
        # Fast path for what dumps() writes (a UTC timestamp); anything else, or any error,
        # goes through Event.from_json, the reference reader, for its result or its error.
        try:
            d = _DECODE(data)
            ts = d["timestamp"]
            if isinstance(ts, str) and ts.endswith("+00:00") and len(d) == 5:
                return _core.Event(
                    d["type"], d["data"], id=d["id"], metadata=d["metadata"], timestamp=_FROM_ISO(ts)
                )
        except Exception:  # noqa: BLE001 - from_json gives the proper error below
            pass
        return _core.Event.from_json(data)

    def __repr__(self) -> str:
        return "JsonSerializer()"
