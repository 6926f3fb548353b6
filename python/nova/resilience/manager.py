"""``ListenerManager``: retries, timeouts, concurrency limits, circuit breakers and dead
letters around listeners (API section 7).

``register(listener, config)`` returns a :class:`ManagedListener`, a callable to subscribe
anywhere. Calling it runs the whole policy synchronously in the calling thread; its
:meth:`ManagedListener.attempt` runs one attempt and tells the caller (the Rust core, which
owns the waiting on its timers) whether and when to try again.
"""

from __future__ import annotations

import asyncio
import bisect
import contextvars
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from .. import _aio
from .._types import Health, StopReport
from ..errors import (
    ClosedError,
    ListenerNotFound,
    ListenerTimeout,
    RetryLimitExceeded,
    ValidationError,
)
from ._util import as_listener, describe, set_async_exc
from .circuit import CircuitBreaker, CircuitConfig, CircuitState
from .clock import SYSTEM_CLOCK, Clock, SystemClock
from .deadletter import DeadLetter, DeadLetterConfig
from .retry import RetryPolicy

__all__ = ["ListenerConfig", "ListenerManager", "ManagedListener", "ManagerStats",
           "DURATION_BOUNDS"]

_log = logging.getLogger("nova")

#: Upper bounds (seconds) of the listener-duration histogram buckets (plus a final +Inf).
DURATION_BOUNDS: tuple[float, ...] = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                      0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)
_HEALTH_WINDOW = 60  # seconds


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenerConfig:
    """The policy of one managed listener.

    ``concurrency``: at most that many events in the listener at once, across all threads.
    ``timeout``: seconds an attempt may run (None: no limit). ``retry``, ``circuit`` and
    ``dead_letter`` as their classes describe; the circuit breaker and dead letters are off
    by default.
    """

    concurrency: int = 10
    timeout: float | None = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    circuit: CircuitConfig = field(default_factory=lambda: CircuitConfig(enabled=False))
    dead_letter: DeadLetterConfig = field(default_factory=lambda: DeadLetterConfig(enabled=False))

    def __post_init__(self) -> None:
        c = self.concurrency
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValidationError(f"ListenerConfig.concurrency must be an integer >= 1, got {c!r}")
        t = self.timeout
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t) or t <= 0:
                raise ValidationError(
                    f"ListenerConfig.timeout must be seconds > 0 or None (no limit), got {t!r}"
                )
            object.__setattr__(self, "timeout", None if math.isinf(t) else float(t))
        for name, cls in (("retry", RetryPolicy), ("circuit", CircuitConfig),
                          ("dead_letter", DeadLetterConfig)):
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise ValidationError(
                    f"ListenerConfig.{name} must be a nova.{cls.__name__}, got {value!r}"
                )


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


# -- the timeout watchdog ---------------------------------------------------------------------


class _AsyncTimeout(ListenerTimeout):
    """Raised inside a sync handler by the watchdog (as a class: CPython instantiates it)."""


_ACTIVE, _CANCELLED, _FIRED = 0, 1, 2


class _Watch:
    __slots__ = ("token", "thread_id", "deadline", "timeout", "state")

    def __init__(self, token: int, thread_id: int, deadline: float, timeout: float) -> None:
        self.token = token
        self.thread_id = thread_id
        self.deadline = deadline
        self.timeout = timeout
        self.state = _ACTIVE


