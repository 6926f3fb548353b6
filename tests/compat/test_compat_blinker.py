"""nova.compat.blinker behaves like blinker 1.9 (written from blinker's documented behaviour)."""

from __future__ import annotations

import asyncio
import gc
import pickle
import weakref
from collections.abc import Callable
from typing import Any

import blinker as real_blinker
import pytest

from nova.compat import blinker
from nova.compat._table import SignalTable
from nova.compat.blinker import ANY, NamedSignal, Namespace, Signal, default_namespace, signal


class Sender:
    """A weakly referenceable sender."""


def collect() -> None:
    gc.collect()


# -- basics ----------------------------------------------------------------------------------------


def test_import_surface_and_rust_dispatch() -> None:
    assert set(blinker.__all__) >= {
        "ANY",
        "NamedSignal",
        "Namespace",
        "Signal",
        "signal",
        "default_namespace",
    }
    assert isinstance(Signal(), SignalTable)
    assert Signal.send is SignalTable.send
    assert Signal.ANY is ANY


def test_send_returns_receiver_result_pairs() -> None:
    sig = Signal()

    def r1(sender: Any, **kw: Any) -> Any:
        return ("r1", sender, kw)

    def r2(sender: Any, **kw: Any) -> Any:
        return "r2"

    sig.connect(r1)
    sig.connect(r2)
    assert sig.send("me", a=1) == [(r1, ("r1", "me", {"a": 1})), (r2, "r2")]
    assert sig.send() == [(r1, ("r1", None, {})), (r2, "r2")]
    assert Signal().send("nobody") == []


def test_sender_is_positional_only_and_kwargs_pass_through() -> None:
    sig = Signal()
    got: list[Any] = []
    sig.connect(lambda s, **kw: got.append((s, kw)), weak=False)
    sig.send(1, sender="kw", _other=2)
    assert got == [(1, {"sender": "kw", "_other": 2})]


def test_receiver_exception_propagates() -> None:
    sig = Signal()

    def bad(sender: Any) -> None:
        raise ValueError("bad")

    sig.connect(bad)
    with pytest.raises(ValueError, match="bad"):
        sig.send()


def test_doc_and_named_signal() -> None:
    assert Signal("the doc").__doc__ == "the doc"
    ns = NamedSignal("saved", doc="Saved.")
    assert ns.name == "saved" and ns.__doc__ == "Saved."
    assert repr(ns).endswith("; 'saved'>")
    assert repr(ANY) == "ANY"
    assert pickle.loads(pickle.dumps(ANY)) is ANY


def test_namespace_and_signal() -> None:
    ns = Namespace()
    assert isinstance(ns, dict) and not ns
    s = ns.signal("a", doc="A.")
    assert s is ns.signal("a") and s is not ns.signal("b")
    assert isinstance(s, NamedSignal) and s.__doc__ == "A."
    assert sorted(ns) == ["a", "b"]
    g = signal("nova-test-signal")
    assert g is signal("nova-test-signal") is default_namespace["nova-test-signal"]


# -- weak and strong receivers -----------------------------------------------------------------------


def test_weak_function_receiver_goes_away() -> None:
    sig = Signal()

    def receiver(sender: Any) -> str:
        return "alive"

    sig.connect(receiver)
    assert isinstance(sig.receivers[id(receiver)], weakref.ref)
    assert sig.send() == [(receiver, "alive")]
    del receiver
    collect()
    assert sig.send() == []
    assert not sig.receivers


def test_weak_bound_method_receiver_goes_away_with_its_instance() -> None:
    class Listener:
        def on(self, sender: Any) -> str:
            return "on"

    sig = Signal()
    obj = Listener()
    sig.connect(obj.on)  # a fresh bound method: held through a WeakMethod
    collect()
    assert sig.send() == [(obj.on, "on")]
    assert isinstance(next(iter(sig.receivers.values())), weakref.WeakMethod)
    del obj
    collect()
    assert sig.send() == []
    assert not sig.receivers


