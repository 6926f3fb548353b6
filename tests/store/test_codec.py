"""nova._codec, the one JSON codec of events (SqliteStore rows, Redis stream entries,
Event.to_json/from_json): round trips of odd data, the wire format, what older writers wrote,
and the errors for data that does not encode and text that does not decode. Every test runs
with orjson (when installed) and with the standard library's json: both must agree. orjson has
no wheels for free-threaded CPython: there the tests run on json alone."""

from __future__ import annotations

import collections
import dataclasses
import decimal
import enum
import json
import math
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import hypothesis
from hypothesis import strategies as st

import nova
from nova import _codec
from nova.backends.redis import JsonSerializer

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
if not FREE_THREADED:
    # Installed with the test requirements wherever it has wheels: without it these tests fail,
    # never skip.
    import orjson  # noqa: F401

KEYS = ["id", "type", "data", "metadata", "timestamp"]
LIBRARIES = ["json"] if FREE_THREADED else ["orjson", "json"]
# "native": the Rust core's writer for plain data first (what runs by default), the library
# for what it declines; the others: that library for every event.
BACKENDS = ["native", *LIBRARIES]


def test_the_backend_is_orjson_where_it_has_wheels_else_json() -> None:
    assert _codec.backend() == LIBRARIES[0]


def _declined(event: nova.Event, allow_nan: bool) -> None:
    return None


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "native":
        yield request.param
        return
    monkeypatch.setattr(_codec, "_native", _declined)
    if request.param == "orjson":
        monkeypatch.setattr(_codec, "_orjson", None)  # looked up again: found
    else:
        monkeypatch.setattr(_codec, "_orjson", False)  # as if not installed
    assert _codec.backend() == request.param
    yield request.param


def nested(depth: int, leaf: Any = 1) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def same_event(a: nova.Event, b: nova.Event) -> None:
    assert (a.id, a.type, dict(a.metadata), a.timestamp) == (b.id, b.type, dict(b.metadata), b.timestamp)
    assert a.timestamp.utcoffset() == b.timestamp.utcoffset()
    assert a.to_dict() == b.to_dict()


ODD_DATA: list[Any] = [
    None,
    True,
    0,
    "",
    'é ☃ \u2028\u2029 "quoted" \\ back\\slash / \x00 \x1f \x7f 🎉 日本',
    "\ud800 lone \udfff surrogates",
    {"": {}, "nested": {"a": [1, [2, [3, {"b": None}]]]}, "ü": ["ß"]},
    [2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 2**100, -(10**30), 10**18],
    {"n": 1234567890123456789, "m": -9999999999999999999, "s": "12345678901234567890 digits in a string"},
    [0.1, 2.5, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 123456789.123456789, 1.0],
    {"1": "key that looks like a number", "k" * 1000: "long key"},
    [[], {}, [[]], [{}]],
    nested(300),  # past orjson's own depth limit: json writes it
    12.5,
    "x" * 100_000,
]

TIMESTAMPS = [
    datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc),
    datetime(2024, 1, 1, 0, 0, 0, 0, tzinfo=timezone.utc),
    datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(1999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-7))),
    datetime(1970, 1, 1, tzinfo=timezone(timedelta(hours=14))),
    datetime(1, 1, 1, 12, 0, tzinfo=timezone.utc),
    datetime(9999, 12, 31, 0, 0, 0, 999999, tzinfo=timezone(timedelta(minutes=-59))),
    datetime(2024, 5, 1, 12, 0, 0, 123456),  # naive: UTC
]


