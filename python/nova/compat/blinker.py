"""A drop-in replacement for blinker 1.9 whose signals dispatch through Nova's Rust core.

Swap ``from blinker import signal`` (or ``Signal``, ``Namespace``, ...) for
``from nova.compat.blinker import ...``. Receivers, their weak references and the per-sender
buckets live in a Rust table (``nova._core.SignalTable``); ``Signal.send`` is that table's
method, so a send is one call into Rust, which calls each receiver. See docs/migration.md.
"""

from __future__ import annotations

import collections.abc as c
import typing as t
from collections import defaultdict
from contextlib import contextmanager
from functools import cached_property
from inspect import iscoroutinefunction

from ._table import SignalTable

__all__ = ["ANY", "NamedSignal", "Namespace", "Signal", "default_namespace", "signal"]

F = t.TypeVar("F", bound=c.Callable[..., t.Any])


class Symbol:
    """A named constant: ``Symbol("x") is Symbol("x")``, its repr is its name, and it pickles
    to the same object."""

    symbols: t.ClassVar[dict[str, Symbol]] = {}

    def __new__(cls, name: str) -> Symbol:
        try:
            return cls.symbols[name]
        except KeyError:
            obj = super().__new__(cls)
            cls.symbols[name] = obj
            return obj

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __getnewargs__(self) -> tuple[t.Any, ...]:
        return (self.name,)


ANY = Symbol("ANY")
"""The "any sender" symbol: receivers connected for ANY are called whoever sends."""

ANY_ID = 0


