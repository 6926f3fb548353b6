"""Live subscriptions to a store: catch up from a cursor, then follow new appends.

A subscription is nothing more than a cursor that keeps reading. It reads a page of events at
its position, hands them out one by one, and when a read finds nothing it waits for the store's
*signal* — a counter bumped after every append — to move. Because every read starts exactly at
the position after the last event handed out, there is no separate "catch-up" and "live" phase
to stitch together, hence no gap and no duplicate at the switch.

The lost-wake-up race is closed by reading the signal's counter *before* the read: an append
that lands after the read bumps the counter past the value read, so the wait returns at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from .._closing import ClosesOnExit
from ..errors import StoreClosed

if TYPE_CHECKING:
    from .._core import Event
    from ._base import Cursor

# Events fetched per read by a subscription.
PAGE_SIZE = 256


class Signal:
    """Wakes subscribers when a store changes or closes; counts open subscriptions.

    ``bump()`` is called by a store after an append is visible to readers. Waiters in threads
    use a condition variable; waiters in event loops register an ``asyncio.Event`` that
    ``bump()`` sets through ``call_soon_threadsafe``, so appends from any thread wake them.
    """

    def __init__(self) -> None:
        # Reentrant: a subscription collected by the garbage collector while this thread
        # holds the lock calls ``ended()`` from its ``__del__``.
        self._cond = threading.Condition(threading.RLock())
        self._async: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self.seq = 0
        self.closed = False
        self.subscriptions = 0

    def bump(self) -> None:
        with self._cond:
            self.seq += 1
            self._cond.notify_all()
            waiters = list(self._async.values()) if self._async else None
        if waiters:
            _wake_all(waiters)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self.seq += 1
            self._cond.notify_all()
            waiters = list(self._async.values())
        _wake_all(waiters)

    def wake(self) -> None:
        """Wake every waiter without a change (a subscription was closed)."""
        self.bump()

    def wait(self, seq: int, timeout: float | None, stop: Callable[[], bool]) -> None:
        """Block until the counter is no longer ``seq``, the store closes, ``stop()`` is true
        or ``timeout`` seconds pass."""
        with self._cond:
            if self.seq == seq and not self.closed and not stop():
                self._cond.wait(timeout)

    def register_async(self, key: int, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._cond:
            self._async[key] = (loop, event)

    def unregister_async(self, key: int) -> None:
        with self._cond:
            self._async.pop(key, None)

    def opened(self) -> None:
        with self._cond:
            self.subscriptions += 1

    def ended(self) -> None:
        with self._cond:
            self.subscriptions -= 1


def _wake_all(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
    for loop, event in waiters:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # that loop is closed; its subscription is gone
            pass


class Pager(Protocol):
    """What a subscription needs from a store."""

    _signal: Signal
    # Whether a read may block for a while (disk): async subscriptions then read in a thread.
    _reads_block: bool
    # Re-read at least this often even without a signal (another process may append).
    _poll_interval: float | None

    @property
    def closed(self) -> bool: ...

    def _page(self, stream: str, position: int, limit: int) -> tuple[list[Event], Sequence[int]]: ...

    def _note_read(self, n: int) -> None: ...


class _SubscriptionBase:
    def __init__(self, store: Pager, stream: str, position: int) -> None:
        self._store = store
        self._stream = stream
        self._position = position
        self._events: list[Event] = []
        self._positions: Sequence[int] = ()
        self._index = 0
        self._closed = False
        self._lock = threading.Lock()
        store._signal.opened()

    @property
    def stream(self) -> str:
        """The stream followed (``"$all"`` for every stream)."""
        return self._stream

    @property
    def cursor(self) -> Cursor:
        """Where this subscription stands: the position after the last event it yielded.
        Subscribe again from it to resume without a gap or a duplicate."""
        from ._base import Cursor

        return Cursor(self._stream, self._position)

    @property
    def closed(self) -> bool:
        return self._closed

    def _take(self) -> Event | None:
        """The next buffered event, or None when the buffer is empty."""
        i = self._index
        events, positions = self._events, self._positions
        if i < len(events) and i < len(positions):
            self._index = i + 1
            self._position = positions[i] + 1
            return events[i]
        return None

    def _fill(self, page: tuple[list[Event], Sequence[int]]) -> bool:
        events, positions = page
        if not events:
            return False
        self._store._note_read(len(events))
        self._events, self._positions, self._index = events, positions, 0
        return True

    def _finish(self) -> bool:
        """Mark closed; True the first time (the caller then wakes waiters)."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        self._events, self._positions, self._index = [], (), 0
        self._store._signal.ended()
        return True

    def _should_stop(self) -> bool:
        return self._closed or self._store.closed

    def __del__(self) -> None:
        try:
            if not self._closed:
                self._finish()
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} stream={self._stream!r} position={self._position} {state}>"


