"""Issue 15, item 8: every exception class Nova exports derives from ``nova.NovaError``."""

from __future__ import annotations

import pytest

import nova


def _exported_exceptions() -> list[type[BaseException]]:
    out = []
    for name in nova.__all__:
        obj = getattr(nova, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            out.append(obj)
    return out


def test_export_list_has_the_user_bases() -> None:
    names = {cls.__name__ for cls in _exported_exceptions()}
    assert {"NovaError", "RetryableError", "PermanentError", "ValidationError"} <= names


@pytest.mark.parametrize("cls", _exported_exceptions(), ids=lambda c: c.__name__)
def test_every_exported_exception_is_a_nova_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, nova.NovaError), f"nova.{cls.__name__} does not derive from nova.NovaError"


def test_user_bases_keep_their_behaviour() -> None:
    class Temporary(nova.RetryableError):
        pass

    class Fatal(nova.PermanentError):
        pass

    err = Temporary("try again", 3)
    assert err.args == ("try again", 3)
    assert str(Fatal("no")) == "no"
    # Users catch them as Exception and as NovaError; the two bases stay unrelated.
    assert isinstance(err, Exception) and isinstance(err, nova.NovaError)
    assert not issubclass(nova.RetryableError, nova.PermanentError)
    assert not issubclass(nova.PermanentError, nova.RetryableError)
    with pytest.raises(nova.NovaError):
        raise Fatal("x")


def test_permanent_error_still_not_retried_by_default() -> None:
    calls = []

    def handler(event: nova.Event) -> None:
        calls.append(event.id)
        raise nova.PermanentError("bad input")

    manager = nova.ListenerManager()
    try:
        manager.register(
            nova.Listener("perm", handler),
            nova.ListenerConfig(retry=nova.RetryPolicy(max_attempts=3, initial_delay=0.01)),
        )
        with pytest.raises(nova.RetryLimitExceeded):
            manager.process("perm", nova.Event("x.y"))
        assert len(calls) == 1
    finally:
        manager.stop(5)


def test_retryable_error_is_retried() -> None:
    calls = []

    def handler(event: nova.Event) -> None:
        calls.append(event.id)
        raise nova.RetryableError("later")

    manager = nova.ListenerManager()
    try:
        manager.register(
            nova.Listener("retry", handler),
            nova.ListenerConfig(retry=nova.RetryPolicy(max_attempts=3, initial_delay=0.01)),
        )
        with pytest.raises(nova.RetryLimitExceeded):
            manager.process("retry", nova.Event("x.y"))
        assert len(calls) == 3
    finally:
        manager.stop(5)


def test_listing_nova_error_does_not_retry_permanent_errors() -> None:
    policy = nova.RetryPolicy(max_attempts=3, retry_on=(nova.NovaError,))
    assert not policy.is_retryable(nova.PermanentError("x"))
    assert policy.is_retryable(nova.RetryableError("x"))