def test_strong_receiver_stays() -> None:
    sig = Signal()

    def receiver(sender: Any) -> str:
        return "strong"

    rid = id(receiver)
    sig.connect(receiver, weak=False)
    del receiver
    collect()
    assert [r for r, _ in sig.send()][0].__name__ == "receiver"
    assert [id(r) for r in sig.receivers.values()] == [rid]


def test_unweakrefable_receiver_raises_type_error() -> None:
    class Slotted:
        __slots__ = ()

        def __call__(self, sender: Any) -> None:
            pass

    with pytest.raises(TypeError):
        Signal().connect(Slotted())
    sig = Signal()
    sig.connect(Slotted(), weak=False)
    assert len(sig.send()) == 1


# -- senders ----------------------------------------------------------------------------------------


def test_sender_filtering() -> None:
    sig = Signal()
    a, b = Sender(), Sender()
    calls: list[Any] = []

    def for_a(sender: Any) -> None:
        calls.append(("a", sender))

    def for_any(sender: Any) -> None:
        calls.append(("any", sender))

    sig.connect(for_a, sender=a)
    sig.connect(for_any)
    sig.send(a)
    sig.send(b)
    assert calls == [("any", a), ("a", a), ("any", b)]


def test_receiver_connected_to_any_and_a_sender_runs_once() -> None:
    sig = Signal()
    s = Sender()
    calls: list[Any] = []

    def receiver(sender: Any) -> None:
        calls.append(sender)

    sig.connect(receiver)
    sig.connect(receiver, sender=s)
    sig.send(s)
    assert calls == [s]


def test_senders_are_told_apart_by_identity_and_str_int_by_value() -> None:
    sig = Signal()
    calls: list[Any] = []

    class Eq:
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = object.__hash__

    x, y = Eq(), Eq()
    sig.connect(lambda s: calls.append("x"), sender=x, weak=False)
    sig.connect(lambda s: calls.append("str"), sender="name", weak=False)
    sig.connect(lambda s: calls.append("int"), sender=12345, weak=False)
    sig.send(y)
    sig.send("".join(["na", "me"]))  # an equal but distinct string
    sig.send(12345)
    sig.send(x)
    assert calls == ["str", "int", "x"]


def test_weak_sender_cleanup() -> None:
    sig = Signal()
    s = Sender()
    calls: list[Any] = []

    def receiver(sender: Any) -> None:
        calls.append(sender)

    sig.connect(receiver, sender=s, weak=False)
    assert sig.has_receivers_for(s)
    assert id(s) in sig._weak_senders
    sid = id(s)
    del s
    collect()
    assert sid not in sig._by_sender
    assert sid not in sig._weak_senders
    assert sig.receivers  # the receiver stays connected (blinker does the same)
    assert not any(sig._by_receiver.values())


def test_unweakrefable_sender_is_fine() -> None:
    sig = Signal()
    s = object()
    sig.connect(lambda sender: "ok", sender=s, weak=False)
    assert [r for _, r in sig.send(s)] == ["ok"]


# -- connect_via, connected_to, disconnect, muted -------------------------------------------------


def test_connect_via_is_strong_by_default() -> None:
    sig = Signal()
    s = Sender()

    def make() -> None:
        @sig.connect_via(s)
        def receiver(sender: Any) -> str:
            return "via"

    make()
    collect()
    assert [r for _, r in sig.send(s)] == ["via"]
    assert sig.send(Sender()) == []

    @sig.connect_via(ANY, weak=True)
    def weak_any(sender: Any) -> str:
        return "any"

    assert weak_any.__name__ == "weak_any"
    assert [r for _, r in sig.send(s)] == ["any", "via"]


def test_connected_to_disconnects_after_the_block_even_on_error() -> None:
    sig = Signal()
    calls: list[Any] = []

    def receiver(sender: Any) -> None:
        calls.append(sender)

    sig.send(1)
    with sig.connected_to(receiver):
        sig.send(2)
    sig.send(3)
    assert calls == [2]
    assert not sig.receivers
    with pytest.raises(ZeroDivisionError):
        with sig.connected_to(receiver, sender=4):
            sig.send(4)
            sig.send(5)
            1 / 0
    assert calls == [2, 4]
    assert not sig.receivers


