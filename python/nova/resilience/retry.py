"""Retry policies: how many attempts, how long to wait between them, which errors to retry.

``RetryPolicy`` (see docs/api.md, Resilience: Retry):

- ``max_attempts`` counts calls in all (3 = the first call and two retries);
- the delay before retry ``n`` (n = 1, 2, ...) is ``initial_delay`` (FIXED),
  ``initial_delay * n`` (LINEAR) or ``initial_delay * 2**(n-1)`` (EXPONENTIAL), capped at
  ``max_delay`` (so a ``max_delay`` below ``initial_delay`` makes every delay ``max_delay``);
- ``jitter`` j in [0, 1] draws the delay uniformly from ``[d*(1-j), d]``;
- ``retry_on`` decides which errors are worth another attempt: a tuple of exception types
  retries instances of them (never a :class:`~nova.PermanentError` unless it is listed), a
  predicate decides alone, and ``None`` retries everything except ``PermanentError``.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from ..errors import PermanentError, ValidationError

__all__ = ["Backoff", "RetryPolicy", "RetryOn", "retry_on_matches", "base_delay"]

RetryOn = Union[tuple[type[BaseException], ...], Callable[[BaseException], bool], None]


class Backoff(enum.Enum):
    """How the delay grows from one retry to the next."""

    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"

    def __str__(self) -> str:
        return self.value


def _number(owner: str, name: str, value: Any, *, low: float = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{owner}.{name} must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number) or number < low or (high is not None and number > high):
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValidationError(f"{owner}.{name} must be {bounds}, got {value!r}")
    return number


def _exception_types(value: Any) -> tuple[type[BaseException], ...] | None:
    """The tuple form of ``retry_on`` (a single class or a list are accepted too)."""
    if isinstance(value, type):
        value = (value,)
    if isinstance(value, (tuple, list, frozenset, set)):
        items = tuple(value)
        for item in items:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise ValidationError(
                    "RetryPolicy.retry_on must be exception classes, a predicate "
                    f"exc -> bool, or None; got {item!r} in {value!r}"
                )
        return items
    return None


def base_delay(backoff: Backoff, initial_delay: float, max_delay: float, n: int) -> float:
    """The delay before retry ``n`` (1-based) without jitter."""
    if backoff is Backoff.FIXED:
        raw = initial_delay
    elif backoff is Backoff.LINEAR:
        raw = initial_delay * n
    elif initial_delay == 0.0:
        raw = 0.0
    else:
        try:
            raw = initial_delay * math.ldexp(1.0, min(n - 1, 2000))
        except OverflowError:
            raw = math.inf
    return min(raw, max_delay)


def retry_on_matches(retry_on: RetryOn, error: BaseException) -> bool:
    """Whether ``retry_on`` says ``error`` is worth another attempt (ignoring the count)."""
    if retry_on is None:
        return not isinstance(error, PermanentError)
    if isinstance(retry_on, tuple):
        if not isinstance(error, retry_on):
            return False
        if isinstance(error, PermanentError):
            # Only when a PermanentError class is listed explicitly.
            return any(issubclass(t, PermanentError) and isinstance(error, t) for t in retry_on)
        return True
    return bool(retry_on(error))


@dataclass(frozen=True)
class RetryPolicy:
    """How a managed listener retries a failed event (see the module docstring)."""

    max_attempts: int = 3
    initial_delay: float = 0.1
    max_delay: float = 30.0
    backoff: Backoff = Backoff.EXPONENTIAL
    jitter: float = 0.0
    retry_on: RetryOn = None

    def __post_init__(self) -> None:
        owner = "RetryPolicy"
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValidationError(
                f"{owner}.max_attempts must be an integer >= 1 (1 = no retries), got {attempts!r}"
            )
        initial = _number(owner, "initial_delay", self.initial_delay)
        maximum = _number(owner, "max_delay", self.max_delay)
        if math.isinf(initial):
            raise ValidationError(f"{owner}.initial_delay must be finite, got {self.initial_delay!r}")
        jitter = _number(owner, "jitter", self.jitter, high=1.0)
        backoff: Any = self.backoff
        if isinstance(backoff, str) and not isinstance(backoff, Backoff):
            try:
                backoff = Backoff(backoff.lower())
            except ValueError:
                backoff = None
        if not isinstance(backoff, Backoff):
            raise ValidationError(
                f"{owner}.backoff must be a nova.Backoff (FIXED, LINEAR, EXPONENTIAL), got {self.backoff!r}"
            )
        retry_on: Any = self.retry_on
        if retry_on is not None:
            types = _exception_types(retry_on)
            if types is not None:
                retry_on = types
            elif not callable(retry_on):
                raise ValidationError(
                    "RetryPolicy.retry_on must be a tuple of exception classes, a predicate "
                    f"exc -> bool, or None; got {retry_on!r}"
                )
        object.__setattr__(self, "initial_delay", initial)
        object.__setattr__(self, "max_delay", maximum)
        object.__setattr__(self, "jitter", jitter)
        object.__setattr__(self, "backoff", backoff)
        object.__setattr__(self, "retry_on", retry_on)

    # -- computation ---------------------------------------------------------------------

    def base_delay(self, n: int) -> float:
        """The delay before retry ``n`` (n = 1 is the wait after the first call) without
        jitter: the upper bound of :meth:`delay`."""
        if n < 1:
            raise ValidationError(f"RetryPolicy.base_delay: retry number must be >= 1, got {n!r}")
        return base_delay(self.backoff, self.initial_delay, self.max_delay, n)

    def delay(self, n: int, *, rng: random.Random | None = None) -> float:
        """The delay before retry ``n``, with jitter drawn uniformly from
        ``[d*(1-jitter), d]`` (``rng`` defaults to the ``random`` module)."""
        d = self.base_delay(n)
        if self.jitter and d > 0:
            draw = rng.uniform if rng is not None else random.uniform
            return draw(d * (1.0 - self.jitter), d)
        return d

    def delays(self) -> list[float]:
        """Every delay of a fully failing event without jitter (``max_attempts - 1`` of them)."""
        return [self.base_delay(n) for n in range(1, self.max_attempts)]

    def is_retryable(self, error: BaseException) -> bool:
        """Whether ``retry_on`` says ``error`` is worth another attempt."""
        return retry_on_matches(self.retry_on, error)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1-based) that failed with ``error`` gets another."""
        return attempt < self.max_attempts and self.is_retryable(error)
