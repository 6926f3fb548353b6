"""RetryPolicy: validation, delay sequences (computed and observed), retry_on conditions."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nova
from nova.errors import PermanentError, RetryableError, RetryLimitExceeded, ValidationError
from nova.resilience import (
    Backoff,
    ListenerConfig,
    ListenerManager,
    ManualClock,
    RetryPolicy,
)


# -- validation -------------------------------------------------------------------------------


def test_defaults_are_the_contract() -> None:
    p = RetryPolicy()
    assert (p.max_attempts, p.initial_delay, p.max_delay, p.backoff, p.jitter, p.retry_on) == (
        3,
        0.1,
        30.0,
        Backoff.EXPONENTIAL,
        0.0,
        None,
    )
    with pytest.raises(AttributeError):
        p.max_attempts = 5  # type: ignore[misc]
    assert hash(p) == hash(RetryPolicy())


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"initial_delay": -0.1}, "initial_delay"),
        ({"initial_delay": float("nan")}, "initial_delay"),
        ({"initial_delay": float("inf")}, "initial_delay"),
        ({"initial_delay": "1"}, "initial_delay"),
        ({"max_delay": -1}, "max_delay"),
        ({"jitter": -0.01}, "jitter"),
        ({"jitter": 1.01}, "jitter"),
        ({"backoff": "quadratic"}, "backoff"),
        ({"backoff": 3}, "backoff"),
        ({"retry_on": (ValueError, "x")}, "retry_on"),
        ({"retry_on": 42}, "retry_on"),
    ],
)
def test_invalid_fields_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        RetryPolicy(**kwargs)


def test_friendly_forms_are_normalised() -> None:
    assert RetryPolicy(backoff="linear").backoff is Backoff.LINEAR  # type: ignore[arg-type]
    assert RetryPolicy(retry_on=ValueError).retry_on == (ValueError,)  # type: ignore[arg-type]
    assert RetryPolicy(retry_on=[ValueError, KeyError]).retry_on == (ValueError, KeyError)  # type: ignore[arg-type]
    assert RetryPolicy(initial_delay=1).initial_delay == 1.0
    assert RetryPolicy(max_attempts=1).delays() == []


# -- computed delays --------------------------------------------------------------------------


def test_fixed_linear_exponential_sequences() -> None:
    fixed = RetryPolicy(max_attempts=5, initial_delay=0.5, backoff=Backoff.FIXED)
    linear = RetryPolicy(max_attempts=5, initial_delay=0.5, backoff=Backoff.LINEAR)
    expo = RetryPolicy(max_attempts=6, initial_delay=0.5, backoff=Backoff.EXPONENTIAL)
    assert fixed.delays() == [0.5, 0.5, 0.5, 0.5]
    assert linear.delays() == [0.5, 1.0, 1.5, 2.0]
    assert expo.delays() == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_max_delay_caps_each_delay() -> None:
    p = RetryPolicy(max_attempts=8, initial_delay=1.0, max_delay=5.0)
    assert p.delays() == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    lin = RetryPolicy(max_attempts=5, initial_delay=2.0, max_delay=5.0, backoff=Backoff.LINEAR)
    assert lin.delays() == [2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize("backoff", list(Backoff))
def test_max_delay_below_initial_makes_every_delay_max_delay(backoff: Backoff) -> None:
    p = RetryPolicy(max_attempts=5, initial_delay=3.0, max_delay=1.0, backoff=backoff)
    assert p.delays() == [1.0, 1.0, 1.0, 1.0]


def test_huge_retry_numbers_do_not_overflow() -> None:
    p = RetryPolicy(max_attempts=100_000, initial_delay=1.0, max_delay=60.0)
    assert p.base_delay(5000) == 60.0
    assert RetryPolicy(initial_delay=0.0).base_delay(5000) == 0.0
    with pytest.raises(ValidationError):
        p.base_delay(0)


@settings(max_examples=200, deadline=None)
@given(
    initial=st.floats(0.0, 10.0),
    maximum=st.floats(0.0, 20.0),
    jitter=st.floats(0.0, 1.0),
    n=st.integers(1, 40),
    backoff=st.sampled_from(list(Backoff)),
    seed=st.integers(0, 2**32),
)
def test_jitter_draws_within_d_times_one_minus_j_and_d(
    initial: float,
    maximum: float,
    jitter: float,
    n: int,
    backoff: Backoff,
    seed: int,
) -> None:
    p = RetryPolicy(max_attempts=50, initial_delay=initial, max_delay=maximum, backoff=backoff, jitter=jitter)
    d = p.base_delay(n)
    assert d <= maximum
    got = p.delay(n, rng=random.Random(seed))
    assert d * (1 - jitter) - 1e-12 <= got <= d + 1e-12


def test_jitter_spreads_uniformly() -> None:
    p = RetryPolicy(initial_delay=1.0, jitter=0.5, backoff=Backoff.FIXED)
    rng = random.Random(7)
    draws = [p.delay(1, rng=rng) for _ in range(4000)]
    assert min(draws) >= 0.5 and max(draws) <= 1.0
    assert abs(sum(draws) / len(draws) - 0.75) < 0.02
    assert sum(d < 0.625 for d in draws) > 800  # the low quarter is populated


# -- retry_on -----------------------------------------------------------------------------


class Temporary(RetryableError):
    pass


class Invalid(PermanentError):
    pass


class InvalidButRetried(PermanentError):
    pass


def test_retry_on_none_retries_everything_but_permanent() -> None:
    p = RetryPolicy()
    assert p.is_retryable(ValueError())
    assert p.is_retryable(Temporary())
    assert p.is_retryable(nova.CircuitOpenError())
    assert not p.is_retryable(Invalid())
    assert p.should_retry(ValueError(), 2) and not p.should_retry(ValueError(), 3)


def test_retry_on_tuple() -> None:
    p = RetryPolicy(retry_on=(Temporary, ConnectionError))
    assert p.is_retryable(Temporary()) and p.is_retryable(ConnectionResetError())
    assert not p.is_retryable(ValueError())

    # A PermanentError that is also an instance of a listed type is still not retried...
    class Both(ConnectionError, PermanentError):
        pass

    assert not p.is_retryable(Both())
    # ...unless a PermanentError class is listed.
    assert RetryPolicy(retry_on=(InvalidButRetried,)).is_retryable(InvalidButRetried())
    assert RetryPolicy(retry_on=(PermanentError,)).is_retryable(Invalid())
    assert not RetryPolicy(retry_on=(InvalidButRetried,)).is_retryable(Invalid())


def test_retry_on_predicate_decides_alone() -> None:
    p = RetryPolicy(retry_on=lambda exc: "again" in str(exc))
    assert p.is_retryable(Invalid("again"))  # even a PermanentError
    assert not p.is_retryable(Temporary("no"))


# -- observed through a manager ----------------------------------------------------------------


def failing(times: int, exc: type[Exception] = ValueError) -> Any:
    calls: list[float] = []

    def handler(event: nova.Event) -> None:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise exc(f"failure {len(calls)}")

    handler.calls = calls  # type: ignore[attr-defined]
    return handler


@pytest.mark.parametrize(
    "backoff, expected",
    [
        (Backoff.FIXED, [0.5, 0.5, 0.5, 0.5]),
        (Backoff.LINEAR, [0.5, 1.0, 1.5, 2.0]),
        (Backoff.EXPONENTIAL, [0.5, 1.0, 2.0, 3.0]),
    ],
)
def test_observed_delays_with_a_manual_clock(backoff: Backoff, expected: list[float]) -> None:
    clock = ManualClock()
    mgr = ListenerManager(clock=clock)
    handler = failing(10)
    managed = mgr.register(
        handler,
        ListenerConfig(retry=RetryPolicy(max_attempts=5, initial_delay=0.5, max_delay=3.0, backoff=backoff)),
    )
    with pytest.raises(RetryLimitExceeded) as info:
        managed(nova.Event("x"))
    assert clock.sleeps == expected
    assert len(handler.calls) == 5
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value.__cause__) == "failure 5"
    assert mgr.stats().events_retried == 4


def test_observed_delays_in_real_time_with_tolerance() -> None:
    mgr = ListenerManager()
    handler = failing(3)
    managed = mgr.register(
        handler,
        ListenerConfig(retry=RetryPolicy(max_attempts=4, initial_delay=0.02, backoff=Backoff.EXPONENTIAL)),
    )
    managed(nova.Event("x"))
    gaps = [b - a for a, b in zip(handler.calls, handler.calls[1:])]
    for gap, want in zip(gaps, [0.02, 0.04, 0.08]):
        assert want * 0.9 <= gap <= want + 0.05, gaps


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 7])
def test_max_attempts_counts_every_call(max_attempts: int) -> None:
    mgr = ListenerManager(clock=ManualClock())
    handler = failing(100)
    managed = mgr.register(
        handler, ListenerConfig(retry=RetryPolicy(max_attempts=max_attempts, initial_delay=0.0))
    )
    with pytest.raises(RetryLimitExceeded, match=f"after {max_attempts} attempt"):
        managed(nova.Event("x"))
    assert len(handler.calls) == max_attempts
    s = mgr.stats()
    assert (s.events_processed, s.events_retried, s.events_failed) == (1, max_attempts - 1, 1)


def test_success_after_retries_is_not_a_failure() -> None:
    mgr = ListenerManager(clock=ManualClock())
    handler = failing(2)
    managed = mgr.register(handler, ListenerConfig(retry=RetryPolicy(max_attempts=3)))
    managed(nova.Event("x"))
    s = mgr.stats()
    assert (s.events_processed, s.events_retried, s.events_failed) == (1, 2, 0)


def test_permanent_error_is_not_retried_by_default() -> None:
    mgr = ListenerManager(clock=ManualClock())
    handler = failing(10, Invalid)
    managed = mgr.register(handler, ListenerConfig(retry=RetryPolicy(max_attempts=5)))
    with pytest.raises(RetryLimitExceeded) as info:
        managed(nova.Event("x"))
    assert len(handler.calls) == 1
    assert isinstance(info.value.__cause__, Invalid)


def test_tuple_condition_through_the_manager() -> None:
    mgr = ListenerManager(clock=ManualClock())
    retried = failing(10, Temporary)
    not_retried = failing(10, KeyError)
    cfg = ListenerConfig(retry=RetryPolicy(max_attempts=4, retry_on=(Temporary,)))
    a = mgr.register(nova.Listener("a", retried), cfg)
    b = mgr.register(nova.Listener("b", not_retried), cfg)
    with pytest.raises(RetryLimitExceeded):
        a(nova.Event("x"))
    with pytest.raises(RetryLimitExceeded):
        b(nova.Event("x"))
    assert (len(retried.calls), len(not_retried.calls)) == (4, 1)


def test_a_raising_predicate_means_no_retry() -> None:
    mgr = ListenerManager(clock=ManualClock())
    handler = failing(10)

    def predicate(exc: BaseException) -> bool:
        raise RuntimeError("bad predicate")

    managed = mgr.register(handler, ListenerConfig(retry=RetryPolicy(retry_on=predicate)))
    with pytest.raises(RetryLimitExceeded):
        managed(nova.Event("x"))
    assert len(handler.calls) == 1
