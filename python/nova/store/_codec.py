"""Events as JSON text, for :class:`~nova.store.SqliteStore`.

The text is exactly what ``json.dumps(event.to_dict())`` gives in compact form (keys ``id``,
``type``, ``data``, ``metadata``, ``timestamp``), and ``Event.from_json`` reads it back. It is
written by hand around the stdlib's C encoder, reusing one encoder object instead of building
a new one per call as ``json.dumps`` does: about twice as fast, which is most of an append's
cost. Strict JSON: NaN and infinities are refused. Reading goes through the stdlib's C
scanner directly for the same reason.

Depth: the C encoder and scanner recurse once per level of lists and dicts, bounded by the
interpreter's recursion limit counted from wherever they are called. So :func:`encode` refuses
data nested deeper than :data:`MAX_DEPTH` levels (:class:`NestingError`), a depth every
supported interpreter decodes; and both encode and decode, when the caller's own stack is too
deep for data within that limit, redo the work on a fresh thread's stack instead of failing
(see :func:`on_fresh_stack`). What ``encode`` accepts, ``decode`` reads back from any caller.
"""

from __future__ import annotations

import itertools
import json
import json.scanner
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .._core import Event
from ._time import UTC, to_micros

__all__ = ["encode", "decode", "EncodeError", "NestingError", "MAX_DEPTH", "nesting", "on_fresh_stack"]

#: The deepest nesting of lists and dicts an event's ``data`` may have to be stored: ``1`` and
#: ``"x"`` are 0 levels, ``[1]`` and ``{"k": 1}`` 1, ``[[1]]`` 2. Well within what the JSON
#: reader handles on every supported interpreter, from a fresh stack.
MAX_DEPTH = 500


class NestingError(ValueError):
    """Data nested deeper than :data:`MAX_DEPTH` (``depth``: how deep, as far as counted;
    ``cycle``: the data contains itself)."""

    def __init__(self, depth: int, *, cycle: bool = False) -> None:
        what = "it refers to itself (a reference cycle)" if cycle else (f"{depth} levels of lists/dicts")
        super().__init__(f"data nested too deep: {what}; the limit is {MAX_DEPTH}")
        self.depth = depth
        self.cycle = cycle


# Raised for data that is not JSON-serialisable (RecursionError: a reference cycle or data
# too deep even on a fresh stack; NestingError, a ValueError: deeper than MAX_DEPTH).
EncodeError = (TypeError, ValueError, RecursionError)