class _Watchdog:
    """One thread per manager that raises ``ListenerTimeout`` in threads whose attempt ran
    past its deadline. Watches are grouped by timeout: within a group deadlines arrive in
    order, so the earliest of each group is its first entry (no heap, O(1) cancel)."""

    def __init__(self, name: str) -> None:
        self._name = name
        # A plain Lock: its __enter__/__exit__ run no bytecode, so an asynchronous exception
        # can never leave it held.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._groups: dict[float, dict[int, _Watch]] = {}
        self._wake_at = math.inf
        self._next_token = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, timeout: float) -> _Watch:
        tid = threading.get_ident()
        with self._lock:
            if self._thread is None or self._closed:
                self._start()
            self._next_token += 1
            deadline = time.monotonic() + timeout
            w = _Watch(self._next_token, tid, deadline, timeout)
            group = self._groups.get(timeout)
            if group is None:
                group = self._groups[timeout] = {}
            group[w.token] = w
            if deadline < self._wake_at:
                self._wake_at = deadline
                self._cond.notify()
        return w

    def finish(self, w: _Watch) -> bool:
        """End the watch; True when the watchdog fired on it (the attempt timed out)."""
        with self._lock:
            if w.state == _ACTIVE:
                w.state = _CANCELLED
                group = self._groups.get(w.timeout)
                if group is not None:
                    group.pop(w.token, None)
            return w.state == _FIRED

    def _start(self) -> None:
        self._closed = False
        thread = threading.Thread(target=self._run, name=f"nova-watchdog-{self._name}",
                                  daemon=True)
        self._thread = thread
        thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._thread = None
            self._cond.notify_all()

    def _run(self) -> None:
        me = threading.current_thread()
        with self._lock:
            while not self._closed and self._thread is me:
                now = time.monotonic()
                earliest = math.inf
                for timeout in list(self._groups):
                    group = self._groups[timeout]
                    while group:
                        token = next(iter(group))
                        w = group[token]
                        if w.deadline > now:
                            earliest = min(earliest, w.deadline)
                            break
                        del group[token]
                        w.state = _FIRED
                        set_async_exc(w.thread_id, _AsyncTimeout)
                    if not group:
                        del self._groups[timeout]
                self._wake_at = earliest
                self._cond.wait(None if earliest == math.inf else max(0.0, earliest - now))


# -- one managed listener ---------------------------------------------------------------------


class _Waiter:
    __slots__ = ("event", "wake_at", "abandoned")

    def __init__(self, event: Any, wake_at: float) -> None:
        self.event = event
        self.wake_at = wake_at
        self.abandoned = False