@pytest.mark.parametrize("data", ODD_DATA, ids=range(len(ODD_DATA)))
def test_odd_data_round_trips_exactly(backend: str, data: Any) -> None:
    event = nova.Event("odd.data", data, metadata={"trace": "t-1", "é": "ü ☃", "": ""})
    micros, text = _codec.encode(event)
    assert micros == (event.timestamp - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(
        microseconds=1
    )
    back = _codec.decode(text)
    same_event(back, event)
    assert back.data == data
    assert json.dumps(back.data) == json.dumps(data)  # ints stay ints, floats floats
    # and from bytes, the Redis serializer, Event.from_json and to_json
    same_event(_codec.decode(text.encode("utf-8", "surrogatepass")), event)
    wire = JsonSerializer().dumps(event)
    same_event(JsonSerializer().loads(wire.encode("utf-8", "surrogatepass")), event)
    same_event(nova.Event.from_json(text), event)
    same_event(_codec.decode(_codec.to_json(event)), event)
    same_event(_codec.decode(event.to_json()), event)


@pytest.mark.parametrize("ts", TIMESTAMPS, ids=range(len(TIMESTAMPS)))
def test_timestamps_keep_their_instant_and_offset(backend: str, ts: datetime) -> None:
    event = nova.Event("t.x", {"at": "x"}, timestamp=ts)
    _, text = _codec.encode(event)
    stamp = json.loads(text)["timestamp"]
    assert stamp == event.timestamp.isoformat(timespec="microseconds")
    back = _codec.decode(text)
    assert back.timestamp == event.timestamp
    assert back.timestamp.utcoffset() == event.timestamp.utcoffset()


def test_the_format_is_compact_json_of_to_dict(backend: str) -> None:
    event = nova.Event("a.b", {"x": [1, "two", None, True], "é": 2.5}, metadata={"k": "v"})
    _, text = _codec.encode(event)
    assert list(json.loads(text)) == KEYS
    assert json.loads(text) == event.to_dict()
    assert ", " not in text and ": " not in text
    assert _codec.to_json(event) == text == JsonSerializer().dumps(event)
    ascii_event = nova.Event("a.b", {"x": [1, "two", None, True, -3], "y": {"z": ""}}, metadata={"k": "v"})
    # ASCII data of str, int, bool, None: the very bytes json.dumps gives, whatever the backend
    assert _codec.encode(ascii_event)[1] == json.dumps(ascii_event.to_dict(), separators=(",", ":"))


def test_json_backend_writes_what_the_previous_store_codec_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_codec, "_orjson", False)
    event = nova.Event("a.b", {"é": [1.5, 1e16, 10**30, None]}, metadata={"ü": "ß"})
    assert _codec.encode(event)[1] == json.dumps(event.to_dict(), separators=(",", ":"))


def test_both_backends_write_the_same_value(monkeypatch: pytest.MonkeyPatch) -> None:
    for data in ODD_DATA:
        event = nova.Event("a.b", data, metadata={"é": "ü"})
        monkeypatch.setattr(_codec, "_orjson", False)
        by_json = _codec.encode(event)[1]
        monkeypatch.setattr(_codec, "_orjson", None)
        by_orjson = _codec.encode(event)[1]
        assert json.loads(by_json) == json.loads(by_orjson)


OLD_TEXTS = [
    # Event.to_json of earlier releases: json.dumps's spaced separators, \\u escapes
    '{"id": "e-1", "type": "a.b", "data": {"x": [1, 2.5, "\\u00e9"]}, "metadata": {"k": "v"}, '
    '"timestamp": "2024-01-02T03:04:05.000006+02:00"}',
    # the store's rows and the Redis serializer's entries: compact, \\u escapes
    '{"id":"e-1","type":"a.b","data":{"x":[1,2.5,"\\u00e9"]},"metadata":{"k":"v"},'
    '"timestamp":"2024-01-02T03:04:05.000006+02:00"}',
    # raw UTF-8, other whitespace
    '{ "id" : "e-1" , "type" : "a.b" , "data" : {"x": [1, 2.5, "é"]} , "metadata" : {"k": "v"} ,\n'
    ' "timestamp" : "2024-01-02T03:04:05.000006+02:00" }',
]