def on_fresh_stack(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a new thread, whose stack starts empty: for recursive C code (the
    JSON encoder and scanner) that ran out of recursion depth on the caller's deep stack.
    Returns its result or raises its exception (a ``StopIteration`` too)."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)

    thread = threading.Thread(target=run, name="nova-json-fresh-stack", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def nesting(value: Any, limit: int = MAX_DEPTH) -> NestingError | None:
    """Without recursion: a :class:`NestingError` when ``value`` nests lists, tuples and
    dicts deeper than ``limit`` levels or contains itself, else None."""
    path: set[int] = set()  # ids of the containers on the current path
    stack: list[tuple[Any, Any]] = []  # (container, iterator over its children)
    if not isinstance(value, (list, tuple, dict)):
        return None
    path.add(id(value))
    stack.append((value, iter(value.values() if isinstance(value, dict) else value)))
    while stack:
        if len(stack) > limit:
            return NestingError(len(stack))
        container, children = stack[-1]
        for child in children:
            if isinstance(child, (list, tuple, dict)):
                if id(child) in path:
                    return NestingError(len(stack) + 1, cycle=True)
                path.add(id(child))
                stack.append((child, iter(child.values() if isinstance(child, dict) else child)))
                break
        else:
            stack.pop()
            path.discard(id(container))
    return None


# Bytes of a JSON text that matter for its depth: brackets ({ as [, } as ]) and quotes.
_KEEP = bytes.maketrans(b"{}", b"[]")
_DROP = bytes(b for b in range(256) if b not in b'[]{}"')


def text_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (C-speed string operations
    only: it runs on every large event appended)."""
    if "\\" in text:
        # Escaped backslashes, then escaped quotes, go: every quote left delimits a string.
        text = text.replace("\\\\", "").replace('\\"', "")
    kept = text.encode("utf-8", "surrogatepass").translate(_KEEP, _DROP)
    # Quotes now pair up left to right. Dropping two adjacent ones removes a string with no
    # bracket in it, or joins two strings with no bracket between them: either way what is
    # left inside and outside strings is unchanged. Most texts have no quote left after it.
    kept = kept.replace(b'""', b"")
    brackets = b"".join(kept.split(b'"')[::2]) if b'"' in kept else kept
    # Each pass removes the innermost pairs: one level.
    depth = 0
    while brackets and depth < 64:
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):  # unbalanced: not JSON
            break
        brackets = shorter
        depth += 1
    if not brackets:
        return depth
    steps = map({ord("["): 1, ord("]"): -1}.__getitem__, brackets)
    return depth + max(0, max(itertools.accumulate(steps), default=0))


def _check_depth(text: str) -> None:
    # Only text with more brackets than the limit can be too deep (the count is C speed;
    # brackets inside strings only make it larger).
    if text.count("[") + text.count("{") > MAX_DEPTH:
        depth = text_depth(text)
        if depth > MAX_DEPTH:
            raise NestingError(depth)


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


def _data_text(data: Any) -> str:
    try:
        return _value(data)
    except RecursionError:
        pass
    # Too deep for the caller's stack: within the limit it encodes on a fresh one; deeper
    # data (or a cycle) is named as such, not as a recursion failure.
    problem = nesting(data)
    if problem is not None:
        raise problem
    text: str = on_fresh_stack(_value, data)
    return text


def encode(event: Event) -> tuple[int, str]:
    """``(timestamp in microseconds since the epoch, JSON text)`` of an event; raises one of
    :data:`EncodeError` when its data is not JSON-serialisable, :class:`NestingError` when
    it is nested deeper than :data:`MAX_DEPTH`."""
    ts = event.timestamp
    micros = to_micros(ts)
    metadata = event.metadata
    data = _data_text(event.data)
    _check_depth(data)
    body = '{"id":%s,"type":%s,"data":%s,"metadata":%s,"timestamp":"%s"}' % (
        _escape(event.id),
        _escape(event.type),
        data,
        _value(dict(metadata)) if metadata else "{}",
        isoformat(ts, micros),
    )
    return micros, body


_c_make_scanner: Any = getattr(json.scanner, "c_make_scanner", None)
# The C scanner without json.loads' wrapper: about half the cost for these small texts. It
# holds the GIL for a whole call and clears its state after each, so threads can share it.
_scan: Callable[[str, int], tuple[Any, int]] | None = (
    None if _c_make_scanner is None else _c_make_scanner(json.JSONDecoder())
)


def _parse(body: str) -> Any:
    if _scan is None:  # pragma: no cover - interpreters without the C accelerator
        return json.loads(body)
    try:
        value, end = _scan(body, 0)
    except StopIteration as stop:  # the scanner's way to say "no JSON value here"
        raise ValueError(f"invalid JSON at character {stop.value}") from None
    if end != len(body):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return value


def decode(body: str) -> Event:
    """The event of a JSON text written by :func:`encode` (a plain :class:`nova.Event`);
    raises ``ValueError`` for text that is not one JSON value, ``nova.ValidationError`` for
    a value that is not an event, and :class:`NestingError` for text nested too deep to
    decode even on a fresh stack (written before :data:`MAX_DEPTH` was enforced)."""
    try:
        value = _parse(body)
    except RecursionError:
        # The caller's stack is too deep for this text: retry on a fresh one.
        try:
            value = on_fresh_stack(_parse, body)
        except RecursionError:
            raise NestingError(text_depth(body) - 1) from None  # -1: the event's own object
    return Event.from_dict(value)


_ID = re.compile(r'\{"id":("[^"\\]*(?:\\.[^"\\]*)*")')


def stored_id(body: str) -> str | None:
    """The event id at the start of a stored JSON text, read without decoding the rest
    (for naming an event that does not decode); None when there is none."""
    match = _ID.match(body)
    if match is None:
        return None
    try:
        found = json.loads(match.group(1))
    except ValueError:
        return None
    return found if isinstance(found, str) else None
