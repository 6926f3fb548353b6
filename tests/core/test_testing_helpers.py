"""nova.testing: RecordingListener, ManualClock and the pytest plugin's fixtures."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import nova
import nova.resilience.clock
import nova.testing
import nova.testing.plugin
from nova.testing import ManualClock, RecordingListener

pytest_plugins = ["pytester"]

#: How the plugin is enabled in the pytester runs: registered unless its entry point already did.
PLUGIN_CONFTEST = """
import nova.testing.plugin as _nova_plugin

def pytest_configure(config):
    if not config.pluginmanager.is_registered(_nova_plugin):
        config.pluginmanager.register(_nova_plugin, "nova-testing")
"""


# -- RecordingListener --------------------------------------------------------------------------


def test_records_in_order_and_waits() -> None:
    rec = RecordingListener("orders")
    em = nova.Emitter(max_concurrency=1)  # one at a time: arrival order is emit order
    sub = em.subscribe("order.*", rec)
    assert sub.listener.name == "orders"
    events = [nova.Event("order.created", i) for i in range(50)]
    for ev in events:
        em.emit_async(ev)
    got = rec.wait(50, timeout=5)
    assert [e.id for e in got] == [e.id for e in events]
    assert rec.ids == [e.id for e in events] and rec.types == ["order.created"] * 50
    assert rec.last is events[-1] or rec.last == events[-1]
    assert len(rec) == 50
    events_copy = rec.events
    events_copy.clear()
    assert len(rec) == 50  # .events is a copy
    rec.clear()
    assert rec.events == [] and rec.last is None
    em.shutdown()


def test_wait_for_times_out_with_false_and_wait_fails_the_test() -> None:
    rec = RecordingListener()
    start = time.monotonic()
    assert rec.wait_for(1, timeout=0.05) is False
    assert time.monotonic() - start < 2
    assert rec.wait_for(0, timeout=0) is True
    rec(nova.Event("a.b"))
    with pytest.raises(AssertionError, match=r"expected 2 event\(s\) within 0.05 s, got 1: \['a.b'\]"):
        rec.wait(2, timeout=0.05)
    with pytest.raises(ValueError):
        rec.wait_for(-1)


def test_wait_wakes_up_as_soon_as_events_arrive() -> None:
    rec = RecordingListener()
    threading.Timer(0.05, rec, args=(nova.Event("late.event"),)).start()
    start = time.monotonic()
    assert rec.wait(1, timeout=10)[0].type == "late.event"
    assert time.monotonic() - start < 5


def test_wait_without_timeout() -> None:
    rec = RecordingListener()
    threading.Timer(0.02, rec, args=(nova.Event("late.event"),)).start()
    assert rec.wait_for(1, timeout=None) is True


def test_thread_safe_under_many_writers() -> None:
    rec = RecordingListener()
    barrier = threading.Barrier(8)

    def write(k: int) -> None:
        barrier.wait()
        for i in range(500):
            rec(nova.Event("load.generated", (k, i)))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(rec) == 4000
    assert len({e.data for e in rec.events}) == 4000


def test_side_effects() -> None:
    ev = nova.Event("x.y")
    always = RecordingListener(side_effect=ConnectionError("down"))
    with pytest.raises(ConnectionError):
        always(ev)
    by_class = RecordingListener(side_effect=TimeoutError)
    with pytest.raises(TimeoutError):
        by_class(ev)
    computed = RecordingListener(side_effect=lambda e: e.type.upper())
    assert computed(ev) == "X.Y"
    seq = RecordingListener(side_effect=[ValueError("first"), None, lambda e: "third"])
    with pytest.raises(ValueError):
        seq(ev)
    assert seq(ev) is None and seq(ev) == "third" and seq(ev) is None  # used up: succeeds
    assert len(seq) == 4  # every call recorded
    with pytest.raises(ValueError):
        RecordingListener(side_effect=42)
    with pytest.raises(ValueError):
        RecordingListener("")


def test_side_effect_drives_retries_through_an_emitter() -> None:
    rec = RecordingListener("flaky", side_effect=[ConnectionError("a"), ConnectionError("b"), None])
    em = nova.Emitter()
    em.subscribe(
        "payment.requested",
        rec,
        config=nova.ListenerConfig(retry=nova.RetryPolicy(max_attempts=3, initial_delay=0.01)),
    )
    ev = nova.Event("payment.requested")
    em.emit_async(ev)
    assert [e.id for e in rec.wait(3, timeout=5)] == [ev.id] * 3
    assert em.flush(timeout=5)
    assert em.stats().failed_events == 0
    em.shutdown()


def test_wait_async() -> None:
    async def main() -> list[nova.Event]:
        rec = RecordingListener()
        em = nova.Emitter()
        em.subscribe("tick.happened", rec)
        em.emit_async(nova.Event("tick.happened"))
        got = await rec.wait_async(1, timeout=5)
        await asyncio.to_thread(em.shutdown)
        return got

    assert asyncio.run(main())[0].type == "tick.happened"


# -- ManualClock --------------------------------------------------------------------------------


def test_manual_clock_is_the_resilience_clock() -> None:
    assert ManualClock is nova.resilience.clock.ManualClock
    clock = ManualClock(10.0)
    assert isinstance(clock, nova.testing.Clock)
    assert clock.monotonic() == 10.0
    clock.advance(5)
    clock.sleep(2.5)
    assert clock.monotonic() == 17.5 and clock.sleeps == [2.5]
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert nova.testing.SYSTEM_CLOCK.monotonic() > 0


def test_manual_clock_drives_retry_delays_without_waiting() -> None:
    clock = ManualClock()
    manager = nova.ListenerManager(clock=clock)
    rec = RecordingListener("flaky", side_effect=[TimeoutError(), TimeoutError(), TimeoutError(), None])
    manager.register(
        rec,
        nova.ListenerConfig(
            retry=nova.RetryPolicy(
                max_attempts=4, initial_delay=10.0, max_delay=25.0, backoff=nova.Backoff.EXPONENTIAL
            )
        ),
    )
    start = time.monotonic()
    manager.process("flaky", nova.Event("report.requested"))
    assert time.monotonic() - start < 5  # 55 s of backoff, none waited
    assert clock.sleeps == [10.0, 20.0, 25.0] and clock.monotonic() == 55.0
    assert len(rec) == 4
    manager.stop()


# -- the pytest plugin ----------------------------------------------------------------------------


def test_plugin_exports_the_fixtures() -> None:
    for name in ("emitter", "bus", "store", "recorder", "manual_clock"):
        assert hasattr(nova.testing.plugin, name)


def test_fixtures_work_and_shut_down_cleanly(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PLUGIN_CONFTEST)
    pytester.makepyfile(
        test_flow="""
        import pytest
        import nova
        from nova.store import MemoryStore
        from nova.testing import ManualClock, RecordingListener

        SEEN = {}

        def test_emitter(emitter, recorder):
            assert isinstance(emitter, nova.Emitter) and emitter.name == "test-emitter"
            emitter.subscribe("order.created", recorder)
            emitter.emit_async(nova.Event("order.created", 1))
            assert recorder.wait(1, timeout=5)[0].data == 1
            SEEN["emitter"] = emitter

        def test_bus(bus, recorder):
            assert isinstance(bus, nova.Bus) and bus.name == "test-bus"
            bus.create_topic("orders", partitions=4, ordering_key="customer_id")
            bus.subscribe("orders", recorder)
            for i in range(10):
                bus.publish("orders", nova.Event("order.created", i, metadata={"customer_id": "c1"}))
            assert [e.data for e in recorder.wait(10, timeout=5)] == list(range(10))
            SEEN["bus"] = bus

        def test_store(store):
            assert isinstance(store, MemoryStore) and store.name == "test-store"
            store.append("orders", nova.Event("order.created"))
            assert store.stream_info("orders").version == 1
            SEEN["store"] = store

        def test_manual_clock(manual_clock):
            assert isinstance(manual_clock, ManualClock) and manual_clock.monotonic() == 0.0

        def test_fixtures_are_fresh_and_were_shut_down(emitter, bus, store, recorder):
            assert emitter is not SEEN["emitter"] and bus is not SEEN["bus"] and store is not SEEN["store"]
            assert len(recorder) == 0
            assert SEEN["emitter"].closed and SEEN["emitter"].pool.closed
            assert SEEN["bus"].closed and SEEN["bus"].pool.closed
            with pytest.raises(nova.StoreClosed):
                SEEN["store"].append("orders", nova.Event("order.created"))
            with pytest.raises(nova.EmitterClosed):
                SEEN["emitter"].emit(nova.Event("order.created"))

        def test_a_test_may_shut_down_itself(emitter):
            emitter.subscribe("job.queued", lambda e: None)
            for i in range(20):
                emitter.emit_async(nova.Event("job.queued", i))
            report = emitter.shutdown(timeout=5)
            assert report.undelivered == [] and report.in_flight == 0
    """
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


def test_fixture_teardown_after_a_failing_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PLUGIN_CONFTEST)
    pytester.makepyfile(
        test_failing="""
        import nova

        KEEP = []

        def test_fails(emitter, bus):
            KEEP.extend([emitter, bus])
            emitter.subscribe("a.b", lambda e: None)
            emitter.emit_async(nova.Event("a.b"))
            assert False, "on purpose"

        def test_they_were_still_shut_down():
            assert all(c.closed and c.pool.closed for c in KEEP)
    """
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