def test_disconnect_one_sender_or_all() -> None:
    sig = Signal()
    a, b = Sender(), Sender()
    calls: list[Any] = []

    def receiver(sender: Any) -> None:
        calls.append(sender)

    sig.connect(receiver, sender=a)
    sig.connect(receiver, sender=b)
    sig.disconnect(receiver, sender=a)
    sig.send(a)
    sig.send(b)
    assert calls == [b]
    sig.disconnect(receiver)
    sig.send(b)
    assert calls == [b]
    assert not sig.receivers
    sig.disconnect(receiver)  # not connected: no error


def test_muted() -> None:
    sig = Signal()
    sig.connect(lambda s: "r", weak=False)
    assert sig.is_muted is False
    with sig.muted():
        assert sig.is_muted is True
        assert sig.send() == []
    assert sig.is_muted is False
    assert len(sig.send()) == 1
    sig.is_muted = True
    assert sig.send() == []


# -- lookups ----------------------------------------------------------------------------------------


def test_receivers_for_and_has_receivers_for() -> None:
    sig = Signal()
    s = Sender()
    assert not sig.has_receivers_for(s)
    assert not sig.has_receivers_for(ANY)

    def for_s(sender: Any) -> None:
        pass

    def for_any(sender: Any) -> None:
        pass

    sig.connect(for_s, sender=s)
    assert sig.has_receivers_for(s)
    assert not sig.has_receivers_for(Sender())
    assert not sig.has_receivers_for(ANY)
    gen = sig.receivers_for(s)
    assert list(gen) == [for_s]
    sig.connect(for_any)
    assert sig.has_receivers_for(Sender())
    assert sig.has_receivers_for(ANY)
    assert list(sig.receivers_for(s)) == [for_any, for_s]
    assert list(sig.receivers_for(None)) == [for_any]


def test_bookkeeping_snapshots_and_cleanup() -> None:
    sig = Signal()
    s = Sender()

    def r1(sender: Any) -> None:
        pass

    def r2(sender: Any) -> None:
        pass

    sig.connect(r1, sender=s)
    sig.connect(r2, sender=s)
    assert sig._by_sender == {id(s): {id(r1), id(r2)}}
    sig.disconnect(r1, sender=s)
    sig.disconnect(r2, sender=s)
    assert sig._by_sender == {id(s): set()}
    assert len(sig._by_receiver) == 2
    sig._cleanup_bookkeeping()
    assert sig._by_sender == {} and sig._by_receiver == {}
    sig._clear_state()
    assert not sig.receivers


# -- meta signals -------------------------------------------------------------------------------------


def test_receiver_connected_and_disconnected_signals() -> None:
    sig = Signal()
    events: list[Any] = []
    sig.receiver_connected.connect(lambda s, **kw: events.append(("c", s, kw)), weak=False)
    sig.receiver_disconnected.connect(lambda s, **kw: events.append(("d", s, kw)), weak=False)
    assert sig.receiver_connected is sig.receiver_connected
    assert sig.receiver_connected is not Signal().receiver_connected

    def receiver(sender: Any) -> None:
        pass

    sig.connect(receiver, weak=False)
    sig.disconnect(receiver)
    assert events == [
        ("c", sig, {"receiver": receiver, "sender": ANY, "weak": False}),
        ("d", sig, {"receiver": receiver, "sender": ANY}),
    ]


def test_collected_receiver_does_not_send_disconnected() -> None:
    sig = Signal()
    events: list[Any] = []
    sig.receiver_disconnected.connect(lambda s, **kw: events.append(kw), weak=False)

    def receiver(sender: Any) -> None:
        pass

    sig.connect(receiver)
    del receiver
    collect()
    assert events == []
    assert not sig.receivers


def test_receiver_connected_type_error_undoes_the_connect() -> None:
    sig = Signal()

    def picky(sender: Any) -> None:  # takes no keyword arguments: TypeError
        pass

    sig.receiver_connected.connect(picky, weak=False)

    def receiver(sender: Any) -> None:
        pass

    with pytest.raises(TypeError):
        sig.connect(receiver, weak=False)
    assert sig.send() == []