class StoreSubscription(_SubscriptionBase, ClosesOnExit):
    """Iterator over a stream's events from a cursor on: past events, then live ones.

    Ends when the store closes or :meth:`close` is called (from any thread; a thread waiting
    in ``next()`` wakes up and the iteration stops). A context manager that closes on exit.
    """

    def __iter__(self) -> StoreSubscription:
        return self

    def __next__(self) -> Event:
        store = self._store
        signal = store._signal
        while True:
            if self._should_stop():
                self.close()
                raise StopIteration
            event = self._take()
            if event is not None:
                return event
            seq = signal.seq
            try:
                page = store._page(self._stream, self._position, PAGE_SIZE)
            except StoreClosed:
                self.close()
                raise StopIteration from None
            if not self._fill(page):
                signal.wait(seq, store._poll_interval, self._should_stop)

    def close(self) -> None:
        """Stop the subscription (idempotent); the iteration ends."""
        if self._finish():
            self._store._signal.wake()


class AsyncStoreSubscription(_SubscriptionBase):
    """Async iterator over a stream's events from a cursor on: past events, then live ones.

    Waiting never blocks the event loop: appends from any thread wake it through
    ``loop.call_soon_threadsafe``; reads that touch the disk run in the loop's default
    executor. Ends when the store closes or :meth:`aclose`/:meth:`close` is called.
    An async context manager that closes on exit.
    """

    def __init__(self, store: Pager, stream: str, position: int) -> None:
        super().__init__(store, stream, position)
        self._wakeup: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def __aiter__(self) -> AsyncStoreSubscription:
        return self

    async def __anext__(self) -> Event:
        store = self._store
        signal = store._signal
        loop = asyncio.get_running_loop()
        key = id(self)
        while True:
            if self._should_stop():
                self.close()
                raise StopAsyncIteration
            event = self._take()
            if event is not None:
                return event
            wakeup = asyncio.Event()
            # Registered before the read, so an append after the read sets it.
            self._wakeup = (loop, wakeup)
            signal.register_async(key, loop, wakeup)
            try:
                try:
                    if store._reads_block:
                        page = await loop.run_in_executor(
                            None, store._page, self._stream, self._position, PAGE_SIZE
                        )
                    else:
                        page = store._page(self._stream, self._position, PAGE_SIZE)
                except StoreClosed:
                    self.close()
                    raise StopAsyncIteration from None
                if self._fill(page) or self._should_stop():
                    continue
                if store._poll_interval is None:
                    await wakeup.wait()
                else:
                    try:
                        await asyncio.wait_for(wakeup.wait(), store._poll_interval)
                    except asyncio.TimeoutError:
                        pass
            finally:
                signal.unregister_async(key)
                self._wakeup = None

    def close(self) -> None:
        """Stop the subscription (idempotent, callable from any thread)."""
        if self._finish():
            self._store._signal.unregister_async(id(self))
            pending = self._wakeup
            if pending is not None:
                _wake_all([pending])

    async def aclose(self) -> None:
        """Stop the subscription (idempotent)."""
        self.close()

    async def __aenter__(self) -> AsyncStoreSubscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
