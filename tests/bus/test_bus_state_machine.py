"""Per-key order and exactly-once delivery per subscriber on a 16-partition topic with 4
workers, under concurrent subscribe/unsubscribe (hypothesis state machines): AT_MOST_ONCE, and
the default AT_LEAST_ONCE with listeners whose first attempt of some events fails, so that a
partition holds a subscriber's later events back while the retry waits, then releases them from
the retry's thread as the workers go on (src/holdback.rs). On free-threaded CPython these run
with the GIL off."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import nova
from nova import Backoff, Bus, DeliveryMode, Event, ListenerConfig, OnFull, RetryableError, RetryPolicy


class BusMachine(RuleBasedStateMachine):
    MODE = DeliveryMode.AT_MOST_ONCE

    def __init__(self) -> None:
        super().__init__()
        self.bus = Bus(pool=nova.WorkerPool(4), default_delivery_mode=self.MODE)
        self.bus.create_topic(
            "orders", partitions=16, ordering_key="key", on_full=OnFull.BLOCK, delivery_mode=self.MODE
        )
        self.lock = threading.Lock()
        self.subs: dict[int, Any] = {}
        self.active: set[int] = set()
        # per subscriber: per key, the sequence numbers received in order
        self.received: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        # per subscriber: the events published while it was subscribed
        self.expected: dict[int, set[int]] = defaultdict(set)
        self.seq = 0
        self.next_sub = 0

    def _listener(self, n: int) -> Any:
        def h(e: Event) -> None:
            with self.lock:
                self.received[n][e.metadata["key"]].append(e.data)

        return h

    def _subscribe(self, n: int) -> Any:
        return self.bus.subscribe("orders", self._listener(n))

    @rule()
    def subscribe(self) -> None:
        n = self.next_sub
        self.next_sub += 1
        self.subs[n] = self._subscribe(n)
        self.active.add(n)

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        self.bus.flush(10)  # what was published while subscribed is delivered first
        n = data.draw(st.sampled_from(sorted(self.active)))
        self.subs[n].unsubscribe()
        self.active.discard(n)

    @rule(
        keys=st.lists(st.sampled_from([f"k{i}" for i in range(40)]), min_size=1, max_size=80),
        threads=st.integers(1, 3),
    )
    def publish(self, keys: list[str], threads: int) -> None:
        # Each key is published by one thread, so its order is that thread's order.
        by_thread: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for k in keys:
            self.seq += 1
            by_thread[hash(k) % threads].append((self.seq, k))
            for n in self.active:
                self.expected[n].add(self.seq)

        def run(items: list[tuple[int, str]]) -> None:
            for seq, k in items:
                self.bus.publish("orders", Event("order.created", seq, metadata={"key": k}))

        ts = [threading.Thread(target=run, args=(items,)) for items in by_thread.values()]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    @invariant()
    def order_and_exactly_once(self) -> None:
        assert self.bus.flush(20)
        with self.lock:
            for n, per_key in self.received.items():
                got = [s for seqs in per_key.values() for s in seqs]
                assert len(got) == len(set(got)), "delivered twice"
                assert set(got) == self.expected[n], "lost or extra events"
                for seqs in per_key.values():
                    assert seqs == sorted(seqs), "per-key order broken"

    def teardown(self) -> None:
        self.bus.shutdown(timeout=5)
        self.bus.pool.close(5)


class RetryingBusMachine(BusMachine):
    """The default mode; every fifth event fails its first attempt and is retried 1 ms later."""

    MODE = DeliveryMode.AT_LEAST_ONCE

    def _listener(self, n: int) -> Any:
        tried: set[int] = set()

        def h(e: Event) -> None:
            if e.data % 5 == 0 and e.data not in tried:
                tried.add(e.data)  # this subscriber's attempts of one key run one at a time
                raise RetryableError("first attempt fails")
            with self.lock:
                self.received[n][e.metadata["key"]].append(e.data)

        return h

    def _subscribe(self, n: int) -> Any:
        retry = RetryPolicy(max_attempts=3, initial_delay=0.001, backoff=Backoff.FIXED)
        return self.bus.subscribe("orders", self._listener(n), config=ListenerConfig(retry=retry))


TestBusMachine = BusMachine.TestCase
TestBusMachine.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
TestRetryingBusMachine = RetryingBusMachine.TestCase
TestRetryingBusMachine.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