# -- async -----------------------------------------------------------------------------------------


def test_send_async_and_wrappers() -> None:
    sig = Signal()

    async def coro_receiver(sender: Any, **kw: Any) -> str:
        await asyncio.sleep(0)
        return f"async {sender} {kw}"

    def sync_receiver(sender: Any, **kw: Any) -> str:
        return f"sync {sender}"

    sig.connect(coro_receiver)
    sig.connect(sync_receiver)

    def to_async(f: Callable[..., Any]) -> Callable[..., Any]:
        async def run(*a: Any, **k: Any) -> Any:
            return f(*a, **k)

        return run

    def to_sync(f: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            return asyncio.run(f(*a, **k))

        return run

    got = asyncio.run(sig.send_async("s", _sync_wrapper=to_async, x=1))
    assert got == [(coro_receiver, "async s {'x': 1}"), (sync_receiver, "sync s")]
    with pytest.raises(RuntimeError, match="non-coroutine"):
        asyncio.run(sig.send_async("s"))
    assert sig.send("s", _async_wrapper=to_sync, x=2) == [
        (coro_receiver, "async s {'x': 2}"),
        (sync_receiver, "sync s"),
    ]
    with pytest.raises(RuntimeError, match="Cannot send to a coroutine function"):
        sig.send("s")
    with sig.muted():
        assert asyncio.run(sig.send_async("s")) == []


# -- memory ------------------------------------------------------------------------------------------


def test_signal_cycles_are_collected() -> None:
    class Owner:
        def __init__(self) -> None:
            self.sig = Signal()
            self.sig.connect(self.handle, weak=False)
            self.sig.connect(lambda s: self, sender=self, weak=False)

        def handle(self, sender: Any) -> None:
            pass

    o = Owner()
    ref = weakref.ref(o)
    del o
    collect()
    assert ref() is None


def test_signal_is_not_kept_alive_by_weak_receivers() -> None:
    def receiver(sender: Any) -> None:
        pass

    sig = Signal()
    sig.connect(receiver)
    ref = weakref.ref(sig)
    del sig
    collect()
    assert ref() is None


# -- the same outcomes as blinker itself -----------------------------------------------------------


def _scenario(mod: Any) -> list[Any]:
    sig = mod.Signal()
    out: list[Any] = []
    s = Sender()

    def a(sender: Any, **kw: Any) -> str:
        return "a"

    def b(sender: Any, **kw: Any) -> str:
        return "b"

    sig.connect(a, weak=False)
    sig.connect(b, sender=s, weak=False)
    out.append(sorted(r for _, r in sig.send(s, k=1)))
    out.append(sorted(r for _, r in sig.send("other")))
    out.append((sig.has_receivers_for(s), sig.has_receivers_for("x"), sig.has_receivers_for(mod.ANY)))
    sig.disconnect(a)
    out.append((sig.has_receivers_for(s), sig.has_receivers_for("x"), bool(sig.receivers)))
    sig.disconnect(b, sender=s)
    out.append((sig.has_receivers_for(s), len(sig.receivers), len(sig._by_sender)))
    return out


def test_same_outcomes_as_blinker() -> None:
    assert _scenario(blinker) == _scenario(real_blinker)


def test_receivers_may_change_the_signal_while_it_sends() -> None:
    sig = Signal()
    calls: list[str] = []
    holder: dict[str, Any] = {}

    def late(sender: Any) -> None:
        calls.append("late")

    def doomed(sender: Any) -> None:
        calls.append("doomed")

    def first(sender: Any) -> None:
        calls.append("first")
        sig.disconnect(first)
        sig.connect(late, weak=False)
        holder.pop("doomed", None)  # the last reference to a weak receiver goes away mid-send
        sig.send("nested")

    holder["doomed"] = doomed
    sig.connect(first, weak=False)
    sig.connect(doomed)  # weak
    del doomed
    sig.send("outer")
    # the running send keeps its snapshot of live receivers except collected weak ones
    assert calls[:2] == ["first", "late"]
    calls.clear()
    sig.send("again")
    assert calls == ["late"]
