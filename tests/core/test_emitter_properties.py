"""Delivery-count and ordering properties of the emitter under concurrency (hypothesis)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import nova
from nova import Emitter, Event, OnFull

ops = st.lists(
    st.one_of(
        st.tuples(st.just("sub"), st.sampled_from(["a.x", "a.*", "#", "b.x"])),
        st.tuples(st.just("unsub"), st.integers(0, 20)),
        st.tuples(st.just("emit"), st.sampled_from(["a.x", "b.x", "c"]), st.booleans()),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(script=st.lists(ops, min_size=2, max_size=3))
def test_each_event_reaches_each_matching_subscriber_exactly_once(script: list[list[Any]]) -> None:
    """Several threads interleave subscribe/unsubscribe/emit. A subscriber that was subscribed
    before an emit started and not unsubscribed before the end gets that event exactly once;
    nobody gets an event twice."""
    em = Emitter(pool=nova.WorkerPool(4), on_full=OnFull.BLOCK, buffer_size=16)
    lock = threading.Lock()  # the script's own state (held across an emit)
    recv_lock = threading.Lock()  # what listeners record
    received: Counter[tuple[int, str]] = Counter()
    subs: list[Any] = []
    # (sub index, emitted event id) pairs that must have been delivered
    required: set[tuple[int, str]] = set()
    unsubscribed: set[int] = set()
    matches = {"a.x": {"a.x", "a.*", "#"}, "b.x": {"b.x", "#"}, "c": {"#"}}

    def make(i: int) -> Any:
        def h(e: Event) -> None:
            with recv_lock:
                received[(i, e.id)] += 1

        return h

    def run(thread_ops: list[Any]) -> None:
        for op in thread_ops:
            if op[0] == "sub":
                with lock:
                    i = len(subs)
                    subs.append((op[1], em.subscribe(op[1], make(i))))
            elif op[0] == "unsub":
                with lock:
                    if op[1] < len(subs):
                        subs[op[1]][1].unsubscribe()
                        unsubscribed.add(op[1])
            else:
                ev = Event(op[1])
                with lock:
                    present = [
                        i for i, (t, _) in enumerate(subs) if t in matches[op[1]] and i not in unsubscribed
                    ]
                    if op[2]:
                        em.emit_async(ev)
                    else:
                        em.emit(ev)
                    required.update((i, ev.id) for i in present)

    threads = [threading.Thread(target=run, args=(t,)) for t in script]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert em.flush(10)
    assert all(n == 1 for n in received.values()), "an event was delivered twice"
    missing = {r for r in required if r[0] not in unsubscribed} - set(received)
    assert not missing
    em.shutdown()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 400), workers=st.integers(1, 4), size=st.integers(1, 64))
def test_single_producer_order_with_max_concurrency_one(n: int, workers: int, size: int) -> None:
    em = Emitter(pool=nova.WorkerPool(workers), max_concurrency=1, buffer_size=size, on_full=OnFull.BLOCK)
    got: list[int] = []
    em.subscribe("x.y", lambda e: got.append(e.data))
    for i in range(n):
        em.emit_async(Event("x.y", i))
    assert em.flush(10)
    assert got == list(range(n))
    em.shutdown()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 200), timeout=st.sampled_from([0.0, 0.01, 5.0]))
def test_shutdown_never_loses_an_event_silently(n: int, timeout: float) -> None:
    em = Emitter(pool=nova.WorkerPool(1), buffer_size=256)
    got: list[str] = []
    em.subscribe("x.y", lambda e: got.append(e.id))
    events = [Event("x.y") for _ in range(n)]
    for ev in events:
        em.emit_async(ev)
    report = em.shutdown(timeout=timeout)
    em.pool.close(5)
    accounted = got + [e.id for e in report.undelivered]
    assert sorted(accounted) == sorted(e.id for e in events)
