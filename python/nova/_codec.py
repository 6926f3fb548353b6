"""The one JSON codec of events: ``SqliteStore`` rows (:func:`encode`, :func:`decode`), the Redis
backend's stream entries (``JsonSerializer``: :func:`to_json`, :func:`decode`) and
``Event.to_json``/``Event.from_json`` (the Rust core calls :func:`to_json` and :func:`loads`).

The format: one JSON object with the keys ``id``, ``type``, ``data``, ``metadata`` and
``timestamp``, in that order, compact separators, the timestamp RFC 3339 with microseconds and
its UTC offset (``2024-05-01T12:00:00.000000+00:00``): the value of
``json.dumps(event.to_dict(), separators=(",", ":"))``. Made by json it is those very bytes;
made by orjson, non-ASCII text is raw UTF-8 rather than ``\u00e9`` escapes and a few floats are
spelt differently (``1e-7`` for ``1e-07``). Readers parse JSON and never compare bytes, so all
of these read the same, and so does the spaced ``Event.to_json`` text of earlier releases.
NaN and the infinities are refused by :func:`encode` (a store keeps standard JSON) and written
as ``NaN``/``Infinity`` by :func:`to_json`, as ``json.dumps`` does; both are read back.

orjson (the optional ``nova[orjson]`` extra; without it, as on free-threaded CPython where it has
no wheels, the standard library's ``json`` does everything) does the work where its result is the one ``json`` gives, and ``json``
everywhere else, so the value written and the errors raised do not depend on which ran:

- writing, orjson's text of ``data`` is kept only when it reads back equal to ``data`` (not
  for NaN, which orjson writes as ``null``, nor for the UUIDs and enums it writes and json
  refuses); what orjson refuses (integers past 64 bits, keys that are not ``str``, lone
  surrogates, more than 254 levels, datetimes, dataclasses, subclasses of ``str``/``int``/
  ``dict``/``list``) is left to json, which writes or refuses it as it always has;
- reading, texts with 19 digits in a row (maybe an integer past 64 bits, which orjson would
  make a float) and texts orjson refuses (``NaN``, lone surrogates, more than 1024 levels,
  errors) are read by json, for its value or its error.

Most events never reach either library: for an event of the ``Event`` class itself (a
subclass may override a getter) whose ``data`` is plain JSON (None, bool, int, float, str, and
lists, tuples and str-keyed dicts of them, each of exactly that type) and whose timestamp is in
UTC, the Rust core writes the text json would, byte for byte (``nova._core._event_json``);
everything else comes here. orjson is imported on the first encode or decode that needs it, not
by ``import nova``.

Depth: ``json`` recurses once per level of lists and dicts, bounded by the interpreter's
recursion limit counted from wherever it is called. So encoding refuses data nested deeper than
:data:`MAX_DEPTH` levels (:class:`NestingError`), a depth every supported interpreter decodes;
and both directions, when the caller's own stack is too deep for data within that limit, redo
the work on a fresh thread's stack instead of failing (see :func:`on_fresh_stack`). What
encodes, decodes from any caller.

Errors. Encoding raises one of :data:`EncodeError` with json's message, prefixed with where in
the data the offending value is (``data['items'][2]['price']: Object of type Decimal is not
JSON serializable``); callers add the event's id and type and what to do. Decoding raises
:class:`NestingError` for text nested too deep to read even on a fresh stack, and
``nova.ValidationError`` for the rest: text that is not JSON (json's reason and position in
the message) or JSON that is not an event (``Event.from_dict``'s message, naming the field).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from ._core import Event, _event_json
from .errors import ValidationError

__all__ = [
    "MAX_DEPTH",
    "NestingError",
    "EncodeError",
    "encode",
    "to_json",
    "loads",
    "decode",
    "stored_id",
    "nesting",
    "text_depth",
    "on_fresh_stack",
    "isoformat",
    "backend",
]

#: The deepest nesting of lists and dicts an event's ``data`` may have to be encoded: ``1`` and
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


#: What encoding raises for data that is not JSON-serialisable: TypeError (a type JSON has
#: not, a dict key that is not str, int, float, bool or None), ValueError (NaN or an infinity
#: where refused; NestingError, deeper than MAX_DEPTH or a reference cycle), RecursionError.
EncodeError = (TypeError, ValueError, RecursionError)


# ------------------------------------------------------------------------------- orjson

_orjson: Any = None  # the module once looked for; False when it is not installed
_OPTIONS = 0


def _load_orjson() -> Any:
    global _orjson, _OPTIONS
    try:
        import orjson  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        _orjson = False
        return False
    # datetimes, dataclasses and subclasses of str/int/dict/list go to `default` (_refuse), so
    # to json, which refuses the first two and writes the others its own way.
    _OPTIONS = (
        orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
    )
    _orjson = orjson
    return orjson


def backend() -> str:
    """``"orjson"`` or ``"json"``: what encodes and decodes in this process."""
    fast = _orjson if _orjson is not None else _load_orjson()
    return "orjson" if fast else "json"


# ------------------------------------------------------------------------------- stacks and depth


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
    only: it runs on every large event encoded)."""
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


