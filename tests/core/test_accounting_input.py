"""Bad input gets a clear ValidationError naming the field and the limit, never a panic, an
abort or a hang (issue: every event accounted for, item 9)."""

from __future__ import annotations

import math

import pytest

import nova


@pytest.mark.parametrize("wait", [math.inf, 1e300])
def test_infinite_timeouts_mean_no_deadline(wait: float) -> None:
    em = nova.Emitter(buffer_size=4, on_full=nova.OnFull.BLOCK)
    seen: list[object] = []
    em.subscribe("x", lambda e: seen.append(e.data))
    em.emit_async(nova.Event("x", 1), timeout=wait)
    assert em.flush(wait) is True
    report = em.shutdown(wait)
    assert report.undelivered == [] and seen == [1]
    pool = nova.WorkerPool(workers=1)
    assert pool.close(wait) is True
    bus = nova.Bus()
    bus.create_topic("t")
    bus.subscribe("t", lambda e: None)
    bus.publish("t", nova.Event("x"))
    assert bus.flush(wait) is True
    em2 = nova.Emitter()
    nova.shutdown(bus, em2, timeout=wait)


def test_nan_timeouts_are_validation_errors() -> None:
    em = nova.Emitter()
    bus = nova.Bus()
    pool = nova.WorkerPool(workers=1)
    try:
        for call, field in [
            (lambda: em.flush(math.nan), "Emitter.flush timeout"),
            (lambda: em.shutdown(math.nan), "Emitter.shutdown timeout"),
            (lambda: bus.flush(math.nan), "Bus.flush timeout"),
            (lambda: bus.shutdown(math.nan), "Bus.shutdown timeout"),
            (lambda: pool.close(math.nan), "WorkerPool.close timeout"),
        ]:
            with pytest.raises(nova.ValidationError, match=field):
                call()
        em.emit_async(nova.Event("x"))  # a refused shutdown leaves the emitter open
    finally:
        em.shutdown(5)
        bus.shutdown(5)
        pool.close(5)


def test_nan_retention_is_refused() -> None:
    bus = nova.Bus()
    try:
        with pytest.raises(nova.ValidationError, match="retention"):
            bus.create_topic("t", retention=math.nan)
    finally:
        bus.shutdown(5)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: nova.Emitter(buffer_size=10_000_000_000), "Emitter.buffer_size must be at most"),
        (lambda: nova.Bus(default_buffer_size=4_000_000_000), "Bus.default_buffer_size must be at most"),
        (lambda: nova.Bus(default_partitions=10**6), "Bus.default_partitions must be at most"),
        (lambda: nova.WorkerPool(workers=100_000), "WorkerPool.workers must be between 1 and"),
        (lambda: nova.Emitter(max_concurrency=10**6), "Emitter.max_concurrency must be at most"),
    ],
)
def test_sizes_past_the_documented_limits_are_refused(make: object, field: str) -> None:
    with pytest.raises(nova.ValidationError, match=field):
        make()  # type: ignore[operator]


def test_topic_sizes_past_the_limits_are_refused() -> None:
    bus = nova.Bus()
    try:
        with pytest.raises(nova.ValidationError, match="TopicConfig.buffer_size must be at most"):
            bus.create_topic("a", buffer_size=4_000_000_000)
        with pytest.raises(nova.ValidationError, match="TopicConfig.partitions must be at most"):
            bus.create_topic("b", partitions=10**6)
        with pytest.raises(nova.ValidationError, match="partitions \\* TopicConfig.buffer_size"):
            bus.create_topic("c", partitions=4096, buffer_size=1 << 20)
    finally:
        bus.shutdown(5)
