"""A thread-safe circuit breaker with an injectable clock (see docs/api.md, Resilience:
Circuit breaker).

CLOSED -> OPEN after ``failure_threshold`` failures within ``sliding_window`` seconds. While
OPEN nothing is handed to the listener (:class:`~nova.CircuitOpenError`). ``timeout`` seconds
after opening it turns HALF_OPEN and lets trial events through one at a time (others meanwhile
get ``CircuitOpenError``); ``success_threshold`` consecutive successful trials close it and clear
the failure window; a failed trial reopens it and restarts the timeout.
"""

from __future__ import annotations

import enum
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..errors import CircuitOpenError, ValidationError
from .clock import SYSTEM_CLOCK, Clock

__all__ = ["CircuitConfig", "CircuitState", "CircuitBreaker", "Permit"]


@dataclass(frozen=True)
class CircuitConfig:
    """When a listener's circuit opens and how it recovers."""

    enabled: bool = True
    failure_threshold: int = 5
    success_threshold: int = 3
    timeout: float = 30.0
    sliding_window: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValidationError(f"CircuitConfig.enabled must be a bool, got {self.enabled!r}")
        for name in ("failure_threshold", "success_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"CircuitConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("timeout", "sliding_window"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or math.isnan(value)
                or value < 0
                or math.isinf(value)
            ):
                raise ValidationError(f"CircuitConfig.{name} must be finite seconds >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.sliding_window <= 0:
            raise ValidationError(
                f"CircuitConfig.sliding_window must be > 0 seconds, got {self.sliding_window!r}"
            )


class CircuitState(enum.Enum):
    """The breaker's state; ``value`` is the ``nova_circuit_state`` gauge (0, 1, 2)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    def __str__(self) -> str:
        return self.name.lower()


class Permit:
    """Leave to hand one event to the listener; report its outcome to the breaker."""

    __slots__ = ("generation", "trial")

    def __init__(self, generation: int, trial: bool) -> None:
        self.generation = generation
        self.trial = trial


_DISABLED_PERMIT = Permit(-1, False)


class CircuitBreaker:
    """One listener's breaker. ``acquire()`` before handing an event over (raises
    :class:`~nova.CircuitOpenError` when it may not be), then ``success(permit)`` or
    ``failure(permit)``. Outcomes of permits taken in an earlier state are ignored, except
    that a failure of a CLOSED-state permit still counts while the circuit is CLOSED.
    """

    def __init__(self, config: CircuitConfig, *, clock: Clock = SYSTEM_CLOCK, name: str = "listener") -> None:
        self.config = config
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._successes = 0
        self._trial_in_flight = False
        # Bumped on every transition, so an outcome from an earlier state is recognised.
        self._generation = 0
        self._closed_permit = Permit(0, False)
        self.times_opened = 0

    # -- state --------------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (an OPEN circuit whose timeout passed reads as HALF_OPEN)."""
        if not self.config.enabled:
            return CircuitState.CLOSED
        with self._lock:
            self._tick(self._clock.monotonic())
            return self._state

    def _tick(self, now: float) -> None:
        if self._state is CircuitState.OPEN and now - self._opened_at >= self.config.timeout:
            self._transition(CircuitState.HALF_OPEN)
            self._successes = 0
            self._trial_in_flight = False

    def _transition(self, state: CircuitState) -> None:
        self._generation += 1
        if state is CircuitState.CLOSED:
            self._closed_permit = Permit(self._generation, False)
        self._state = state

    def _open(self, now: float) -> None:
        self._transition(CircuitState.OPEN)
        self._opened_at = now
        self._successes = 0
        self._trial_in_flight = False
        self.times_opened += 1

    def retry_after(self) -> float:
        """Seconds until an OPEN circuit turns HALF_OPEN (0 when it is not OPEN)."""
        if not self.config.enabled:
            return 0.0
        with self._lock:
            now = self._clock.monotonic()
            self._tick(now)
            if self._state is not CircuitState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.config.timeout - now)

    # -- protocol -----------------------------------------------------------------------

    def acquire(self, event: Any = None) -> Permit:
        """Leave to hand an event to the listener, or :class:`~nova.CircuitOpenError`."""
        if not self.config.enabled:
            return _DISABLED_PERMIT
        if self._state is CircuitState.CLOSED:
            # Lock-free while closed; a permit of a stale generation is simply ignored later.
            return self._closed_permit
        with self._lock:
            now = self._clock.monotonic()
            self._tick(now)
            state: CircuitState = self._state
            if state is CircuitState.CLOSED:
                return Permit(self._generation, False)
            if state is CircuitState.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return Permit(self._generation, True)
            if state is CircuitState.OPEN:
                wait = max(0.0, self._opened_at + self.config.timeout - now)
                detail = f"open; it turns half-open in {wait:.3g}s"
            else:
                detail = "half-open and a trial event is in flight"
        where = ""
        if event is not None:
            where = f" for event {getattr(event, 'id', '?')} ({getattr(event, 'type', '?')})"
        raise CircuitOpenError(
            f"circuit of listener '{self.name}' is {detail}{where}; the event takes the retry path"
        )

    def success(self, permit: Permit) -> None:
        if not permit.trial:
            return  # only trial outcomes move the breaker on success
        with self._lock:
            if permit.generation != self._generation or not permit.trial:
                return
            self._trial_in_flight = False
            self._successes += 1
            if self._successes >= self.config.success_threshold:
                self._transition(CircuitState.CLOSED)
                self._failures.clear()
                self._successes = 0

    def failure(self, permit: Permit) -> None:
        if not self.config.enabled:
            return
        with self._lock:
            now = self._clock.monotonic()
            if permit.generation != self._generation:
                return
            if permit.trial:
                self._open(now)
                return
            if self._state is not CircuitState.CLOSED:
                return
            window = self._failures
            window.append(now)
            horizon = now - self.config.sliding_window
            while window and window[0] <= horizon:
                window.popleft()
            if len(window) >= self.config.failure_threshold:
                window.clear()
                self._open(now)

    def release(self, permit: Permit) -> None:
        """Give back a permit whose event never reached the listener (no outcome)."""
        if not self.config.enabled:
            return
        with self._lock:
            if permit.trial and permit.generation == self._generation:
                self._trial_in_flight = False

    def reset(self) -> None:
        """Close the circuit and forget its failures."""
        with self._lock:
            self._transition(CircuitState.CLOSED)
            self._failures.clear()
            self._successes = 0
            self._trial_in_flight = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state})"