class ManagedListener:
    """A listener with its policy: subscribe it anywhere (``emitter.subscribe("x", managed)``).

    ``managed(event)`` runs the whole policy in the calling thread: returns on success, raises
    :class:`~nova.RetryLimitExceeded` (last error as ``__cause__``) after the dead-letter step.
    ``managed.attempt(event, n, topic)`` runs attempt ``n`` only (see its docstring).
    """

    def __init__(self, manager: ListenerManager, listener: Any, config: ListenerConfig) -> None:
        self.manager = manager
        self.listener = listener
        self.config = config
        self.name: str = str(listener.name)
        # The core names a subscribed callable by its __qualname__: keep the listener's name.
        self.__qualname__ = self.name
        self.__name__ = self.name
        self._handler = listener.handler
        self._on_error = listener.on_error
        self._is_async = _aio.is_async(self._handler)
        self._timeout = config.timeout
        self._policy = config.retry
        self._dead_letter = config.dead_letter
        self.circuit = CircuitBreaker(config.circuit, clock=manager._clock, name=self.name)
        self._circuit_on = config.circuit.enabled
        self._registered = True
        # Concurrency slots and counters share one lock.
        self._lock = threading.Lock()
        self._slots = threading.Condition(self._lock)
        self._limit = config.concurrency
        self._active = 0
        self._waiting_slots = 0
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.abandoned = 0
        self._hist = [0] * (len(DURATION_BOUNDS) + 1)
        self._hist_sum = 0.0
        self._hist_count = 0
        self._health: deque[list[int]] = deque()  # [second, attempts, failures]

    # -- public ------------------------------------------------------------------------

    def __call__(self, event: Any) -> None:
        self._process(event, None)

    def process(self, event: Any, *, topic: str | None = None) -> None:
        """``managed(event)`` with the topic recorded in a dead letter."""
        self._process(event, topic)

    def attempt(self, event: Any, attempt: int, topic: str | None = None) -> float | None:
        """Run attempt number ``attempt`` (from 1) of ``event``, for a caller that does the
        waiting itself: None when the event is done; the delay in seconds after which
        ``attempt(event, attempt + 1, topic)`` should be called; or
        :class:`~nova.RetryLimitExceeded` (last error as ``__cause__``) once it finally
        failed, after dead-lettering it with ``topic``."""
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValidationError(f"ManagedListener.attempt: attempt must be an integer >= 1, got {attempt!r}")
        mgr = self.manager
        self._check_registered()
        if mgr._state != _RUNNING:
            if attempt > 1 and mgr._state == _STOPPED:
                self.abandon(event)
                raise ClosedError(
                    f"listener manager '{mgr.name}' is stopped; event {describe(event)} waiting "
                    f"for retry {attempt - 1} of listener '{self.name}' was abandoned (it is "
                    "reported by the next stop())"
                )
            if attempt == 1:
                mgr._reject(event)
        if attempt > 1:
            self._count_retry()
        error = self._run_attempt(event, attempt)
        if error is None:
            self._count_success()
            return None
        if self._should_retry(error, attempt):
            return self._policy.delay(attempt)
        self._final_failure(event, error, attempt, topic)
        raise self._limit_error(event, error, attempt) from error

    def abandon(self, event: Any) -> None:
        """The core gave up on ``event`` while it waited for a retry (a shutdown deadline):
        it is reported in the manager's next ``stop()`` report."""
        with self._lock:
            self.abandoned += 1
        self.manager._add_abandoned(event)

    def health(self) -> Health:
        """Health over the last minute (see ``ListenerManager.listener_health``)."""
        if self._circuit_on and self.circuit.state is not CircuitState.CLOSED:
            return Health.CIRCUIT_OPEN
        attempts, failures = self._window()
        if failures * 2 > attempts:
            return Health.UNHEALTHY
        if failures:
            return Health.DEGRADED
        return Health.HEALTHY

    @property
    def circuit_state(self) -> CircuitState:
        return self.circuit.state

    def __repr__(self) -> str:
        return f"ManagedListener(name={self.name!r}, manager={self.manager.name!r})"

    # -- the policy ----------------------------------------------------------------------

    def _process(self, event: Any, topic: str | None) -> None:
        mgr = self.manager
        self._check_registered()
        if mgr._state != _RUNNING:
            mgr._reject(event)
        error = self._run_attempt(event, 1)
        if error is None:
            self._count_success()
            return
        if not self._should_retry(error, 1):
            self._final_failure(event, error, 1, topic)
            raise self._limit_error(event, error, 1) from error
        # Retrying: the manager's stop() waits for (or reports) this event from now on.
        mgr._enter_retrying()
        try:
            attempt = 1
            while True:
                delay = self._policy.delay(attempt)
                if not mgr._wait_retry(event, delay):
                    with self._lock:
                        self.abandoned += 1
                    raise ClosedError(
                        f"listener manager '{mgr.name}' stopped while event {describe(event)} "
                        f"waited for retry {attempt} of listener '{self.name}'; it is reported "
                        "in StopReport.undelivered"
                    ) from error
                attempt += 1
                self._count_retry()
                error = self._run_attempt(event, attempt)
                if error is None:
                    self._count_success()
                    return
                if not self._should_retry(error, attempt):
                    self._final_failure(event, error, attempt, topic)
                    raise self._limit_error(event, error, attempt) from error
        finally:
            mgr._leave_retrying()

    def _run_attempt(self, event: Any, attempt: int) -> BaseException | None:
        """One attempt: None on success, else its error (CircuitOpenError when the circuit
        did not let the event through)."""
        circuit_on = self._circuit_on
        permit = None
        if circuit_on:
            try:
                permit = self.circuit.acquire(event)
            except Exception as exc:  # CircuitOpenError
                return exc
        # A concurrency slot.
        with self._lock:
            if self._active >= self._limit:
                self._waiting_slots += 1
                try:
                    while self._active >= self._limit:
                        self._slots.wait()
                finally:
                    self._waiting_slots -= 1
            self._active += 1
        ok = False
        error: BaseException | None = None
        started = time.perf_counter()
        try:
            error = self._invoke(event, attempt)
            ok = True
        finally:
            elapsed = time.perf_counter() - started
            failed = error is not None
            now = self.manager._clock.monotonic()
            with self._lock:
                self._active -= 1
                if self._waiting_slots:
                    self._slots.notify()
                if ok:
                    self._hist[bisect.bisect_left(DURATION_BOUNDS, elapsed)] += 1
                    self._hist_sum += elapsed
                    self._hist_count += 1
                    second = int(now)
                    buckets = self._health
                    if buckets and buckets[-1][0] == second:
                        bucket = buckets[-1]
                    else:
                        bucket = [second, 0, 0]
                        buckets.append(bucket)
                        horizon = second - _HEALTH_WINDOW
                        while buckets and buckets[0][0] <= horizon:
                            buckets.popleft()
                    bucket[1] += 1
                    if failed:
                        bucket[2] += 1
            if permit is not None:
                if not ok:
                    self.circuit.release(permit)
                elif failed:
                    self.circuit.failure(permit)
                else:
                    self.circuit.success(permit)
            if self.manager._state == _STOPPING:
                self.manager._poke()
        return error

    def _invoke(self, event: Any, attempt: int) -> BaseException | None:
        """Hand the event to the listener (handler, then ``on_error`` if it raised), within
        the timeout. None on success, else the attempt's error. A BaseException that is not
        an Exception (KeyboardInterrupt...) propagates."""
        if self._is_async:
            error = self._invoke_async(event, attempt)
        else:
            error = self._invoke_sync(event, attempt)
        if error is None or self._on_error is None:
            return error
        try:
            result = self._on_error(event, error)
            if _aio.is_async(self._on_error):
                _aio.wait(self.manager._loop, result)
            return None
        except Exception as handled:
            return handled

    def _invoke_sync(self, event: Any, attempt: int) -> BaseException | None:
        timeout = self._timeout
        if timeout is None:
            try:
                self._handler(event)
                return None
            except Exception as exc:
                return exc
        watchdog = self.manager._watchdog
        w = watchdog.watch(timeout)
        error: BaseException | None = None
        try:
            try:
                self._handler(event)
            except BaseException as exc:
                error = exc
            fired = self._settle(w)
        except _AsyncTimeout as late:
            # Delivered after the handler ended, before the watch was settled.
            if w.state == _ACTIVE:
                watchdog.finish(w)
                raise  # not ours: an enclosing attempt's timeout
            fired = self._settle(w)
            if not fired:
                raise
            if error is None:
                error = late
        if fired:
            timeout_error = ListenerTimeout(
                f"listener '{self.name}' ran past its timeout of {timeout:g}s on event "
                f"{describe(event)} (attempt {attempt}); it was interrupted"
            )
            if error is not None and not isinstance(error, ListenerTimeout):
                timeout_error.__cause__ = error
            return timeout_error
        if error is None:
            return None
        if isinstance(error, _AsyncTimeout) or not isinstance(error, Exception):
            raise error  # an enclosing attempt's timeout, or KeyboardInterrupt & co.
        return error

    def _settle(self, w: _Watch) -> bool:
        """End the watch and make sure no timeout of ours is left pending in this thread."""
        watchdog = self.manager._watchdog
        fired = False
        while True:
            try:
                fired = watchdog.finish(w)
                if fired:
                    set_async_exc(w.thread_id, None)
                return fired
            except _AsyncTimeout:
                if w.state != _FIRED:
                    raise  # an enclosing attempt's timeout
                # ours, delivered now: nothing is pending any more; settle again

    def _invoke_async(self, event: Any, attempt: int) -> BaseException | None:
        timeout = self._timeout
        ctx = contextvars.copy_context()
        handler = self._handler
        timed_out = False

        async def run() -> None:
            nonlocal timed_out
            coro = handler(event)
            task = asyncio.get_running_loop().create_task(coro, context=ctx)
            if timeout is None:
                await task
                return
            done, _pending = await asyncio.wait({task}, timeout=timeout)
            if task in done:
                task.result()
                return
            timed_out = True
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled, or it raised while cancelled
                pass

        try:
            _aio.wait(self.manager._loop, run())
        except Exception as exc:
            return exc
        if timed_out:
            return ListenerTimeout(
                f"listener '{self.name}' ran past its timeout of {timeout:g}s on event "
                f"{describe(event)} (attempt {attempt}); it was cancelled"
            )
        return None

    def _should_retry(self, error: BaseException, attempt: int) -> bool:
        try:
            return self._policy.should_retry(error, attempt)
        except Exception:
            _log.exception("nova: retry_on of listener '%s' raised; not retrying event", self.name)
            return False

    def _limit_error(self, event: Any, error: BaseException, attempts: int) -> RetryLimitExceeded:
        return RetryLimitExceeded(
            f"listener '{self.name}' (manager '{self.manager.name}') gave up on event "
            f"{describe(event)} after {attempts} attempt(s): {type(error).__name__}: {error}"
        )

    def _final_failure(self, event: Any, error: BaseException, attempts: int,
                       topic: str | None) -> None:
        dl = self._dead_letter
        delivered = False
        if dl.enabled and (dl.queue is not None or dl.handler is not None):
            if dl.queue is not None:
                try:
                    dl.queue.add(DeadLetter.from_error(event, error, attempts=attempts,
                                                       listener=self.name, topic=topic))
                    delivered = True
                except Exception:
                    _log.exception(
                        "nova: listener '%s' could not put event %s in its dead-letter queue",
                        self.name, describe(event),
                    )
            if dl.handler is not None:
                try:
                    result = dl.handler(event, error)
                    if _aio.is_async(dl.handler):
                        _aio.wait(self.manager._loop, result)
                    delivered = True
                except Exception:
                    _log.exception(
                        "nova: dead-letter handler of listener '%s' raised on event %s",
                        self.name, describe(event),
                    )
        with self._lock:
            self.failed += 1
            if delivered:
                self.dead_lettered += 1
        extra = {"event_id": getattr(event, "id", None), "event_type": getattr(event, "type", None),
                 "listener": self.name, "attempts": attempts, "error": repr(error),
                 "component": self.manager.name}
        if delivered:
            _log.warning(
                "nova: listener '%s' sent event %s to its dead letters after %d attempt(s): "
                "%s: %s", self.name, describe(event), attempts, type(error).__name__, error,
                extra=extra,
            )
        else:
            _log.error(
                "nova: listener '%s' failed on event %s after %d attempt(s) and no dead letter "
                "is configured; the event is dropped: %s: %s", self.name, describe(event),
                attempts, type(error).__name__, error, extra=extra,
            )

    # -- bookkeeping -------------------------------------------------------------------

    def _check_registered(self) -> None:
        if not self._registered:
            raise ListenerNotFound(
                f"listener '{self.name}' is no longer registered with manager "
                f"'{self.manager.name}'; register it again"
            )

    def _count_success(self) -> None:
        with self._lock:
            self.succeeded += 1

    def _count_retry(self) -> None:
        with self._lock:
            self.retried += 1

    def _window(self) -> tuple[int, int]:
        horizon = int(self.manager._clock.monotonic()) - _HEALTH_WINDOW
        attempts = failures = 0
        with self._lock:
            for second, n, f in self._health:
                if second > horizon:
                    attempts += n
                    failures += f
        return attempts, failures

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "succeeded": self.succeeded, "failed": self.failed, "retried": self.retried,
                "dead_lettered": self.dead_lettered, "hist": list(self._hist),
                "hist_sum": self._hist_sum, "hist_count": self._hist_count,
                "active": self._active,
            }