def _check_depth(data_text: str) -> None:
    # Only text with more brackets than the limit can be too deep (the count is C speed;
    # brackets inside strings only make it larger).
    if data_text.count("[") + data_text.count("{") > MAX_DEPTH:
        depth = text_depth(data_text)
        if depth > MAX_DEPTH:
            raise NestingError(depth)


# ------------------------------------------------------------------------------- encoding

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = timedelta(microseconds=1)

# The last UTC second formatted, as (second since the epoch, "YYYY-MM-DDTHH:MM:SS"): events
# come in bursts within one second, and datetime.isoformat costs more than the JSON of a small
# event. One tuple, replaced whole, so threads never see a torn pair.
_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def isoformat(ts: datetime, micros: int) -> str:
    """``ts.isoformat(timespec="microseconds")``, given ``micros``, the microseconds since the
    epoch of ``ts``."""
    global _second
    if ts.tzinfo is not _UTC:
        return ts.isoformat(timespec="microseconds")
    second, micro = divmod(micros, 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, ts.isoformat(timespec="seconds")[:-6])
    return "%s.%06d+00:00" % (cached[1], micro)


# No circular-reference markers: a cycle ends in RecursionError, told apart from deep data by
# nesting(). allow_nan: whether NaN and the infinities are written (as NaN, Infinity), which
# JSON has not; the store refuses them, Event.to_json and the Redis serializer write them.
_STRICT = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False).encode
_LENIENT = json.JSONEncoder(separators=(",", ":"), allow_nan=True, check_circular=False).encode


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_TEMPLATE = '{"id":%s,"type":%s,"data":%s,"metadata":%s,"timestamp":"%s"}'


def _json_text(event: Event, micros: int, allow_nan: bool) -> str:
    """The event's text made by json (whose errors have the place of the bad value added)."""
    encode = _LENIENT if allow_nan else _STRICT
    data = event.data
    try:
        try:
            body = encode(data)
        except RecursionError:
            body = None
        if body is None:
            # Too deep for the caller's stack: within the limit it encodes on a fresh one;
            # deeper data (or a cycle) is named as such, not as a recursion failure.
            problem = nesting(data)
            if problem is not None:
                raise problem
            body = on_fresh_stack(encode, data)
    except NestingError:
        raise
    except (TypeError, ValueError) as exc:
        raise _located(exc, data, allow_nan) from None
    _check_depth(body)
    metadata = event.metadata  # str keys and values (Event checks them)
    return _TEMPLATE % (
        encode(event.id),  # a str: json's escaping, no encoder made
        encode(event.type),
        body,
        encode(dict(metadata)) if metadata else "{}",
        isoformat(event.timestamp, micros),
    )


_TEMPLATE_BYTES = _TEMPLATE.encode()

# Data of these exact types orjson writes as json does, or refuses: nothing to check.
_EXACT = frozenset({str, int, bool, type(None)})


