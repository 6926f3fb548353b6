"""``ListenerManager``: registers listeners under their policies (retries, timeouts,
concurrency limits, circuit breakers and dead letters), keeps their names, counts, health and
metrics, and stops them so that every event ends processed, dead-lettered or reported. See the
API reference, docs/api.md.

``register(listener, config)`` returns a :class:`~nova.resilience.managed_listener.ManagedListener`,
a callable to subscribe anywhere; what one listener does with an event is in that module.
``ListenerConfig``, ``ManagedListener`` and ``DURATION_BOUNDS`` are importable from here too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .._closing import ClosesOnExit
from .._types import Health, StopReport
from ..errors import ClosedError, ListenerNotFound, ValidationError
from ._manager_state import _RUNNING, _STOPPED, _STOPPING, _Waiter
from ._util import as_listener, describe
from .circuit import CircuitState
from .clock import SYSTEM_CLOCK, Clock, SystemClock
from .managed_listener import DURATION_BOUNDS, ListenerConfig, ManagedListener

__all__ = ["ListenerConfig", "ListenerManager", "ManagedListener", "ManagerStats", "DURATION_BOUNDS"]

_log = logging.getLogger("nova")


@dataclass(frozen=True)
class ManagerStats:
    """Counters of a listener manager (``events_processed``: events whose processing finished,
    success or final failure; ``events_retried``: retry attempts; ``events_failed``: events
    whose final outcome was a failure; ``open_circuits``: circuits not closed)."""

    registered_listeners: int
    events_processed: int
    events_retried: int
    events_failed: int
    dead_letter_events: int
    open_circuits: int


class ListenerManager(ClosesOnExit):
    """Listeners under retry, timeout, concurrency, circuit-breaker and dead-letter policies.

    Usable at once (``start()`` is optional and restarts a stopped manager). ``clock`` (an
    object with ``monotonic()`` and ``sleep()``) drives retry delays, circuit timeouts and the
    health window; ``loop`` is where ``async def`` handlers run (default: Nova's loop thread).
    ``pool`` is kept for components that dispatch managed listeners onto it; the manager itself
    runs each event in the thread that hands it over.
    """

    def __init__(
        self,
        *,
        pool: Any = None,
        name: str = "listeners",
        clock: Clock | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"ListenerManager.name must be a non-empty str, got {name!r}")
        if clock is not None and not (
            callable(getattr(clock, "monotonic", None)) and callable(getattr(clock, "sleep", None))
        ):
            raise ValidationError(f"ListenerManager.clock must have monotonic() and sleep(), got {clock!r}")
        self.name = name
        self.pool = pool
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._real_time = isinstance(self._clock, SystemClock)
        self._loop = loop
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._listeners: dict[str, ManagedListener] = {}
        self._retired = [0, 0, 0, 0]  # succeeded, failed, retried, dead_lettered of removed ones
        self._waiting: dict[int, _Waiter] = {}
        # Events the caller of attempt() (the core) holds on its timer for a retry, by
        # id(waiter); each is also in its listener's _pending.
        self._timed: dict[int, _Waiter] = {}
        self._abandoned: list[Any] = []
        self._retrying_events = 0  # events of process() calls between their first failure and the end
        self._attempts = 0  # attempt() calls running
        self._settle_until = 0.0  # see _poke
        self._state = _RUNNING

    # -- registration --------------------------------------------------------------------

    def register(
        self, listener: Any, config: ListenerConfig | None = None, *, name: str | None = None
    ) -> ManagedListener:
        """Put ``listener`` (a callable or ``nova.Listener``) under ``config`` (default
        ``ListenerConfig()``); returns the :class:`ManagedListener` to subscribe. It is
        registered under the listener's name, or ``name`` when given (names are unique per
        manager: ``ValidationError`` otherwise)."""
        if config is None:
            config = ListenerConfig()
        if not isinstance(config, ListenerConfig):
            raise ValidationError(
                f"ListenerManager.register: config must be a nova.ListenerConfig, got {config!r}"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise ValidationError(f"ListenerManager.register: name must be a non-empty str, got {name!r}")
        inner = as_listener(listener)
        managed = ManagedListener(self, inner, config, name=name)
        with self._lock:
            if managed.name in self._listeners:
                raise ValidationError(
                    f"listener '{managed.name}' is already registered with manager '{self.name}'; "
                    "unregister it first or give the listener another name"
                )
            self._listeners[managed.name] = managed
            managed._core.set_state(self._state)
        return managed

    def unregister(self, name: str | ManagedListener) -> None:
        """Remove a listener (``ListenerNotFound`` if absent); its ManagedListener stops
        accepting events."""
        key = name.name if isinstance(name, ManagedListener) else name
        with self._lock:
            managed = self._listeners.pop(key, None)
            if managed is None:
                raise ListenerNotFound(self._not_found(key))
            managed._core.registered = False
            snap = managed._snapshot()
            self._retired[0] += snap["succeeded"]
            self._retired[1] += snap["failed"]
            self._retired[2] += snap["retried"]
            self._retired[3] += snap["dead_lettered"]

    def get(self, name: str) -> ManagedListener:
        """The registered listener of that name (``ListenerNotFound`` if absent)."""
        with self._lock:
            managed = self._listeners.get(name)
        if managed is None:
            raise ListenerNotFound(self._not_found(name))
        return managed

    def names(self) -> list[str]:
        with self._lock:
            return list(self._listeners)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._listeners

    def _not_found(self, name: Any) -> str:
        known = ", ".join(sorted(self._listeners)) or "none"
        return f"no listener named {name!r} in manager '{self.name}' (registered: {known})"

    # -- processing ----------------------------------------------------------------------

    def process(self, name: str, event: Any) -> None:
        """Run ``event`` through listener ``name``'s whole policy in this thread: returns on
        success, raises ``RetryLimitExceeded`` after the dead-letter step when it finally
        failed, ``ListenerNotFound`` for an unknown name."""
        self.get(name)._process(event, None)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Accept events (again, after ``stop``). A new manager is already started."""
        with self._lock:
            self._set_state(_RUNNING)

    @property
    def running(self) -> bool:
        return self._state == _RUNNING

    def stop(self, timeout: float | None = 30.0) -> StopReport:
        """Stop accepting events, let attempts in flight and retries due before the deadline
        finish, then give up on the events still waiting for a retry: they are returned in
        ``StopReport.undelivered`` (with those the core abandoned, see
        ``ManagedListener.abandon``). Calling it again reports only what was abandoned since.

        Every event handed to the manager ends up in exactly one place: processed by its
        listener, dead-lettered, or in a ``StopReport.undelivered``. That holds for retries
        waiting in ``process()`` and for those an Emitter or Bus holds on its timers: a retry
        due before the deadline is waited for (and its outcome counts: success, another wait,
        or the dead-letter step); one due later is reported here, once, and when its timer
        fires afterwards it is refused (``ClosedError``), not run and not reported again, even
        if the manager was started again meanwhile. An event waiting for a retry at the
        deadline is undelivered even when a dead-letter queue is configured: it still had
        attempts left, so it is handed back to the caller (who may emit it again) rather than
        dead-lettered. An event the core hands over while the manager is stopping is refused
        and reported here too. An attempt still running at the deadline finishes on its own;
        if it fails and would be retried, the event goes to the next ``stop()`` report."""
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise ValidationError(
                f"ListenerManager.stop: timeout must be seconds >= 0 or None, got {timeout!r}"
            )
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        undelivered: list[Any] = []
        with self._lock:
            if self._state == _RUNNING:
                self._set_state(_STOPPING)
            while True:
                now = time.monotonic()
                # Attempts running, retrying events between two waits, retries due in time.
                busy = (
                    any(m._core.active for m in self._listeners.values())
                    or self._retrying_events > len(self._waiting)
                    or self._attempts > 0
                    or now < self._settle_until
                )
                due = any(w.wake_at <= deadline for w in self._waiting.values()) or any(
                    w.wake_at <= deadline for w in self._timed.values()
                )
                if not (busy or due) or now >= deadline:
                    break
                self._cond.wait(min(deadline - now, 0.05))
            for waiter in self._waiting.values():
                waiter.abandoned = True
                undelivered.append(waiter.event)
            self._waiting.clear()
            # Retries on the core's timers: given up on now; the waiter stays in its
            # listener's _pending so the core's later attempt()/abandon() sees it was reported.
            for waiter in self._timed.values():
                waiter.abandoned = True
                undelivered.append(waiter.event)
                if waiter.owner is not None:
                    with waiter.owner._lock:
                        waiter.owner.abandoned += 1
            self._timed.clear()
            undelivered.extend(self._abandoned)
            self._abandoned = []
            self._set_state(_STOPPED)
            self._cond.notify_all()
        return StopReport(undelivered=undelivered)

    def close(self, timeout: float | None = 30.0) -> StopReport:
        """Same as :meth:`stop`."""
        return self.stop(timeout)

    def _set_state(self, state: int) -> None:
        """With the lock held: the new state, mirrored in each listener's core."""
        self._state = state
        for m in self._listeners.values():
            m._core.set_state(state)

    def _reject(self, event: Any) -> None:
        raise ClosedError(
            f"listener manager '{self.name}' is stopped; event {describe(event)} was not "
            "processed (call start() to use the manager again)"
        )

    def _add_abandoned(self, event: Any) -> None:
        with self._lock:
            self._abandoned.append(event)

    def _reject_handed_over(self, event: Any) -> None:
        """A first attempt handed over by the core while the manager is not running: refused
        (``ClosedError``); while a ``stop()`` is under way the event is in its report."""
        with self._lock:
            stopping = self._state == _STOPPING
            if stopping:
                self._abandoned.append(event)
        if not stopping:
            _log.warning(
                "nova: listener manager '%s' is stopped; event %s was not processed (call "
                "start() to use the manager again)",
                self.name,
                describe(event),
                extra={
                    "event_id": getattr(event, "id", None),
                    "event_type": getattr(event, "type", None),
                    "component": self.name,
                },
            )
        self._reject(event)

    def _poke(self) -> None:
        """The core finished an attempt while stopping. When it failed, the core asks the
        policy (``_after_failed_attempt``) right after; ``stop()`` gives it a moment to so it
        sees the retry that may follow."""
        with self._lock:
            self._settle_until = time.monotonic() + 0.02
            self._cond.notify_all()

    def _retry_scheduled(self, managed: ManagedListener, event: Any, delay: float) -> None:
        """``managed.attempt`` returned ``delay``: the caller holds ``event`` for a retry."""
        waiter = _Waiter(event, time.monotonic() + delay, managed)
        with self._lock:
            managed._pending.setdefault(id(event), []).append(waiter)
            if self._state == _STOPPED:
                # Too late for the stop that ran: the next one reports it.
                waiter.abandoned = True
                self._abandoned.append(event)
                with managed._lock:
                    managed.abandoned += 1
            else:
                self._timed[id(waiter)] = waiter
            self._cond.notify_all()

    def _take_pending(self, managed: ManagedListener, event: Any) -> _Waiter | None:
        with self._lock:
            return self._pop_pending(managed, event)

    def _pop_pending(self, managed: ManagedListener, event: Any) -> _Waiter | None:
        """With the lock held: the oldest retry of ``event`` waiting for ``managed``."""
        waiters = managed._pending.get(id(event))
        if not waiters:
            return None
        waiter = waiters.pop(0)
        if not waiters:
            del managed._pending[id(event)]
        self._timed.pop(id(waiter), None)
        return waiter

    def _begin_attempt(self, managed: ManagedListener, event: Any, attempt: int) -> _Waiter | None:
        """``attempt()`` starts: counted as running (``stop()`` waits for it) in the same
        step as its retry stops waiting, so ``stop()`` never sees it in neither state."""
        with self._lock:
            self._attempts += 1
            return self._pop_pending(managed, event) if attempt > 1 else None

    def _end_attempt(self) -> None:
        with self._lock:
            self._attempts -= 1
            self._cond.notify_all()

    def _wait_retry(self, event: Any, delay: float) -> bool:
        """Wait ``delay`` seconds before a retry; False when ``stop`` gave up on the event."""
        waiter = _Waiter(event, time.monotonic() + delay)
        key = id(waiter)
        with self._lock:
            if self._state == _STOPPED:
                self._abandoned.append(event)
                return False
            self._waiting[key] = waiter
            self._cond.notify_all()
        abandoned = False
        try:
            if self._real_time:
                with self._lock:
                    while not waiter.abandoned:
                        left = waiter.wake_at - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
            else:
                self._clock.sleep(delay)
        finally:
            with self._lock:
                self._waiting.pop(key, None)
                abandoned = waiter.abandoned
        return not abandoned

    @contextmanager
    def _retrying(self) -> Iterator[None]:
        """Around the retries of an event in ``process()``, from its first failure to its
        outcome: ``stop()`` counts it as busy meanwhile."""
        with self._lock:
            self._retrying_events += 1
        try:
            yield
        finally:
            with self._lock:
                self._retrying_events -= 1
                self._cond.notify_all()

    # -- observation ---------------------------------------------------------------------

    def stats(self) -> ManagerStats:
        with self._lock:
            listeners = list(self._listeners.values())
            succeeded, failed, retried, dead = self._retired
        open_circuits = 0
        for m in listeners:
            snap = m._snapshot()
            succeeded += snap["succeeded"]
            failed += snap["failed"]
            retried += snap["retried"]
            dead += snap["dead_lettered"]
            if m._circuit_on and m.circuit.state is not CircuitState.CLOSED:
                open_circuits += 1
        return ManagerStats(
            registered_listeners=len(listeners),
            events_processed=succeeded + failed,
            events_retried=retried,
            events_failed=failed,
            dead_letter_events=dead,
            open_circuits=open_circuits,
        )

    def listener_health(self, name: str) -> Health:
        """Over the last minute: CIRCUIT_OPEN while the circuit is open (or half-open);
        UNHEALTHY if more than half of its attempts failed; DEGRADED if any failed; else
        HEALTHY. ``ListenerNotFound`` for an unknown name."""
        return self.get(name).health()

    def health(self) -> Health:
        """The worst health of the listeners (HEALTHY with none)."""
        worst = Health.HEALTHY
        for h in self._listener_healths().values():
            if h.value > worst.value:
                worst = h
        return worst

    def _listener_healths(self) -> dict[str, Health]:
        with self._lock:
            listeners = list(self._listeners.values())
        return {m.name: m.health() for m in listeners}

    def _metrics(self) -> dict[str, Any]:
        with self._lock:
            listeners = list(self._listeners.values())
        processed: list[tuple[str, str, int]] = []
        retries: list[tuple[str, int]] = []
        dead: list[tuple[str, int]] = []
        circuit: list[tuple[str, int]] = []
        durations: list[tuple[str, list[float], list[int], float, int]] = []
        for m in listeners:
            snap = m._snapshot()
            processed.append((m.name, "success", snap["succeeded"]))
            processed.append((m.name, "failure", snap["failed"]))
            retries.append((m.name, snap["retried"]))
            dead.append((m.name, snap["dead_lettered"]))
            circuit.append((m.name, m.circuit.state.value))
            durations.append(
                (m.name, list(DURATION_BOUNDS), snap["hist"], snap["hist_sum"], snap["hist_count"])
            )
        return {
            "component": self.name,
            "processed": processed,
            "retries": retries,
            "dead_letters": dead,
            "circuit_state": circuit,
            "durations": durations,
            "active_listeners": len(listeners),
        }

    def __repr__(self) -> str:
        state = {_RUNNING: "running", _STOPPING: "stopping", _STOPPED: "stopped"}[self._state]
        return f"ListenerManager(name={self.name!r}, listeners={len(self._listeners)}, {state})"