@pytest.mark.parametrize("text", OLD_TEXTS, ids=["to_json", "compact", "spaced-utf8"])
def test_text_of_earlier_writers_decodes(backend: str, text: str) -> None:
    for given in (text, text.encode()):
        event = _codec.decode(given)
        assert (event.id, event.type, event.data, dict(event.metadata)) == (
            "e-1",
            "a.b",
            {"x": [1, 2.5, "é"]},
            {"k": "v"},
        )
        assert event.timestamp == datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    assert _codec.stored_id(text) == "e-1"


def test_nan_and_infinities_written_by_to_json_and_redis_read_back(backend: str) -> None:
    event = nova.Event("m.x", {"v": [float("nan"), float("inf"), -float("inf"), 1.5]})
    text = _codec.to_json(event)
    assert "NaN" in text and "-Infinity" in text
    for back in (_codec.decode(text), JsonSerializer().loads(JsonSerializer().dumps(event).encode())):
        v = back.data["v"]
        assert math.isnan(v[0]) and v[1:] == [math.inf, -math.inf, 1.5]


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


Pair = collections.namedtuple("Pair", "a b")


@pytest.mark.parametrize(
    ("data", "where", "what"),
    [
        ({"t": {1, 2}}, "data['t']", "set"),
        ([1, object()], "data[1]", "object"),
        ({"u": [uuid.UUID(int=1)]}, "data['u'][0]", "UUID"),  # orjson would write these...
        ({"c": Colour.RED}, "data['c']", "Colour"),
        ({"d": datetime(2024, 1, 1)}, "data['d']", "datetime"),
        ({"p": Point(1)}, "data['p']", "Point"),  # ... and these
        ({"b": b"bytes"}, "data['b']", "bytes"),
        ({"m": decimal.Decimal("1.5")}, "data['m']", "Decimal"),
        ({"ok": 1, "k": {(1, 2): "tuple key"}}, "data['k'] (the key (1, 2))", "keys must be str"),
        ({"n": [0, {"z": float("nan")}]}, "data['n'][1]['z']", "Out of range float"),
        ({"i": -float("inf")}, "data['i']", "Out of range float"),
        (float("inf"), "data", "Out of range float"),
    ],
)
def test_data_that_is_not_json_names_where_it_is(backend: str, data: Any, where: str, what: str) -> None:
    event = nova.Event("bad.x", data)
    with pytest.raises(_codec.EncodeError) as info:
        _codec.encode(event)
    message = str(info.value)
    assert message.startswith(where + ": "), message
    assert what in message
    # the store names the event, the place and the fix
    with nova.SqliteStore(":memory:") as store:
        with pytest.raises(nova.ValidationError) as stored:
            store.append("s", event)
        text = str(stored.value)
        assert event.id in text and "bad.x" in text and where in text and "JSON" in text
        assert "Store dicts, lists, str, int, finite float, bool and None only" in text


def test_the_error_is_the_same_with_either_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for data in ({"u": uuid.UUID(int=5)}, [1, {2}], {"f": float("nan")}, {"k": {None: Colour.RED}}):
        event = nova.Event("a.b", data)
        messages = []
        for fast in (None, False):
            monkeypatch.setattr(_codec, "_orjson", fast)
            with pytest.raises(_codec.EncodeError) as info:
                _codec.encode(event)
            messages.append((type(info.value), str(info.value)))
        assert messages[0] == messages[1]


def test_subclasses_are_written_as_json_writes_them(backend: str) -> None:
    data = {
        "level": Level.HIGH,
        "name": Name("n"),
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "pair": Pair(1, 2),
        "tuple": (1, (2, 3)),
        "keys": {7: "int", 2.5: "float", False: "bool", None: "none"},
    }
    _, text = _codec.encode(nova.Event("a.b", data))
    assert json.loads(text)["data"] == json.loads(json.dumps(data))


