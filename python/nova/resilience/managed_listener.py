"""``ManagedListener``: one listener under its policy (``ListenerConfig``): retries, timeout,
concurrency limit, circuit breaker and dead letters. See the API reference, docs/api.md.

A :class:`~nova.ListenerManager` makes these (``register(listener, config)``); the hot part of
an attempt runs in the Rust core (src/managed.rs), the policy around a failure runs here.
Calling a ManagedListener runs the whole policy synchronously in the calling thread; its
:meth:`ManagedListener.attempt` runs one attempt and tells the caller (the Rust core, which
owns the waiting on its timers) whether and when to try again.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _aio
from .._types import Health
from ..errors import (
    ClosedError,
    ListenerNotFound,
    ListenerTimeout,
    RetryLimitExceeded,
    ValidationError,
)
from .. import _core  # type: ignore[attr-defined, unused-ignore]
from ._manager_state import _RUNNING, _STOPPED, _Waiter
from ._util import describe, error_repr, error_text
from .circuit import CircuitBreaker, CircuitConfig, CircuitState
from .deadletter import DeadLetter, DeadLetterConfig
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .manager import ListenerManager

__all__ = ["ListenerConfig", "ManagedListener", "DURATION_BOUNDS"]

_log = logging.getLogger("nova")

#: Upper bounds (seconds) of the listener-duration histogram buckets (plus a final +Inf).
DURATION_BOUNDS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
)


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
        for name, cls in (
            ("retry", RetryPolicy),
            ("circuit", CircuitConfig),
            ("dead_letter", DeadLetterConfig),
        ):
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise ValidationError(f"ListenerConfig.{name} must be a nova.{cls.__name__}, got {value!r}")


# -- one managed listener ---------------------------------------------------------------------


class ManagedListener:
    """A listener with its policy: subscribe it anywhere (``emitter.subscribe("x", managed)``).

    ``managed(event)`` runs the whole policy in the calling thread: returns on success, raises
    :class:`~nova.RetryLimitExceeded` (last error as ``__cause__``) after the dead-letter step.
    ``managed.attempt(event, n, topic)`` runs attempt ``n`` only (see its docstring).
    """

    def __init__(
        self, manager: ListenerManager, listener: Any, config: ListenerConfig, *, name: str | None = None
    ) -> None:
        self.manager = manager
        self.listener = listener
        self.config = config
        self.name: str = name if name is not None else str(listener.name)
        # The core names a subscribed callable by its __qualname__: keep the listener's name.
        self.__qualname__ = self.name
        self.__name__ = self.name
        self._handler = listener.handler
        self._on_error = listener.on_error
        self._is_async = _aio.is_async(self._handler)
        self._slots_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._timeout = config.timeout
        self._policy = config.retry
        self._dead_letter = config.dead_letter
        self.circuit = CircuitBreaker(config.circuit, clock=manager._clock, name=self.name)
        self._circuit_on = config.circuit.enabled
        # Counters of the failure path (the core counts successes).
        self._lock = threading.Lock()
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.abandoned = 0
        # Events whose attempt() returned a delay, by id(event): the caller (the core) holds
        # them on its timer until it calls attempt() again or abandon(). Guarded by the
        # manager's lock.
        self._pending: dict[int, list[_Waiter]] = {}
        # The core runs attempts (slot, timeout, timing, success and health accounting) in
        # Rust; it calls back into Python only for the shapes it does not call itself.
        hand_over: Callable[[Any, int], BaseException | None] | None = None
        if self._on_error is not None:
            hand_over = self._invoke_with_on_error
        elif self._is_async:
            hand_over = self._invoke_async
        self._core = _core._AttemptCore(
            name=self.name,
            handler=self._handler,
            hand_over=hand_over,
            timeout=None if self._is_async else self._timeout,
            concurrency=config.concurrency,
            circuit=self._circuit_on,
            clock=None if manager._real_time else manager._clock.monotonic,
            poke=manager._poke,
        )
        self._core.set_state(manager._state)

    # -- public ------------------------------------------------------------------------

    @property
    def _registered(self) -> bool:
        return bool(self._core.registered)

    def __call__(self, event: Any) -> None:
        # The fast path: registered, running, first attempt succeeds.
        if self._core.registered and self.manager._state == _RUNNING:
            error = self._run_attempt(event, 1, deciding=True)
            if error is None:
                return
            self._after_first_failure(event, error, None)
            return
        self._process(event, None)

    def process(self, event: Any, *, topic: str | None = None) -> None:
        """``managed(event)`` with the topic recorded in a dead letter."""
        self._process(event, topic)

    def attempt(self, event: Any, attempt: int, topic: str | None = None, last: bool = False) -> float | None:
        """Run attempt number ``attempt`` (from 1) of ``event``, for a caller that does the
        waiting itself: None when the event is done; the delay in seconds after which
        ``attempt(event, attempt + 1, topic)`` should be called; or
        :class:`~nova.RetryLimitExceeded` (last error as ``__cause__``) once it finally
        failed, after dead-lettering it with ``topic``. ``last=True`` makes this attempt the
        final one whatever the retry policy says (an AT_MOST_ONCE topic).

        Between a returned delay and the next call the event counts as waiting for a retry:
        ``ListenerManager.stop()`` waits for it if it is due before the deadline, else reports
        it in ``StopReport.undelivered``; a later ``attempt()`` of an event so reported raises
        :class:`~nova.ClosedError` and does not run it (the stop's caller has it back)."""
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValidationError(
                f"ManagedListener.attempt: attempt must be an integer >= 1, got {attempt!r}"
            )
        mgr = self.manager
        waiter = mgr._begin_attempt(self, event, attempt)
        try:
            self._may_attempt(event, attempt, waiter)
            error = self._run_attempt(event, attempt)
            if error is None:
                return None
            return self._after_failed_attempt(event, attempt, topic, error, last)
        finally:
            mgr._end_attempt()

    async def attempt_async(
        self, event: Any, attempt: int, topic: str | None = None, last: bool = False
    ) -> float | None:
        """:meth:`attempt` for an ``async def`` handler, as a task on its event loop (how the
        core runs queued deliveries): the handler is awaited here, under the timeout (a late
        handler is cancelled) and at most ``concurrency`` at once on this loop; the result is
        as ``attempt``'s."""
        mgr = self.manager
        waiter = mgr._begin_attempt(self, event, attempt)
        try:
            self._may_attempt(event, attempt, waiter)
            error = await self._run_attempt_async(event, attempt)
            if error is None:
                return None
            return self._after_failed_attempt(event, attempt, topic, error, last)
        finally:
            mgr._end_attempt()

    def _may_attempt(self, event: Any, attempt: int, waiter: Any) -> None:
        """Raise if attempt ``attempt`` of ``event`` must not run (see :meth:`attempt`)."""
        mgr = self.manager
        if waiter is not None and waiter.abandoned:
            raise ClosedError(
                f"listener manager '{mgr.name}' gave up on event {describe(event)} while it "
                f"waited for retry {attempt - 1} of listener '{self.name}'; it was returned "
                "in StopReport.undelivered and is not run again (emit it again to retry it)"
            )
        if not self._registered:
            if waiter is not None:
                self._give_up(event)  # reported by the next stop()
            self._check_registered()
        if mgr._state != _RUNNING:
            if attempt > 1 and mgr._state == _STOPPED:
                self._give_up(event)
                raise ClosedError(
                    f"listener manager '{mgr.name}' is stopped; event {describe(event)} "
                    f"waiting for retry {attempt - 1} of listener '{self.name}' was "
                    "abandoned (it is reported by the next stop())"
                )
            if attempt == 1:
                mgr._reject_handed_over(event)
        if attempt > 1:
            self._count_retry()

    def _after_failed_attempt(
        self, event: Any, attempt: int, topic: str | None, error: BaseException, last: bool = False
    ) -> float:
        """The rest of ``attempt`` once it failed (the core calls it after a first attempt it
        ran itself): the delay before the next one, or the final failure."""
        if not last and self._should_retry(error, attempt):
            delay = self._policy.delay(attempt)
            self.manager._retry_scheduled(self, event, delay)
            return delay
        self._final_failure(event, error, attempt, topic)
        raise self._limit_error(event, error, attempt) from error

    def abandon(self, event: Any) -> None:
        """The core gave up on ``event`` while it waited for a retry (a shutdown deadline):
        it is reported in the manager's next ``stop()`` report — unless a ``stop()`` already
        reported it, then nothing happens (an event is reported once)."""
        waiter = self.manager._take_pending(self, event)
        if waiter is not None and waiter.abandoned:
            return
        self._give_up(event)

    def _give_up(self, event: Any) -> None:
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
        error = self._run_attempt(event, 1, deciding=True)
        if error is None:
            return
        self._after_first_failure(event, error, topic)

    def _after_first_failure(self, event: Any, error: BaseException, topic: str | None) -> None:
        """The policy after a failed first attempt of ``run(..., deciding=True)``: the core
        counts the event busy for ``stop()`` until ``decided()``, here once the retry is counted
        (``_retrying``) or the final failure is done, so a stop never falls in between."""
        mgr = self.manager
        decided = False
        try:
            if not self._should_retry(error, 1):
                self._final_failure(event, error, 1, topic)
                raise self._limit_error(event, error, 1) from error
            # Retrying: the manager's stop() waits for (or reports) this event from now on.
            with mgr._retrying():
                self._core.decided()
                decided = True
                self._retry_after_first_failure(event, error, topic)
        finally:
            if not decided:
                self._core.decided()

    def _retry_after_first_failure(self, event: Any, error: BaseException, topic: str | None) -> None:
        """The retries of ``managed(event)``, waited for on this thread."""
        mgr = self.manager
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
            next_error = self._run_attempt(event, attempt)
            if next_error is None:
                return
            error = next_error
            if not self._should_retry(error, attempt):
                self._final_failure(event, error, attempt, topic)
                raise self._limit_error(event, error, attempt) from error

    def _run_attempt(self, event: Any, attempt: int, deciding: bool = False) -> BaseException | None:
        """One attempt: None on success, else its error (CircuitOpenError when the circuit
        did not let the event through). ``deciding``: an error returned is counted busy until
        ``self._core.decided()`` (see ``_after_first_failure``)."""
        if not self._circuit_on:
            return self._core.run(event, attempt, deciding=deciding)
        try:
            permit = self.circuit.acquire(event)
        except Exception as exc:  # CircuitOpenError
            if deciding:
                self._core.hold()
            return exc
        try:
            error: BaseException | None = self._core.run(event, attempt, deciding=deciding)
        except BaseException:
            self.circuit.release(permit)
            raise
        if error is None:
            self.circuit.success(permit)
        else:
            self.circuit.failure(permit)
        return error

    async def _run_attempt_async(self, event: Any, attempt: int) -> BaseException | None:
        """:meth:`_run_attempt` for an async handler, awaited on its loop."""
        permit = None
        if self._circuit_on:
            try:
                permit = self.circuit.acquire(event)
            except Exception as exc:  # CircuitOpenError
                return exc
        try:
            async with self._loop_slots():
                started = time.perf_counter()
                error = await self._await_handler(event, attempt)
                self._core.record(time.perf_counter() - started, error is None)
        except BaseException:
            if permit is not None:
                self.circuit.release(permit)
            raise
        if permit is not None:
            if error is None:
                self.circuit.success(permit)
            else:
                self.circuit.failure(permit)
        return error

    def _loop_slots(self) -> asyncio.Semaphore:
        """At most ``concurrency`` attempts at once on the running loop."""
        loop = asyncio.get_running_loop()
        slots = self._slots_by_loop.get(loop)
        if slots is None:
            slots = self._slots_by_loop[loop] = asyncio.Semaphore(self.config.concurrency)
        return slots

    async def _await_handler(self, event: Any, attempt: int) -> BaseException | None:
        """The async handler under its timeout (cancelled when late), then ``on_error``."""
        timeout = self._timeout
        error: BaseException | None
        try:
            if timeout is None:
                await self._handler(event)
            else:
                await asyncio.wait_for(self._handler(event), timeout)
            return None
        except TimeoutError:
            error = ListenerTimeout(
                f"listener '{self.name}' ran past its timeout of {timeout:g}s on event "
                f"{describe(event)} (attempt {attempt}); it was cancelled"
            )
        except Exception as exc:
            error = exc
        if self._on_error is None:
            return error
        try:
            result = self._on_error(event, error)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            return exc
        return None

    # Hand-overs for the shapes the core does not call itself: None on success, else the
    # attempt's error. A BaseException that is not an Exception (KeyboardInterrupt...)
    # propagates.

    def _invoke_with_on_error(self, event: Any, attempt: int) -> BaseException | None:
        """The handler (under its timeout), then ``on_error`` if it raised (outside it)."""
        if self._is_async:
            error = self._invoke_async(event, attempt)
        else:
            error = self._core.run(event, attempt, accounted=False)
        if error is None or self._on_error is None:
            return error
        try:
            result = self._on_error(event, error)
            if _aio.is_async(self._on_error):
                _aio.wait(self.manager._loop, result)
            return None
        except Exception as handled:
            return handled

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
            f"{describe(event)} after {attempts} attempt(s): {type(error).__name__}: "
            f"{error_text(error)}"
        )

    def _final_failure(self, event: Any, error: BaseException, attempts: int, topic: str | None) -> None:
        dl = self._dead_letter
        delivered = False
        configured = dl.enabled and (dl.queue is not None or dl.handler is not None)
        if configured:
            if dl.queue is not None:
                try:
                    dl.queue.add(
                        DeadLetter.from_error(
                            event, error, attempts=attempts, listener=self.name, topic=topic
                        )
                    )
                    delivered = True
                except Exception:
                    _log.exception(
                        "nova: listener '%s' could not put event %s in its dead-letter queue",
                        self.name,
                        describe(event),
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
                        self.name,
                        describe(event),
                    )
        with self._lock:
            self.failed += 1
            if delivered:
                self.dead_lettered += 1
        extra = {
            "event_id": getattr(event, "id", None),
            "event_type": getattr(event, "type", None),
            "listener": self.name,
            "attempts": attempts,
            "error": error_repr(error),
            "component": self.manager.name,
        }
        text = error_text(error)
        if delivered:
            level, outcome = logging.INFO, "sent event %s to its dead letters after %d attempt(s)"
        elif configured:
            level, outcome = (
                logging.ERROR,
                (
                    "failed on event %s after %d attempt(s) and its dead-letter queue/handler failed "
                    "too (logged above); the event is dropped"
                ),
            )
        else:
            level, outcome = (
                logging.ERROR,
                (
                    "failed on event %s after %d attempt(s) and no dead letter is configured; the event is dropped"
                ),
            )
        _log.log(
            level,
            "nova: listener '%s' " + outcome + ": %s: %s",
            self.name,
            describe(event),
            attempts,
            type(error).__name__,
            text,
            extra=extra,
        )

    # -- bookkeeping -------------------------------------------------------------------

    def _check_registered(self) -> None:
        if not self._registered:
            raise ListenerNotFound(
                f"listener '{self.name}' is no longer registered with manager "
                f"'{self.manager.name}'; register it again"
            )

    def _count_retry(self) -> None:
        with self._lock:
            self.retried += 1

    def _window(self) -> tuple[int, int]:
        attempts, failures = self._core.window()
        return int(attempts), int(failures)

    def _snapshot(self) -> dict[str, Any]:
        hist, hist_sum, hist_count = self._core.durations()
        with self._lock:
            return {
                "succeeded": self._core.succeeded,
                "failed": self.failed,
                "retried": self.retried,
                "dead_lettered": self.dead_lettered,
                "hist": hist,
                "hist_sum": hist_sum,
                "hist_count": hist_count,
                "active": self._core.active,
            }
