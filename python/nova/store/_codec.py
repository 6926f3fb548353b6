"""Events as JSON text, for :class:`~nova.store.SqliteStore`.

The text is exactly what ``json.dumps(event.to_dict())`` gives in compact form (keys ``id``,
``type``, ``data``, ``metadata``, ``timestamp``), and ``Event.from_json`` reads it back. It is
written by hand around the stdlib's C encoder, reusing one encoder object instead of building
a new one per call as ``json.dumps`` does: about twice as fast, which is most of an append's
cost. Strict JSON: NaN and infinities are refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .._core import Event
from ._time import to_micros

__all__ = ["encode", "EncodeError"]

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


def encode(event: Event) -> tuple[int, str]:
    """``(timestamp in microseconds since the epoch, JSON text)`` of an event; raises one of
    :data:`EncodeError` when its data is not JSON-serialisable."""
    ts = event.timestamp
    metadata = event.metadata
    body = '{"id":%s,"type":%s,"data":%s,"metadata":%s,"timestamp":"%s"}' % (
        _escape(event.id), _escape(event.type), _value(event.data),
        _value(dict(metadata)) if metadata else "{}",
        ts.isoformat(timespec="microseconds"))
    return to_micros(ts), body


def decode(body: str) -> Event:
    """The event of a JSON text written by :func:`encode` (a plain :class:`nova.Event`)."""
    return Event.from_json(body)