def test_depth_limit_and_cycles(backend: str) -> None:
    deepest = nova.Event("d.x", nested(_codec.MAX_DEPTH))
    assert _codec.decode(_codec.encode(deepest)[1]).data == deepest.data
    assert _codec.decode(_codec.to_json(deepest)).data == deepest.data
    with pytest.raises(_codec.NestingError, match="nested too deep") as info:
        _codec.encode(nova.Event("d.x", nested(_codec.MAX_DEPTH + 1)))
    assert info.value.depth == _codec.MAX_DEPTH + 1 and not info.value.cycle
    loop: list[Any] = []
    loop.append(loop)
    for encode in (_codec.encode, _codec.to_json):
        with pytest.raises(_codec.NestingError, match="refers to itself") as info:
            encode(nova.Event("d.x", {"loop": loop}))
        assert info.value.cycle


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("nope", r"not valid JSON \(JSONDecodeError: Expecting value: line 1 column 1 \(char 0\)\)"),
        ("", "not valid JSON"),
        ('{"id":"e","type":"a"', "not valid JSON"),
        ('{"id":"e","type":"a"} trailing', "Extra data"),
        (b"\xff\xfe\x00", "not valid JSON"),
        ("[1]", "Event.from_dict expects a dict, got list"),
        ('{"id":"e"}', "the key 'type' is missing"),
        ('{"id":"","type":"a"}', "Event.id must be a non-empty str"),
        ('{"id":"e","type":"a","data":1,"metadata":{},"timestamp":"yesterday"}', "not an RFC 3339 timestamp"),
        (
            '{"id":"e","type":"a","data":1,"metadata":{"k":1},"timestamp":"2024-01-01T00:00:00+00:00"}',
            "metadata",
        ),
        ('{"id":"e","type":"a","data":1,"metadata":{},"timestamp":"2024-01-01T00:00:00+00:00","x":1}', None),
    ],
)
def test_text_that_is_not_an_event_gives_validation_error(
    backend: str, text: str | bytes, match: str | None
) -> None:
    if match is None:  # an extra key: read by Event.from_dict, which ignores it
        assert _codec.decode(text).id == "e"
        return
    for given in (text, text if isinstance(text, bytes) else text.encode()):
        with pytest.raises(nova.ValidationError, match=match):
            _codec.decode(given)
    with pytest.raises(nova.ValidationError):
        JsonSerializer().loads(text if isinstance(text, bytes) else text.encode())


def test_text_too_deep_to_read_is_a_nesting_error(backend: str) -> None:
    depth = max(sys.getrecursionlimit(), 1000) * 200
    text = '{"id":"e","type":"a","data":%s}' % ("[" * depth + "]" * depth)
    with pytest.raises(_codec.NestingError):
        _codec.decode(text)
    # 990 levels (written before the limit): read, on a fresh stack if need be
    text = '{"id":"e","type":"a","data":%s}' % ("[" * 990 + "]" * 990)
    assert _codec.decode(text).id == "e"


def test_loads_reads_like_json_loads(backend: str) -> None:
    for text in [
        "[NaN, Infinity, -Infinity]",
        "[18446744073709551616, -9223372036854775809]",
        '["\\ud800"]',
        "[1E400]",
    ]:
        got, want = _codec.loads(text), json.loads(text)
        assert repr(got) == repr(want)
        assert repr(_codec.loads(text.encode())) == repr(want)
    with pytest.raises(TypeError):
        _codec.loads(12)  # type: ignore[arg-type]


def test_sqlite_store_round_trip(backend: str, tmp_path: Path) -> None:
    events = [nova.Event("s.x", data, metadata={"é": "ü"}) for data in ODD_DATA if data != nested(300)]
    events += [nova.Event("s.t", i, timestamp=ts) for i, ts in enumerate(TIMESTAMPS)]
    with nova.SqliteStore(tmp_path / "c.db") as store:
        store.append("s", *events)
    with nova.SqliteStore(tmp_path / "c.db") as store:
        got = list(store.read_stream("s"))
    assert len(got) == len(events)
    for back, event in zip(got, events):
        same_event(back, event)
        assert back.data == event.data


