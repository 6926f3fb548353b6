"""Dead letters: handler and queue, contents, SQLite persistence, redrive to real components."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import nova
from nova.errors import ClosedError, RetryLimitExceeded, StoreError, ValidationError
from nova.resilience import (
    DeadLetter,
    DeadLetterConfig,
    DeadLetterQueue,
    ListenerConfig,
    ListenerManager,
    ManualClock,
    RetryPolicy,
)


class OrderCreated(nova.Event):  # type: ignore[misc, unused-ignore]
    pass


class PaymentDeclined(Exception):
    pass


def always_fails(event: nova.Event) -> None:
    raise PaymentDeclined(f"declined {event.data}")


def make_entry(i: int, topic: str | None = None) -> DeadLetter:
    return DeadLetter.from_error(
        nova.Event("order.created", {"n": i}),
        ValueError(f"bad {i}"),
        attempts=3,
        listener="billing",
        topic=topic,
    )


@pytest.fixture(params=["memory", "sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    q = DeadLetterQueue(None if request.param == "memory" else tmp_path / "dlq.db")
    yield q
    q.close()


def test_config_defaults_and_validation() -> None:
    c = DeadLetterConfig()
    assert (c.enabled, c.handler, c.queue) == (True, None, None)
    with pytest.raises(ValidationError, match="handler"):
        DeadLetterConfig(handler=42)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="queue"):
        DeadLetterConfig(queue="dlq.db")  # type: ignore[arg-type]


def test_entry_contents_after_a_final_failure(queue: DeadLetterQueue) -> None:
    mgr = ListenerManager(clock=ManualClock())
    managed = mgr.register(
        nova.Listener("billing", always_fails),
        ListenerConfig(retry=RetryPolicy(max_attempts=3), dead_letter=DeadLetterConfig(queue=queue)),
    )
    event = nova.Event("order.created", {"order": 1}, metadata={"customer_id": "c1"})
    before = datetime.now(timezone.utc)
    with pytest.raises(RetryLimitExceeded) as info:
        managed(event)
    assert isinstance(info.value.__cause__, PaymentDeclined)
    [entry] = queue.list()
    assert entry.event == event and entry.event.data == {"order": 1}
    assert entry.event.metadata == {"customer_id": "c1"}
    assert entry.event.timestamp == event.timestamp
    assert entry.error_type == "PaymentDeclined"
    assert entry.error_message == "declined {'order': 1}"
    assert entry.attempts == 3
    assert entry.listener == "billing"
    assert entry.topic is None
    assert entry.failed_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= entry.failed_at <= datetime.now(timezone.utc)
    assert queue.count() == 1
    assert mgr.stats().dead_letter_events == 1
    assert mgr._metrics()["dead_letters"] == [("billing", 1)]
    with pytest.raises(AttributeError):
        entry.attempts = 4  # type: ignore[misc]


def test_error_type_is_the_qualname(queue: DeadLetterQueue) -> None:
    class Outer:
        class Inner(Exception):
            pass

    def handler(event: nova.Event) -> None:
        raise Outer.Inner("x")

    mgr = ListenerManager()
    managed = mgr.register(
        handler, ListenerConfig(retry=RetryPolicy(max_attempts=1), dead_letter=DeadLetterConfig(queue=queue))
    )
    with pytest.raises(RetryLimitExceeded):
        managed(nova.Event("x"))
    assert queue.list()[0].error_type.endswith("Outer.Inner")


def test_handler_and_queue_both_get_it(queue: DeadLetterQueue) -> None:
    seen: list[tuple[nova.Event, BaseException]] = []
    mgr = ListenerManager()
    managed = mgr.register(
        always_fails,
        ListenerConfig(
            retry=RetryPolicy(max_attempts=1),
            dead_letter=DeadLetterConfig(handler=lambda e, exc: seen.append((e, exc)), queue=queue),
        ),
    )
    event = nova.Event("x", 5)
    with pytest.raises(RetryLimitExceeded):
        managed(event)
    assert seen[0][0] == event and isinstance(seen[0][1], PaymentDeclined)
    assert queue.count() == 1


def test_disabled_dead_letters_do_nothing(queue: DeadLetterQueue, caplog: pytest.LogCaptureFixture) -> None:
    mgr = ListenerManager()
    managed = mgr.register(
        always_fails,
        ListenerConfig(
            retry=RetryPolicy(max_attempts=1), dead_letter=DeadLetterConfig(enabled=False, queue=queue)
        ),
    )
    with caplog.at_level("ERROR", logger="nova"), pytest.raises(RetryLimitExceeded):
        managed(nova.Event("x"))
    assert queue.count() == 0
    assert mgr.stats().dead_letter_events == 0
    assert any(r.levelname == "ERROR" for r in caplog.records)


def test_a_raising_dead_letter_handler_is_logged_and_the_queue_still_gets_it(
    queue: DeadLetterQueue, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_handler(event: nova.Event, exc: BaseException) -> None:
        raise RuntimeError("alerting down")

    mgr = ListenerManager()
    managed = mgr.register(
        always_fails,
        ListenerConfig(
            retry=RetryPolicy(max_attempts=1), dead_letter=DeadLetterConfig(handler=bad_handler, queue=queue)
        ),
    )
    with caplog.at_level("ERROR", logger="nova"), pytest.raises(RetryLimitExceeded):
        managed(nova.Event("x"))
    assert queue.count() == 1
    assert "alerting down" in caplog.text


def test_oldest_first_list_limit_count_purge(queue: DeadLetterQueue) -> None:
    for i in range(5):
        queue.add(make_entry(i))
    assert [e.event.data["n"] for e in queue.list()] == [0, 1, 2, 3, 4]
    assert [e.event.data["n"] for e in queue.list(limit=2)] == [0, 1]
    assert len(queue) == queue.count() == 5
    assert queue.purge() == 5
    assert queue.count() == 0 and queue.list() == []
    with pytest.raises(ValidationError):
        queue.add("not an entry")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="limit"):
        queue.list(limit=-1)


def test_redrive_to_a_real_emitter(queue: DeadLetterQueue) -> None:
    for i in range(4):
        queue.add(make_entry(i))
    got: list[int] = []
    em = nova.Emitter(max_concurrency=1)  # one at a time: redriven in the order they were added
    em.subscribe("order.created", lambda e: got.append(e.data["n"]))
    assert queue.redrive(em, limit=3) == 3
    assert em.flush(timeout=5)
    assert got == [0, 1, 2]
    assert [e.event.data["n"] for e in queue.list()] == [3]
    assert queue.redrive(em) == 1
    assert em.flush(timeout=5)
    assert got == [0, 1, 2, 3] and queue.count() == 0
    em.shutdown()


def test_redrive_a_failed_event_through_the_manager_after_the_fix(queue: DeadLetterQueue) -> None:
    """The full loop: fail, dead-letter, fix the dependency, redrive, processed."""
    broken = {"on": True}
    done: list[str] = []

    def handler(event: nova.Event) -> None:
        if broken["on"]:
            raise ConnectionError("db down")
        done.append(event.id)

    mgr = ListenerManager()
    managed = mgr.register(
        nova.Listener("writer", handler),
        ListenerConfig(retry=RetryPolicy(max_attempts=1), dead_letter=DeadLetterConfig(queue=queue)),
    )
    em = nova.Emitter()
    em.subscribe("order.created", managed)
    event = nova.Event("order.created", {"n": 1})
    with pytest.raises(nova.ListenerError) as info:
        em.emit(event)
    assert isinstance(info.value.__cause__, RetryLimitExceeded)
    assert queue.count() == 1
    broken["on"] = False
    assert queue.redrive(em) == 1
    assert em.flush(timeout=5)
    assert done == [event.id]
    assert queue.count() == 0
    em.shutdown()


class FakeBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, nova.Event]] = []

    def publish(self, topic: str, event: nova.Event) -> None:
        self.published.append((topic, event))

    def emit_async(self, event: nova.Event) -> None:
        raise AssertionError("a topic entry must go through publish")


def test_redrive_to_a_bus_uses_the_topic(queue: DeadLetterQueue) -> None:
    queue.add(make_entry(1, topic="orders"))
    queue.add(make_entry(2, topic="payments"))
    bus = FakeBus()
    assert queue.redrive(bus) == 2
    assert [(t, e.data["n"]) for t, e in bus.published] == [("orders", 1), ("payments", 2)]


def test_redrive_stops_at_an_error_and_keeps_the_rest(queue: DeadLetterQueue) -> None:
    for i in range(3):
        queue.add(make_entry(i))

    class Flaky:
        def __init__(self) -> None:
            self.n = 0

        def emit_async(self, event: nova.Event) -> None:
            self.n += 1
            if self.n == 2:
                raise nova.BufferFull("full")

    with pytest.raises(nova.BufferFull):
        queue.redrive(Flaky())
    assert [e.event.data["n"] for e in queue.list()] == [1, 2]
    with pytest.raises(ValidationError, match="publish"):
        queue.redrive(object())


def test_sqlite_queue_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    q = DeadLetterQueue(path)
    event = OrderCreated("order.created", {"id": 7}, metadata={"k": "v"})
    q.add(DeadLetter.from_error(event, KeyError("sku"), attempts=2, listener="l", topic="orders"))
    q.add(make_entry(2))
    q.close()
    with pytest.raises(ClosedError):
        q.count()
    q.close()  # idempotent
    with DeadLetterQueue(str(path)) as again:
        first, second = again.list()
        assert type(first.event) is OrderCreated  # the subclass comes back
        assert first.event == event and first.event.data == {"id": 7}
        assert first.event.timestamp == event.timestamp
        assert (first.error_type, first.error_message, first.attempts, first.listener, first.topic) == (
            "KeyError",
            "'sku'",
            2,
            "l",
            "orders",
        )
        assert first.failed_at.tzinfo is not None
        assert second.event.data == {"n": 2} and second.topic is None
        bus = FakeBus()
        assert again.redrive(bus, limit=1) == 1
        assert bus.published == [("orders", event)]
        assert type(bus.published[0][1]) is OrderCreated
    with DeadLetterQueue(path) as third:
        assert [e.event.data for e in third.list()] == [{"n": 2}]  # the removal persisted


def test_sqlite_non_json_data_is_stored_as_repr(tmp_path: Path) -> None:
    q = DeadLetterQueue(tmp_path / "dlq.db")
    marker = object()
    event = nova.Event("x", {"obj": marker})
    q.add(DeadLetter.from_error(event, ValueError("v"), attempts=1, listener="l"))
    [entry] = q.list()
    assert entry.event.id == event.id and entry.event.type == "x"
    assert entry.event.data == repr({"obj": marker})
    q.close()


def test_sqlite_rejects_a_foreign_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a Nova dead-letter"):
        DeadLetterQueue(junk)
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE users (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="other tables"):
        DeadLetterQueue(other)


def test_sqlite_parameterised_sql_keeps_hostile_strings(tmp_path: Path) -> None:
    q = DeadLetterQueue(tmp_path / "dlq.db")
    nasty = "'); DROP TABLE dead_letters; --"
    q.add(
        DeadLetter.from_error(
            nova.Event("x", nasty), ValueError(nasty), attempts=1, listener=nasty, topic=nasty
        )
    )
    [entry] = q.list()
    assert entry.listener == nasty and entry.error_message == nasty and entry.event.data == nasty
    q.close()


def test_queue_is_thread_safe(queue: DeadLetterQueue) -> None:
    def add_many(base: int) -> None:
        for i in range(50):
            queue.add(make_entry(base + i))

    threads = [threading.Thread(target=add_many, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert queue.count() == 200
    assert len({e.event.id for e in queue.list()}) == 200


def test_two_sqlite_handles_share_the_file(tmp_path: Path) -> None:
    a = DeadLetterQueue(tmp_path / "dlq.db")
    b = DeadLetterQueue(tmp_path / "dlq.db")
    a.add(make_entry(1))
    assert b.count() == 1
    assert b.purge() == 1 and a.count() == 0
    a.close()
    b.close()


def test_async_dead_letter_handler() -> None:
    got: list[str] = []

    async def on_dead(event: nova.Event, exc: BaseException) -> None:
        got.append(event.id)

    mgr = ListenerManager()
    managed = mgr.register(
        always_fails,
        ListenerConfig(retry=RetryPolicy(max_attempts=1), dead_letter=DeadLetterConfig(handler=on_dead)),
    )
    event = nova.Event("x")
    with pytest.raises(RetryLimitExceeded):
        managed(event)
    assert got == [event.id]
    assert mgr.stats().dead_letter_events == 1