def _fast_text(fast: Any, event: Event, micros: int) -> bytes | None:
    """The event's text made by orjson; None when json is to make it (or refuse it)."""
    dumps = fast.dumps
    data = event.data
    try:
        body: bytes = dumps(data, default=_refuse, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: a value orjson refuses, or too deep
        return None
    if type(data) not in _EXACT:
        # Kept only when it is what json writes: the same value read back. NaN (which orjson
        # writes as null), UUIDs and enums (which json refuses) are not.
        try:
            if fast.loads(body) != data:
                return None
        except Exception:  # noqa: BLE001 - an __eq__ of the data's own failed: json decides
            return None
    metadata = event.metadata
    try:
        return _TEMPLATE_BYTES % (
            dumps(event.id),
            dumps(event.type),
            body,
            dumps(dict(metadata)) if metadata else b"{}",
            isoformat(event.timestamp, micros).encode(),
        )
    except TypeError:  # a lone surrogate in the id, type or metadata
        return None


def _text(event: Event, micros: int, allow_nan: bool) -> str | bytes:
    fast = _orjson if _orjson is not None else _load_orjson()
    if fast:
        text = _fast_text(fast, event, micros)
        if text is not None:
            return text
    return _json_text(event, micros, allow_nan)


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // _MICROSECOND


# The Rust core's writer for plain data (None when it declines an event); the tests replace it
# to run the orjson and json routes on every event.
_native: Callable[[Event, bool], tuple[int, str] | None] = _event_json


def encode(event: Event, *, allow_nan: bool = False) -> tuple[int, str]:
    """``(timestamp in microseconds since the epoch, JSON text)`` of an event, for a store;
    raises one of :data:`EncodeError` when its data is not JSON-serialisable (NaN and the
    infinities included unless ``allow_nan``), :class:`NestingError` when it is nested deeper
    than :data:`MAX_DEPTH` or contains itself."""
    native = _native(event, allow_nan)
    if native is not None:
        return native
    micros = _micros(event.timestamp)
    text = _text(event, micros, allow_nan)
    return micros, text.decode() if isinstance(text, bytes) else text


def to_json(event: Event) -> str:
    """``Event.to_json``: the JSON text as a str; NaN and the infinities are written (as
    ``NaN``, ``Infinity``, as ``json.dumps`` does); raises like :func:`encode`."""
    native = _native(event, True)
    if native is not None:
        return native[1]
    text = _text(event, _micros(event.timestamp), True)
    return text.decode() if isinstance(text, bytes) else text


# ------------------------------------------------------------------------------- where the bad value is


def _located(exc: TypeError | ValueError, data: Any, allow_nan: bool) -> TypeError | ValueError:
    """json's error with the place of the offending value in front of its message
    (``data['items'][2]['price']: ...``); ``exc`` itself when none is found."""
    where = _find_bad(data, allow_nan)
    if where is None or type(exc) not in (TypeError, ValueError):
        return exc
    return type(exc)(f"{where}: {exc}")


_INF = float("inf")


def _bad_float(value: float, allow_nan: bool) -> bool:
    return not allow_nan and (value != value or value == _INF or value == -_INF)


def _find_bad(data: Any, allow_nan: bool) -> str | None:
    """Where the first value (or dict key) json refuses is, as ``data[...]``: searched without
    recursion, in the order json writes."""
    # (where, value, whether value is a dict key), last to be looked at first
    stack: list[tuple[str, Any, bool]] = [("data", data, False)]
    seen: set[int] = set()
    while stack:
        where, value, is_key = stack.pop()
        if is_key:
            if not (value is None or isinstance(value, (str, int, float))) or (
                isinstance(value, float) and _bad_float(value, allow_nan)
            ):
                return f"{where} (the key {value!r})"
        elif value is None or isinstance(value, (str, int)):
            pass
        elif isinstance(value, float):
            if _bad_float(value, allow_nan):
                return where
        elif isinstance(value, (list, tuple, dict)):
            if id(value) in seen:  # looked at already (or a cycle)
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                for key, child in reversed(list(value.items())):
                    stack.append((f"{where}[{key!r}]", child, False))
                    stack.append((where, key, True))
            else:
                stack.extend((f"{where}[{i}]", child, False) for i, child in reversed(list(enumerate(value))))
        else:
            return where
    return None


# ------------------------------------------------------------------------------- decoding

# Integers of 19 digits or more may be past 64 bits, which orjson reads as floats: a text with
# 19 digits in a row goes to json (found at C speed: every digit made a "0", then one search).
_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
_FROM_ISO = datetime.fromisoformat


def _parse(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        pass
    # The caller's stack is too deep for this text: again on a fresh one.
    try:
        return on_fresh_stack(json.loads, text)
    except RecursionError:
        as_str = text if isinstance(text, str) else bytes(text).decode("utf-8", "replace")
        raise NestingError(text_depth(as_str) - 1) from None  # -1: the event's own object


def loads(text: str | bytes) -> Any:
    """The value of a JSON text (str or UTF-8 bytes), as ``json.loads`` reads it (``NaN``,
    integers of any size); raises ``ValueError`` (``json.JSONDecodeError``, or
    :class:`NestingError` for text too deep to read even on a fresh stack) or ``TypeError``
    for what is not text."""
    fast = _orjson if _orjson is not None else _load_orjson()
    if fast:
        raw: bytes | bytearray | None
        if isinstance(text, str):
            raw = text.encode("utf-8", "surrogatepass")  # lone surrogates: orjson refuses
        elif isinstance(text, (bytes, bytearray)):
            raw = text
        else:
            raw = None  # json gives the TypeError
        if raw is not None and _LONG_RUN not in raw.translate(_DIGITS_TO_0):
            try:
                return fast.loads(raw)
            except ValueError:  # orjson.JSONDecodeError: json gives the value or the error
                pass
    return _parse(text)


def decode(text: str | bytes) -> Event:
    """The event of a JSON text (a plain :class:`nova.Event`): raises
    ``nova.ValidationError`` for text that is not JSON or JSON that is not an event, and
    :class:`NestingError` for text nested too deep to decode even on a fresh stack (written
    before :data:`MAX_DEPTH` was enforced)."""
    try:
        value = loads(text)
    except NestingError:
        raise
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"the event's text is not valid JSON ({type(exc).__name__}: {exc})") from exc
    # What encode writes, made directly; anything else, or any error, goes through
    # Event.from_dict, the reference reader, for its result or its error.
    if type(value) is dict and len(value) == 5:
        try:
            ts = value["timestamp"]
            if type(ts) is str:
                return Event(
                    value["type"],
                    value["data"],
                    id=value["id"],
                    metadata=value["metadata"],
                    timestamp=_FROM_ISO(ts),
                )
        except Exception:  # noqa: BLE001 - from_dict gives the proper error below
            pass
    return Event.from_dict(value)


_ID = re.compile(r'\{\s*"id"\s*:\s*("[^"\\]*(?:\\.[^"\\]*)*")')


def stored_id(text: str) -> str | None:
    """The event id at the start of a JSON text, read without decoding the rest (for naming
    an event that does not decode); None when there is none."""
    match = _ID.match(text)
    if match is None:
        return None
    try:
        found = json.loads(match.group(1))
    except ValueError:
        return None
    return found if isinstance(found, str) else None