def test_import_nova_does_not_import_orjson() -> None:
    code = "import sys, nova; nova.Event('a'); print('orjson' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"


# -- the Rust core's writer for plain data -----------------------------------------------------

_plain_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
_plain_data = st.recursive(
    _plain_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    data=_plain_data,
    metadata=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
    allow_nan=st.booleans(),
    ts=st.one_of(st.none(), st.sampled_from(TIMESTAMPS)),
)
def test_native_writer_writes_the_bytes_json_writes_or_declines(
    data: Any, metadata: dict[str, str], allow_nan: bool, ts: datetime | None
) -> None:
    event = nova.Event("a.b\u00e9", data, metadata=metadata, timestamp=ts)
    native = _codec._event_json(event, allow_nan)
    try:
        want: Any = (
            _codec._micros(event.timestamp),
            _codec._json_text(event, _codec._micros(event.timestamp), allow_nan),
        )
    except (TypeError, ValueError):
        want = None  # json refuses it (NaN in a store): the writer must leave it to json
    if native is None:
        # Declined only where it must be: json refuses the data, a str has a lone surrogate
        # (no UTF-8 form), or the timestamp is in another zone (isoformat spells it).
        spelt = json.dumps([data, metadata], ensure_ascii=False, allow_nan=True)
        has_surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in spelt)
        other_zone = ts is not None and ts.tzinfo not in (None, timezone.utc)
        assert want is None or has_surrogate or other_zone
        return
    assert native == want


def test_native_writer_takes_plain_events_and_declines_the_rest() -> None:
    plain = nova.Event("order.created", {"n": [1, 2.5, None, True, "x"]}, metadata={"customer_id": "c1"})
    assert _codec._event_json(plain, False) is not None
    assert _codec._event_json(nova.Event("a.b", "\ud800"), False) is None  # lone surrogate
    assert _codec._event_json(nova.Event("a.b", float("nan")), False) is None  # json's error
    assert _codec._event_json(nova.Event("a.b", Level.HIGH), False) is None  # a subclass
    assert _codec._event_json(nova.Event("a.b", {1: "x"}), False) is None  # a key json converts
    assert _codec._event_json(nova.Event("a.b", nested(65)), False) is None  # deep: json's limit
    assert _codec._event_json(nova.Event("a.b", nested(63)), False) is not None
    offset = datetime(2024, 5, 1, tzinfo=timezone(timedelta(hours=2)))
    assert _codec._event_json(nova.Event("a.b", 1, timestamp=offset), False) is None  # isoformat's

    class Overriding(nova.Event):
        @property
        def data(self) -> Any:
            return "what the getter says"

    # A subclass's getters decide what it holds: its events take the library's route.
    assert _codec._event_json(Overriding("a.b", 1), False) is None
    assert json.loads(_codec.encode(Overriding("a.b", 1))[1])["data"] == "what the getter says"
    cycle: list[Any] = []
    cycle.append(cycle)
    assert _codec._event_json(nova.Event("a.b", cycle), False) is None


def test_native_writer_with_data_changed_by_other_threads() -> None:
    # With the GIL off another thread can change the data while it is written: the writer
    # writes a snapshot of each list and dict (never declining for that: json's C encoder, the
    # route a declined event takes, can crash on 3.13t when its data changes under it), and
    # each text is some state of the data, never a crash or a torn text.
    import threading

    shared_list: list[Any] = list(range(50))
    shared_dict: dict[str, Any] = {str(i): i for i in range(50)}
    event = nova.Event("a.b", {"l": shared_list, "d": shared_dict})
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            shared_list.append(i)
            shared_dict[f"k{i % 100}"] = i
            if len(shared_list) > 100:
                del shared_list[:60]
            shared_dict.pop(f"k{(i + 50) % 100}", None)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(2000):
            written = _codec._event_json(event, False)
            assert written is not None
            assert set(json.loads(written[1])["data"]) == {"l", "d"}
    finally:
        stop.set()
        for t in threads:
            t.join()