# -- the manager ------------------------------------------------------------------------------

_RUNNING, _STOPPING, _STOPPED = 0, 1, 2


class ListenerManager:
    """Listeners under retry, timeout, concurrency, circuit-breaker and dead-letter policies.

    Usable at once (``start()`` is optional and restarts a stopped manager). ``clock`` (an
    object with ``monotonic()`` and ``sleep()``) drives retry delays, circuit timeouts and the
    health window; ``loop`` is where ``async def`` handlers run (default: Nova's loop thread).
    ``pool`` is kept for components that dispatch managed listeners onto it; the manager itself
    runs each event in the thread that hands it over.
    """

    def __init__(self, *, pool: Any = None, name: str = "listeners", clock: Clock | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"ListenerManager.name must be a non-empty str, got {name!r}")
        if clock is not None and not (callable(getattr(clock, "monotonic", None))
                                      and callable(getattr(clock, "sleep", None))):
            raise ValidationError(
                f"ListenerManager.clock must have monotonic() and sleep(), got {clock!r}"
            )
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
        self._abandoned: list[Any] = []
        self._retrying = 0  # events of process() calls between their first failure and the end
        self._state = _RUNNING
        self._watchdog = _Watchdog(name)

    # -- registration --------------------------------------------------------------------

    def register(self, listener: Any, config: ListenerConfig | None = None) -> ManagedListener:
        """Put ``listener`` (a callable or ``nova.Listener``) under ``config`` (default
        ``ListenerConfig()``); returns the :class:`ManagedListener` to subscribe."""
        if config is None:
            config = ListenerConfig()
        if not isinstance(config, ListenerConfig):
            raise ValidationError(f"ListenerManager.register: config must be a nova.ListenerConfig, got {config!r}")
        inner = as_listener(listener)
        managed = ManagedListener(self, inner, config)
        with self._lock:
            if managed.name in self._listeners:
                raise ValidationError(
                    f"listener '{managed.name}' is already registered with manager '{self.name}'; "
                    "unregister it first or give the listener another name"
                )
            self._listeners[managed.name] = managed
        return managed

    def unregister(self, name: str | ManagedListener) -> None:
        """Remove a listener (``ListenerNotFound`` if absent); its ManagedListener stops
        accepting events."""
        key = name.name if isinstance(name, ManagedListener) else name
        with self._lock:
            managed = self._listeners.pop(key, None)
            if managed is None:
                raise ListenerNotFound(self._not_found(key))
            managed._registered = False
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
            self._state = _RUNNING

    @property
    def running(self) -> bool:
        return self._state == _RUNNING

    def stop(self, timeout: float | None = 30.0) -> StopReport:
        """Stop accepting events, let attempts in flight and retries due before the deadline
        finish, then give up on the events still waiting for a retry: they are returned in
        ``StopReport.undelivered`` (with those the core abandoned, see
        ``ManagedListener.abandon``). Calling it again reports only what was abandoned since."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or timeout < 0):
            raise ValidationError(f"ListenerManager.stop: timeout must be seconds >= 0 or None, got {timeout!r}")
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        undelivered: list[Any] = []
        with self._lock:
            if self._state == _RUNNING:
                self._state = _STOPPING
            while True:
                now = time.monotonic()
                # Attempts running, retrying events between two waits, retries due in time.
                busy = (any(m._active for m in self._listeners.values())
                        or self._retrying > len(self._waiting))
                due = any(w.wake_at <= deadline for w in self._waiting.values())
                if not (busy or due) or now >= deadline:
                    break
                self._cond.wait(min(deadline - now, 0.05))
            for waiter in self._waiting.values():
                waiter.abandoned = True
                undelivered.append(waiter.event)
            self._waiting.clear()
            undelivered.extend(self._abandoned)
            self._abandoned = []
            self._state = _STOPPED
            idle = not any(m._active for m in self._listeners.values())
            self._cond.notify_all()
        if idle:
            self._watchdog.close()
        return StopReport(undelivered=undelivered)

    def close(self, timeout: float | None = 30.0) -> StopReport:
        """Same as :meth:`stop`."""
        return self.stop(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _reject(self, event: Any) -> None:
        raise ClosedError(
            f"listener manager '{self.name}' is stopped; event {describe(event)} was not "
            "processed (call start() to use the manager again)"
        )

    def _add_abandoned(self, event: Any) -> None:
        with self._lock:
            self._abandoned.append(event)

    def _poke(self) -> None:
        with self._lock:
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

    def _enter_retrying(self) -> None:
        with self._lock:
            self._retrying += 1

    def _leave_retrying(self) -> None:
        with self._lock:
            self._retrying -= 1
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
            durations.append((m.name, list(DURATION_BOUNDS), snap["hist"], snap["hist_sum"],
                              snap["hist_count"]))
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

