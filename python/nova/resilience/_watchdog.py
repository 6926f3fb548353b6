"""The timeout watchdog: one thread per listener manager that raises ``ListenerTimeout``
inside a thread whose synchronous handler ran past its deadline.

Design, for a cheap common case (the handler finishes in time):

- Watches are grouped by timeout value. Within a group deadlines arrive in (near) order, so
  the earliest is the group's first entry: no heap, and a watch is dropped in O(1).
- Starting and ending a watch take no lock: a watch is a small list put into its group's
  dict, and ``dict.pop`` (atomic under the GIL) decides who owns it: the worker that ends it
  in time, or the watchdog that fires it.
- The watchdog sleeps until the earliest deadline. A new watch wakes it only when its
  deadline is earlier than planned: an idle group keeps the watchdog planning a wake at
  ``now + timeout`` for a while, so a stream of quick attempts costs no wake-ups.
- Firing is ``PyThreadState_SetAsyncExc(thread, _AsyncTimeout)``. The state goes ACTIVE ->
  FIRING before the call and FIRED after it, so the worker can tell its own timeout from an
  enclosing attempt's, wait until the call was made, and then clear whatever is still
  pending (see ``ManagedListener._settle``).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from ..errors import ListenerTimeout
from ._util import set_async_exc

__all__ = ["AsyncTimeout", "Watchdog", "ACTIVE", "CANCELLED", "FIRING", "FIRED"]

ACTIVE, CANCELLED, FIRING, FIRED = 0, 1, 2, 3
# A watch: [state, deadline, thread id, group]
_STATE, _DEADLINE, _TID, _GROUP = 0, 1, 2, 3
_DORMANT_AFTER = 2  # empty scans before an idle group stops planning wake-ups


class AsyncTimeout(ListenerTimeout):
    """Raised inside a sync handler by the watchdog (CPython instantiates the class)."""


class Watchdog:
    def __init__(self, name: str) -> None:
        self._name = name
        # A plain Lock: its __enter__/__exit__ run no bytecode, so an asynchronous exception
        # can never leave it held.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._groups: dict[float, dict[int, list[Any]]] = {}
        self._empty_scans: dict[float, int] = {}
        self._wake_at = math.inf
        self._scanning = False
        self._thread: threading.Thread | None = None

    # -- the worker's side ----------------------------------------------------------------

    def watch(self, timeout: float) -> list[Any]:
        """Start watching the calling thread for ``timeout`` seconds."""
        group = self._groups.get(timeout)
        if group is None or self._thread is None:
            group = self._setup(timeout)
        w: list[Any] = [ACTIVE, time.monotonic() + timeout, threading.get_ident(), group]
        group[id(w)] = w
        # Read _scanning before _wake_at: a scan in progress may have passed this group.
        if self._scanning or w[_DEADLINE] < self._wake_at:
            with self._lock:
                if w[_DEADLINE] < self._wake_at:
                    self._wake_at = w[_DEADLINE]
                self._cond.notify()
        return w

    @staticmethod
    def finish(w: list[Any]) -> bool:
        """End a watch; True when the watchdog fired on it. Returns only once the firing
        call was made, so the caller can then clear a still-pending exception."""
        if w[_GROUP].pop(id(w), None) is not None:
            w[_STATE] = CANCELLED
            return False
        if w[_STATE] == CANCELLED:
            return False
        while w[_STATE] != FIRED:  # FIRING: the watchdog is in the middle of the call
            time.sleep(0)
        return True

    # -- the watchdog's side --------------------------------------------------------------

    def _setup(self, timeout: float) -> dict[int, list[Any]]:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=f"nova-watchdog-{self._name}",
                                          daemon=True)
                self._thread = thread
                thread.start()
            return self._groups.setdefault(timeout, {})

    def close(self) -> None:
        """Stop the thread (a later ``watch`` starts a new one). Only call it when no
        attempt is being watched."""
        with self._lock:
            self._thread = None
            self._cond.notify_all()

    def _run(self) -> None:
        me = threading.current_thread()
        with self._lock:
            while self._thread is me:
                self._scanning = True
                now = time.monotonic()
                earliest = math.inf
                for timeout, group in list(self._groups.items()):
                    earliest = min(earliest, self._scan(timeout, group, now))
                self._wake_at = earliest
                self._scanning = False
                self._cond.wait(None if earliest == math.inf else max(0.0, earliest - now))

    def _scan(self, timeout: float, group: dict[int, list[Any]], now: float) -> float:
        """Fire the group's expired watches; the time this group next needs a look."""
        while True:
            try:
                key = next(iter(group))
            except StopIteration:
                break
            except RuntimeError:  # a worker added or removed a watch meanwhile
                continue
            w = group.get(key)
            if w is None:
                continue
            if w[_DEADLINE] > now:
                self._empty_scans.pop(timeout, None)
                return float(w[_DEADLINE])
            if group.pop(key, None) is w:
                w[_STATE] = FIRING
                set_async_exc(w[_TID], AsyncTimeout)
                w[_STATE] = FIRED
        # Empty. Any new watch of this group ends at now + timeout or later, so planning a
        # wake then spares watch() a notify; a group idle for a while stops doing that.
        scans = self._empty_scans.get(timeout, 0)
        if scans >= _DORMANT_AFTER:
            return math.inf
        self._empty_scans[timeout] = scans + 1
        return now + timeout
