"""Events as JSON text, for :class:`~nova.store.SqliteStore`.

The text is exactly what ``json.dumps(event.to_dict())`` gives in compact form (keys ``id``,
``type``, ``data``, ``metadata``, ``timestamp``), and ``Event.from_json`` reads it back. It is
written by hand around the stdlib's C encoder, reusing one encoder object instead of building
a new one per call as ``json.dumps`` does: about twice as fast, which is most of an append's
cost. Strict JSON: NaN and infinities are refused. Reading goes through the stdlib's C
scanner directly for the same reason.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .._core import Event
from ._time import UTC, to_micros

__all__ = ["encode", "decode", "EncodeError"]

# Raised for data that is not JSON-serialisable (RecursionError: a reference cycle).
EncodeError = (TypeError, ValueError, RecursionError)


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_escape: Callable[[str], str] = json.encoder.encode_basestring_ascii

_value: Callable[[Any], str]
if _c_make_encoder is not None:
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys,
    # allow_nan). No markers: a cycle ends in RecursionError instead of "Circular reference",
    # which keeps the encoder free of per-call state, so one object serves every thread.
    _chunks = _c_make_encoder(None, _refuse, _escape, None, ":", ",", False, False, False)

    def _value(value: Any) -> str:  # noqa: F811
        return "".join(_chunks(value, 0))
else:  # pragma: no cover - interpreters without the C accelerator
    _value = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


# The last UTC second formatted, as (second since the epoch, "YYYY-MM-DDTHH:MM:SS"): events
# come in bursts within one second, and datetime.isoformat costs more than all the rest of
# an event's JSON. One tuple, replaced whole, so threads never see a torn pair.
_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def isoformat(ts: datetime, micros: int) -> str:
    """``ts.isoformat(timespec="microseconds")``, given ``micros = to_micros(ts)``."""
    global _second
    if ts.tzinfo is not UTC:
        return ts.isoformat(timespec="microseconds")
    second, micro = divmod(micros, 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, ts.isoformat(timespec="seconds")[:-6])
    return "%s.%06d+00:00" % (cached[1], micro)


def encode(event: Event) -> tuple[int, str]:
    """``(timestamp in microseconds since the epoch, JSON text)`` of an event; raises one of
    :data:`EncodeError` when its data is not JSON-serialisable."""
    ts = event.timestamp
    micros = to_micros(ts)
    metadata = event.metadata
    body = '{"id":%s,"type":%s,"data":%s,"metadata":%s,"timestamp":"%s"}' % (
        _escape(event.id), _escape(event.type), _value(event.data),
        _value(dict(metadata)) if metadata else "{}", isoformat(ts, micros))
    return micros, body


_c_make_scanner: Any = getattr(json.scanner, "c_make_scanner", None)
# The C scanner without json.loads' wrapper: about half the cost for these small texts. It
# holds the GIL for a whole call and clears its state after each, so threads can share it.
_scan: Callable[[str, int], tuple[Any, int]] | None = (
    None if _c_make_scanner is None else _c_make_scanner(json.JSONDecoder()))


def decode(body: str) -> Event:
    """The event of a JSON text written by :func:`encode` (a plain :class:`nova.Event`);
    raises ``ValueError`` for text that is not one JSON value, and ``nova.ValidationError``
    for a value that is not an event."""
    if _scan is None:  # pragma: no cover - interpreters without the C accelerator
        return Event.from_dict(json.loads(body))
    try:
        value, end = _scan(body, 0)
    except StopIteration as stop:  # the scanner's way to say "no JSON value here"
        raise ValueError(f"invalid JSON at character {stop.value}") from None
    if end != len(body):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return Event.from_dict(value)