class Signal(SignalTable):
    """A notification emitter, as blinker's.

    Receivers are connected with :meth:`connect` (weakly by default) for one sender or for
    :data:`ANY`, and called by :meth:`send` with the sender as the only positional argument and
    the keyword arguments given to ``send``. Receivers are called in the order they were
    connected (blinker leaves the order undefined), those for :data:`ANY` first.

    :param doc: The docstring of the signal.
    """

    ANY = ANY
    """An alias for :data:`ANY`."""

    set_class: type[set[t.Any]] = set
    """Kept for compatibility; Nova's table keeps connection order whatever this is."""

    # ``receivers`` (a dict of receiver id to receiver or weak reference: check its truth
    # value, as blinker documents), ``is_muted`` and ``send`` come from SignalTable.

    @cached_property
    def receiver_connected(self) -> Signal:
        """Sent at the end of each :meth:`connect`, by this signal, with ``receiver``,
        ``sender`` and ``weak``."""
        return Signal(doc="Emitted after a receiver connects.")

    @cached_property
    def receiver_disconnected(self) -> Signal:
        """Sent at the end of each explicit :meth:`disconnect`, by this signal, with
        ``receiver`` and ``sender`` (not when a weak receiver or sender is collected)."""
        return Signal(doc="Emitted after a receiver disconnects.")

    def __init__(self, doc: str | None = None) -> None:
        if doc:
            self.__doc__ = doc

    def connect(self, receiver: F, sender: t.Any = ANY, weak: bool = True) -> F:
        """Call ``receiver`` when this signal is sent by ``sender`` (any sender for
        :data:`ANY`). With ``weak``, the receiver is held by a weak reference (a ``WeakMethod``
        for a bound method) and disconnected when collected. Returns ``receiver``."""
        self._nova_connect(receiver, sender, weak, sender is ANY, iscoroutinefunction(receiver))
        if "receiver_connected" in self.__dict__ and self.receiver_connected.receivers:
            try:
                self.receiver_connected.send(self, receiver=receiver, sender=sender, weak=weak)
            except TypeError:
                self.disconnect(receiver, sender)
                raise
        return receiver

    def connect_via(self, sender: t.Any, weak: bool = False) -> c.Callable[[F], F]:
        """A decorator connecting the decorated function for ``sender`` (strongly by default)."""

        def decorator(fn: F) -> F:
            self.connect(fn, sender, weak)
            return fn

        return decorator

    @contextmanager
    def connected_to(
        self, receiver: c.Callable[..., t.Any], sender: t.Any = ANY
    ) -> c.Generator[None, None, None]:
        """Connect ``receiver`` (strongly) for the duration of a ``with`` block."""
        self.connect(receiver, sender=sender, weak=False)
        try:
            yield None
        finally:
            self.disconnect(receiver)

    @contextmanager
    def muted(self) -> c.Generator[None, None, None]:
        """Send to no receiver for the duration of a ``with`` block."""
        self.is_muted = True
        try:
            yield None
        finally:
            self.is_muted = False

    async def send_async(
        self,
        sender: t.Any | None = None,
        /,
        *,
        _sync_wrapper: c.Callable[[c.Callable[..., t.Any]], c.Callable[..., c.Coroutine[t.Any, t.Any, t.Any]]]
        | None = None,
        **kwargs: t.Any,
    ) -> list[tuple[c.Callable[..., t.Any], t.Any]]:
        """Await each receiver for ``sender`` (and :data:`ANY`) in turn; a receiver that is not
        a coroutine function goes through ``_sync_wrapper`` (``RuntimeError`` without one).
        Returns ``[(receiver, result), ...]``."""
        if self.is_muted:
            return []
        results = []
        for receiver, is_coro in self._nova_receivers_for(sender):
            if is_coro:
                result = await receiver(sender, **kwargs)
            else:
                if _sync_wrapper is None:
                    raise RuntimeError("Cannot send to a non-coroutine function.")
                result = await _sync_wrapper(receiver)(sender, **kwargs)
            results.append((receiver, result))
        return results

    def has_receivers_for(self, sender: t.Any) -> bool:
        """Whether a receiver is connected for ``sender`` or :data:`ANY` (without checking that
        weakly referenced receivers are still alive)."""
        return self._nova_has_receivers_for(sender, sender is ANY)

    def receivers_for(self, sender: t.Any) -> c.Generator[c.Callable[..., t.Any], None, None]:
        """Yield each live receiver for ``sender`` and for :data:`ANY`, disconnecting
        collected weak ones."""
        for receiver, _ in self._nova_receivers_for(sender):
            yield receiver

    def disconnect(self, receiver: c.Callable[..., t.Any], sender: t.Any = ANY) -> None:
        """Disconnect ``receiver`` from ``sender``, or from every sender when it is
        :data:`ANY`."""
        self._nova_disconnect(receiver, sender, sender is ANY)
        if "receiver_disconnected" in self.__dict__ and self.receiver_disconnected.receivers:
            self.receiver_disconnected.send(self, receiver=receiver, sender=sender)

    # blinker's bookkeeping, as read-only snapshots (tests and debugging read them).

    @property
    def _by_sender(self) -> defaultdict[t.Any, set[t.Any]]:
        return defaultdict(set, {k: set(v) for k, v in self._nova_buckets()[0].items()})

    @property
    def _by_receiver(self) -> defaultdict[t.Any, set[t.Any]]:
        return defaultdict(set, {k: set(v) for k, v in self._nova_buckets()[1].items()})

    @property
    def _weak_senders(self) -> dict[t.Any, t.Any]:
        return self._nova_weak_senders()


class NamedSignal(Signal):
    """A signal with a name (the key it has in its :class:`Namespace`).

    :param name: The name of the signal.
    :param doc: The docstring of the signal.
    """

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(doc)
        self.name: str = name

    def __repr__(self) -> str:
        base = super().__repr__()
        return f"{base[:-1]}; {self.name!r}>"


class Namespace(dict[str, NamedSignal]):
    """A dict of names to signals."""

    def signal(self, name: str, doc: str | None = None) -> NamedSignal:
        """The signal called ``name``, created on first use."""
        if name not in self:
            self[name] = NamedSignal(name, doc)
        return self[name]


class _PNamespaceSignal(t.Protocol):
    def __call__(self, name: str, doc: str | None = None) -> NamedSignal: ...


default_namespace: Namespace = Namespace()
"""The namespace :func:`signal` creates signals in."""

signal: _PNamespaceSignal = default_namespace.signal
"""The :class:`NamedSignal` called ``name`` in :data:`default_namespace`, created on first use."""
