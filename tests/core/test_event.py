"""nova.Event: identity, immutability, serialisation, validation (API section 2)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import nova
from nova import Event, ValidationError


class OrderCreated(Event):
    @property
    def order_id(self) -> str:
        return str(self.data["id"])


def test_defaults_are_uuid7_ids_and_aware_utc_timestamps() -> None:
    before = datetime.now(timezone.utc)
    ev = Event("order.created", {"id": 1})
    after = datetime.now(timezone.utc)
    assert ev.type == "order.created"
    assert ev.data == {"id": 1}
    assert len(ev.id) == 36 and ev.id[14] == "7"  # version nibble
    assert ev.timestamp.tzinfo is not None
    assert before - timedelta(milliseconds=1) <= ev.timestamp <= after + timedelta(milliseconds=1)
    assert dict(ev.metadata) == {}


def test_ids_are_unique_and_time_ordered() -> None:
    ids = [Event("a.b").id for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_event_is_immutable() -> None:
    ev = Event("a.b", [1], metadata={"k": "v"})
    for attr in ("id", "type", "data", "metadata", "timestamp"):
        with pytest.raises(AttributeError):
            setattr(ev, attr, None)
    with pytest.raises(AttributeError):
        ev.other = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        ev.metadata["k"] = "w"  # type: ignore[index]
    assert ev.data == [1]


def test_data_is_not_copied() -> None:
    payload = {"x": 1}
    assert Event("a.b", payload).data is payload


def test_metadata_is_copied_from_the_caller() -> None:
    md = {"k": "v"}
    ev = Event("a.b", metadata=md)
    md["k"] = "changed"
    assert ev.metadata["k"] == "v"


def test_metadata_keeps_order_and_is_read_only() -> None:
    ev = Event("a.b", metadata={"z": "1", "a": "2", "m": "3"})
    assert list(ev.metadata) == ["z", "a", "m"]
    assert ev.metadata == {"z": "1", "a": "2", "m": "3"}
    with pytest.raises(TypeError):
        ev.metadata["z"] = "x"  # type: ignore[index]
    assert Event("a.b").metadata == {} and Event("a.b", metadata={}).metadata == {}
    # any Mapping[str, str], a later value for an equal key winning as in a dict
    assert Event("a.b", metadata=_Pairs([("k", "1"), ("k", "2")])).metadata == {"k": "2"}


class _Pairs(dict[str, str]):
    """A dict subclass built from pairs: the mapping route, not the exact-dict one."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self._pairs = pairs

    def items(self) -> Any:
        return iter(self._pairs)


def test_ordering_key_found_by_equal_key_not_only_the_same_object() -> None:
    # Keys are compared by identity first (interned literals), then by value: a key built at
    # run time routes the event as the literal does.
    built = "".join(["customer", "_id"])
    assert built == "customer_id" and built is not "customer_id"  # noqa: F632
    same = nova._core.event_partition(Event("a.b", metadata={built: "c-42"}), "customer_id", 16, "t")
    assert same == nova._core.partition("c-42", 16)
    assert nova._core.event_partition(Event("a.b", metadata={"other": "c-42"}), "customer_id", 16, "t") == (
        nova._core.partition("", 16)
    )


def test_with_metadata_merges_and_keeps_identity() -> None:
    ev = Event("a.b", 1, metadata={"a": "1", "b": "2"})
    ev2 = ev.with_metadata(b="3", c="4")
    assert dict(ev2.metadata) == {"a": "1", "b": "3", "c": "4"}
    assert ev2.id == ev.id and ev2.timestamp == ev.timestamp and ev2.data == 1
    assert dict(ev.metadata) == {"a": "1", "b": "2"}


def test_replace_fields() -> None:
    ev = Event("a.b", 1)
    r = ev.replace(type="c.d", data=2)
    assert (r.type, r.data, r.id, r.timestamp) == ("c.d", 2, ev.id, ev.timestamp)
    ts = datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert ev.replace(id="x", timestamp=ts).id == "x"
    assert ev.replace(timestamp=ts).timestamp == ts


def test_equality_and_hash_by_id() -> None:
    a = Event("a.b", 1, id="same")
    b = Event("c.d", 2, id="same")
    assert a == b and hash(a) == hash(b)
    assert a != Event("a.b", 1)
    generated = Event("a.b")
    assert generated == Event("x.y", id=generated.id)
    assert hash(generated) == hash(Event("x.y", id=generated.id))
    assert a != "same"


def test_repr_shows_id_and_type() -> None:
    ev = Event("a.b", id="abc")
    assert repr(ev) == "Event(id='abc', type='a.b')"


def test_pickle_and_copy_round_trip() -> None:
    ev = OrderCreated("order.created", {"id": 7}, metadata={"k": "v"})
    back = pickle.loads(pickle.dumps(ev))
    assert type(back) is OrderCreated
    assert (back.id, back.type, back.data, dict(back.metadata), back.timestamp) == (
        ev.id,
        ev.type,
        ev.data,
        dict(ev.metadata),
        ev.timestamp,
    )
    assert copy.copy(ev) is ev and copy.deepcopy(ev) is ev


