"""Issue 15, item 9 (dead letters): a dead letter is never lost, and SQLite failures surface as
``nova.StoreError``.

- Text that SQLite cannot take as UTF-8 (a lone surrogate in an error message, a listener
  name, a topic) is stored losslessly and reads back equal.
- Writing to a dead-letter file that refuses writes raises ``StoreError`` (the SQLite error as
  ``__cause__``), not a raw ``sqlite3.OperationalError``.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import nova
from nova.resilience import DeadLetter, DeadLetterConfig, DeadLetterQueue


@pytest.fixture(params=["memory", "sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    q = DeadLetterQueue(None if request.param == "memory" else tmp_path / "dlq.db")
    yield q
    q.close()


def _fail_once_config(queue: DeadLetterQueue) -> nova.ListenerConfig:
    return nova.ListenerConfig(
        retry=nova.RetryPolicy(max_attempts=1), dead_letter=DeadLetterConfig(queue=queue)
    )


def test_a_lone_surrogate_in_the_error_message_is_dead_lettered(
    queue: DeadLetterQueue, caplog: pytest.LogCaptureFixture
) -> None:
    manager = nova.ListenerManager()

    def handler(event: nova.Event) -> None:
        raise RuntimeError("boom \ud800")

    manager.register(nova.Listener("surrogate", handler), _fail_once_config(queue))
    event = nova.Event("order.created", {"n": 1})
    with caplog.at_level(logging.INFO, logger="nova"):
        with pytest.raises(nova.RetryLimitExceeded):
            manager.process("surrogate", event)
    [entry] = queue.list()
    assert entry.event == event
    assert entry.error_type == "RuntimeError"
    assert entry.error_message == "boom \ud800"  # exactly what str(error) gave
    assert manager.stats().dead_letter_events == 1
    assert "no dead letter is configured" not in caplog.text
    assert "could not put" not in caplog.text
    manager.stop(0)


@pytest.mark.parametrize("field", ["error_type", "error_message", "listener", "topic"])
def test_every_text_field_round_trips_through_sqlite(tmp_path: Path, field: str) -> None:
    path = tmp_path / "dlq.db"
    values: dict[str, Any] = {"error_type": "E", "error_message": "m", "listener": "l", "topic": "t"}
    values[field] = "odd \udcff text \ud800 with \\ud800 literal"
    event = nova.Event("x.y", "data \ud800")
    entry = DeadLetter(
        event=event,
        attempts=2,
        failed_at=DeadLetter.from_error(event, ValueError(), attempts=1, listener="l").failed_at,
        **values,
    )
    with DeadLetterQueue(path) as q:
        q.add(entry)
        assert q.list() == [entry]
    with DeadLetterQueue(path) as q:  # survives a reopen
        [back] = q.list()
        assert back == entry
        assert getattr(back, field) == values[field]
        assert back.event.data == "data \ud800"


def test_surrogate_text_reads_back_distinct_from_its_escaped_spelling(tmp_path: Path) -> None:
    """The escaping is unambiguous: a lone surrogate and the literal text ``\\ud800`` stay
    different."""
    event = nova.Event("x.y")
    with DeadLetterQueue(tmp_path / "dlq.db") as q:
        q.add(DeadLetter.from_error(event, RuntimeError("a \ud800"), attempts=1, listener="l"))
        q.add(DeadLetter.from_error(event, RuntimeError("a \\ud800"), attempts=1, listener="l"))
        q.add(DeadLetter.from_error(event, RuntimeError("a \\xed\\xa0\\x80"), attempts=1, listener="l"))
        messages = [e.error_message for e in q.list()]
    assert messages == ["a \ud800", "a \\ud800", "a \\xed\\xa0\\x80"]


def test_a_dead_letter_redrives_after_a_surrogate_error(tmp_path: Path) -> None:
    with DeadLetterQueue(tmp_path / "dlq.db") as q:
        event = nova.Event("x.y", 1)
        q.add(
            DeadLetter.from_error(event, RuntimeError("\udc80"), attempts=1, listener="l\ud800", topic=None)
        )
        em = nova.Emitter()
        seen: list[nova.Event] = []
        em.subscribe("x.y", seen.append)
        assert q.redrive(em) == 1
        assert em.flush(5)
        em.shutdown(timeout=1)
        assert seen == [event] and q.count() == 0


def test_an_error_whose_str_raises_is_still_dead_lettered(queue: DeadLetterQueue) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    manager = nova.ListenerManager()

    def handler(event: nova.Event) -> None:
        raise Unprintable()

    manager.register(nova.Listener("unprintable", handler), _fail_once_config(queue))
    with pytest.raises(nova.RetryLimitExceeded):
        manager.process("unprintable", nova.Event("x.y"))
    [entry] = queue.list()
    assert entry.error_type.endswith("Unprintable")
    assert "Unprintable" in entry.error_message
    manager.stop(0)


# -- a file that refuses writes ------------------------------------------------------------------


def _read_only(q: DeadLetterQueue) -> None:
    """Make the queue's connection refuse writes, as a read-only file does (the tests run as
    root, for whom chmod does not stop writes)."""
    q._backend._db.execute("PRAGMA query_only = ON")  # type: ignore[union-attr]


def test_adding_to_a_read_only_file_raises_store_error(tmp_path: Path) -> None:
    with DeadLetterQueue(tmp_path / "dlq.db", name="billing-dlq") as q:
        _read_only(q)
        entry = DeadLetter.from_error(nova.Event("x.y"), ValueError("v"), attempts=1, listener="l")
        with pytest.raises(nova.StoreError) as info:
            q.add(entry)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        message = str(info.value)
        assert "billing-dlq" in message and str(tmp_path / "dlq.db") in message
        assert entry.event.id in message
        assert "writ" in message  # says what to do: make the file writable
        assert q.count() == 0  # reads still work


def test_purge_and_redrive_on_a_read_only_file_raise_store_error(tmp_path: Path) -> None:
    with DeadLetterQueue(tmp_path / "dlq.db") as q:
        q.add(DeadLetter.from_error(nova.Event("x.y"), ValueError("v"), attempts=1, listener="l"))
        _read_only(q)
        with pytest.raises(nova.StoreError) as info:
            q.purge()
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        em = nova.Emitter()
        try:
            with pytest.raises(nova.StoreError):
                q.redrive(em)
        finally:
            em.shutdown(timeout=1)


def test_any_sqlite_error_while_reading_is_a_store_error(tmp_path: Path) -> None:
    with DeadLetterQueue(tmp_path / "dlq.db") as q:
        q.add(DeadLetter.from_error(nova.Event("x.y"), ValueError("v"), attempts=1, listener="l"))
        real = q._backend._db  # type: ignore[union-attr]
        broken = mock.Mock(wraps=real)
        broken.execute.side_effect = sqlite3.OperationalError("disk I/O error")
        q._backend._db = broken  # type: ignore[union-attr]
        try:
            for call in (q.list, q.count):
                with pytest.raises(nova.StoreError) as info:
                    call()
                assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        finally:
            q._backend._db = real  # type: ignore[union-attr]


def test_opening_a_file_that_cannot_be_written_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    DeadLetterQueue(path).close()
    real_connect = sqlite3.connect

    def read_only_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.execute("PRAGMA query_only = ON")
        return conn

    with mock.patch("sqlite3.connect", read_only_connect):
        with pytest.raises(nova.StoreError) as info:
            DeadLetterQueue(path)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert "writ" in str(info.value)


def test_the_manager_logs_a_failed_queue_honestly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """When the queue refuses the entry the log says so (not 'no dead letter is configured')."""
    with DeadLetterQueue(tmp_path / "dlq.db") as q:
        _read_only(q)
        manager = nova.ListenerManager()

        def handler(event: nova.Event) -> None:
            raise ValueError("v")

        manager.register(nova.Listener("h", handler), _fail_once_config(q))
        with caplog.at_level(logging.INFO, logger="nova"):
            with pytest.raises(nova.RetryLimitExceeded):
                manager.process("h", nova.Event("x.y"))
        assert "no dead letter is configured" not in caplog.text
        assert "StoreError" in caplog.text
        manager.stop(0)