def test_dict_and_json_round_trip_exactly() -> None:
    ev = Event("a.b", {"n": [1, 2]}, metadata={"k": "v"})
    d = ev.to_dict()
    assert set(d) == {"id", "type", "data", "metadata", "timestamp"}
    assert d["timestamp"].endswith("+00:00") and "." in d["timestamp"]
    for back in (Event.from_dict(d), Event.from_json(ev.to_json())):
        assert (back.id, back.type, back.data, dict(back.metadata), back.timestamp) == (
            ev.id,
            ev.type,
            ev.data,
            dict(ev.metadata),
            ev.timestamp,
        )
    assert type(OrderCreated.from_json(ev.to_json())) is OrderCreated


def test_to_json_rejects_unserialisable_data() -> None:
    with pytest.raises(ValidationError, match="JSON"):
        Event("a.b", object()).to_json()


def test_timestamps_given_and_naive_mean_utc() -> None:
    naive = datetime(2024, 5, 1, 12, 0, 0, 123456)
    ev = Event("a.b", timestamp=naive)
    assert ev.timestamp == naive.replace(tzinfo=timezone.utc)
    other = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert Event("a.b", timestamp=other).timestamp == other


def test_subclass_keeps_class_through_methods() -> None:
    ev = OrderCreated("order.created", {"id": 3})
    assert type(ev.with_metadata(a="b")) is OrderCreated
    assert type(ev.replace(data={"id": 4})) is OrderCreated
    assert ev.replace(data={"id": 4}).order_id == "4"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"type": ""}, "type"),
        ({"type": 5}, "type"),
        ({"type": "a.b", "id": ""}, "id"),
        ({"type": "a.b", "id": 3}, "id"),
        ({"type": "a.b", "metadata": {"k": 1}}, "metadata"),
        ({"type": "a.b", "metadata": {1: "v"}}, "metadata"),
        ({"type": "a.b", "metadata": [1, 2]}, "metadata"),
        ({"type": "a.b", "timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, object], field: str) -> None:
    t = kwargs.pop("type")
    with pytest.raises(ValidationError, match=field):
        Event(t, **kwargs)  # type: ignore[arg-type]


def test_validation_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Event("")


@pytest.mark.parametrize("name", ["order.created", "inventory.stock.depleted", "order.created.v2", "a_b.c1"])
def test_strict_type_names_accepts_domain_action(name: str) -> None:
    nova.strict_type_names(Event(name))


@pytest.mark.parametrize(
    "name", ["CreateUser", "order_completed", "PAYMENT-FAILED", "order", "order..x", "1a.b", "a.B"]
)
def test_strict_type_names_rejects_others(name: str) -> None:
    with pytest.raises(ValidationError):
        nova.strict_type_names(Event(name))


def test_every_call_form_checks_the_same_way() -> None:
    # Event(type) and Event(type, data) have a fast route; keywords take the ordinary one.
    makers: list[Callable[[Any], Event]] = [
        lambda t: Event(t),
        lambda t: Event(t, 1),
        lambda t: Event(type=t),
        lambda t: Event(t, data=1),
    ]
    for make in makers:
        with pytest.raises(ValidationError, match=r"Event.type must be a non-empty str, got ''"):
            make("")
        with pytest.raises(ValidationError, match=r"Event.type must be a non-empty str, got int"):
            make(5)
    assert Event("a.b", None).data is None and Event(type="a.b", data=2).data == 2
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        Event()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional arguments"):
        Event("a.b", 1, 2)  # type: ignore[arg-type, call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        Event("a.b", colour="red")  # type: ignore[call-arg]


def test_subclass_init_and_new_still_run() -> None:
    seen: list[tuple[object, ...]] = []

    class WithInit(Event):
        def __init__(self, *args: object, **kwargs: object) -> None:
            seen.append(("init", *args))

    class WithNew(Event):
        def __new__(cls, order_id: int) -> WithNew:
            seen.append(("new", order_id))
            return super().__new__(cls, "order.created", {"id": order_id})

    a = WithInit("a.b", 1)
    b = WithNew(7)
    assert type(a) is WithInit and a.data == 1
    assert type(b) is WithNew and b.type == "order.created" and b.data == {"id": 7}
    assert seen == [("init", "a.b", 1), ("new", 7)]


def test_an_init_assigned_to_event_runs() -> None:
    seen: list[tuple[object, ...]] = []
    Event.__init__ = lambda self, *args, **kwargs: seen.append(args)  # type: ignore[method-assign]
    try:
        Event("a.b", 1)
    finally:
        del Event.__init__
    Event("a.b", 2)
    assert seen == [("a.b", 1)]
