"""The benchmark workloads: Nova's dispatch paths beside plain Python and its peers (pyee,
blinker), written once for ``nova bench`` and ``benches/compare.py``.

Each throughput workload sends ``n`` events to a no-op handler and returns the elapsed seconds
of its timed loop. By default they time what a user writes: each event is built inside the
loop, on a component of the default configuration (the queued ones with ``OnFull.BLOCK``, as a
loop that never waits needs: the default, ``RAISE``, refuses what does not fit). ``prebuilt``
builds the events before the clock starts and times only the hand-off: a separate, labelled
figure. Each latency workload returns one duration per event, in seconds. The libraries are imported inside
the workloads, so importing this module costs nothing and a missing peer fails only the
workload that needs it.
"""

from __future__ import annotations

import importlib
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_perf = time.perf_counter


def noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def paced(
    count: int, emit: Callable[[float], None], delays: list[float], timeout: float = 10.0
) -> list[float]:
    """Emit ``count`` events in bursts of 10 a millisecond (sleeping in between, as a service
    would) and return the recorded delays without the first tenth (warm-up)."""
    per_burst = 10
    start = _perf()
    sent = 0
    burst = 0
    while sent < count:
        due = start + burst / 1000
        now = _perf()
        if due > now:
            time.sleep(due - now)
        for _ in range(min(per_burst, count - sent)):
            emit(_perf())
            sent += 1
        burst += 1
    deadline = _perf() + timeout
    while len(delays) < count and _perf() < deadline:
        time.sleep(0.001)
    return delays[count // 10 :]


def call_durations(
    count: int, call: Callable[..., object], args: Callable[[int], tuple[Any, ...]]
) -> list[float]:
    """The duration of each of ``count`` calls ``call(*args(i))``; the arguments (the event,
    say) are made before the clock starts, so only the call is timed."""
    out = []
    for i in range(count):
        arguments = args(i)
        t = _perf()
        call(*arguments)
        out.append(_perf() - t)
    return out


# -- emitter, synchronous ---------------------------------------------------------------------


def emitter_sync(n: int) -> float:
    """``Emitter.emit(Event(...))`` with the default configuration and one listener."""
    import nova

    em = nova.Emitter(name="bench-sync")
    em.subscribe("order.created", noop)
    event_cls, emit = nova.Event, em.emit
    t = _perf()
    for i in range(n):
        emit(event_cls("order.created", i))
    elapsed = _perf() - t
    em.shutdown()
    return elapsed


def emitter_sync_latency(count: int) -> list[float]:
    """The duration of one ``emit`` call."""
    import nova

    em = nova.Emitter(name="bench-sync-latency")
    em.subscribe("order.created", noop)
    out = call_durations(count, em.emit, lambda i: (nova.Event("order.created", i),))
    em.shutdown()
    return out


# -- emitter, asynchronous --------------------------------------------------------------------


def emitter_async(n: int, prebuilt: bool = False, buffer_size: int = 1000) -> float:
    """``emit_async`` of ``n`` events, then ``flush()``; ``OnFull.BLOCK``, default buffer."""
    import nova

    em = nova.Emitter(name="bench-async", on_full=nova.OnFull.BLOCK, buffer_size=buffer_size)
    em.subscribe("order.created", noop)
    event_cls, emit = nova.Event, em.emit_async
    if prebuilt:
        events = [event_cls("order.created", i) for i in range(n)]
        t = _perf()
        for ev in events:
            emit(ev)
    else:
        t = _perf()
        for i in range(n):
            emit(event_cls("order.created", i))
    em.flush()
    elapsed = _perf() - t
    em.shutdown()
    return elapsed


def emitter_async_latency(count: int) -> list[float]:
    """From ``emit_async`` to the listener starting, at 10,000 events/s."""
    import nova

    delays: list[float] = []
    em = nova.Emitter(name="bench-async-latency", buffer_size=10_000)
    em.subscribe("tick", lambda e: delays.append(_perf() - e.data))
    out = paced(count, lambda t: em.emit_async(nova.Event("tick", t)), delays)
    em.shutdown()
    return out


# -- bus: 16 partitions keyed by a metadata field, 4 workers --------------------------------


def _bus(
    name: str,
    listener: Callable[[Any], Any],
    ordering_key: str | None = "customer_id",
    at_most_once: bool = False,
    buffer_size: int = 1000,
    store: Any = None,
) -> Any:
    """16 partitions, 4 workers, ``OnFull.BLOCK``; otherwise the defaults (AT_LEAST_ONCE: every
    subscriber managed) unless told."""
    import nova

    bus = nova.Bus(pool=nova.WorkerPool(4, name=f"{name}-pool"), name=name, store=store)
    mode = nova.DeliveryMode.AT_MOST_ONCE if at_most_once else nova.DeliveryMode.AT_LEAST_ONCE
    bus.create_topic(
        "orders",
        partitions=16,
        ordering_key=ordering_key,
        on_full=nova.OnFull.BLOCK,
        delivery_mode=mode,
        buffer_size=buffer_size,
    )
    bus.subscribe("orders", listener)
    return bus


def bus_16(
    n: int,
    ordering_key: str | None = "customer_id",
    at_most_once: bool = False,
    prebuilt: bool = False,
    buffer_size: int = 1000,
    store: Any = None,
) -> float:
    """``Bus.publish`` of ``n`` events to 16 partitions, then ``flush()``; the events carry a
    ``customer_id``, the ordering key unless ``ordering_key`` says otherwise (None: no key)."""
    import nova

    bus = _bus("bench-bus", noop, ordering_key, at_most_once, buffer_size, store)
    event_cls, publish = nova.Event, bus.publish
    if prebuilt:
        events = [event_cls("order.created", i, metadata={"customer_id": f"c{i % 1000}"}) for i in range(n)]
        t = _perf()
        for ev in events:
            publish("orders", ev)
    else:
        keys = [f"c{i}" for i in range(1000)]
        t = _perf()
        for i in range(n):
            publish("orders", event_cls("order.created", i, metadata={"customer_id": keys[i % 1000]}))
    bus.flush()
    elapsed = _perf() - t
    bus.shutdown()
    bus.pool.close()
    return elapsed


def bus_16_stored(n: int, kind: str) -> float:
    """``bus_16`` on a bus with a ``MemoryStore`` (``kind="memory"``) or a ``SqliteStore``
    (``"sqlite"``, default durability: group commit)."""
    if kind == "memory":
        from nova.store import MemoryStore

        store = MemoryStore(max_events_per_stream=n + 1, name="bench-bus-memory")
        try:
            return bus_16(n, store=store)
        finally:
            store.close()
    with _sqlite_store("bench-bus-sqlite") as sqlite:
        return bus_16(n, store=sqlite)


def bus_16_latency(count: int) -> list[float]:
    """From ``publish`` to the listener starting, at 10,000 events/s."""
    import nova

    delays: list[float] = []
    bus = _bus("bench-bus-latency", lambda e: delays.append(_perf() - e.data))
    published = [0]

    def publish(t: float) -> None:
        published[0] += 1
        bus.publish(
            "orders", nova.Event("order.created", t, metadata={"customer_id": f"c{published[0] % 1000}"})
        )

    out = paced(count, publish, delays)
    bus.shutdown()
    bus.pool.close()
    return out


# -- stores -----------------------------------------------------------------------------------


def store_memory(n: int) -> float:
    """``MemoryStore.append`` of one event per call."""
    import nova
    from nova.store import MemoryStore

    store = MemoryStore(max_events_per_stream=n + 1, name="bench-memory")
    events = [nova.Event("order.created", i) for i in range(n)]
    append = store.append
    t = _perf()
    for ev in events:
        append("orders", ev)
    elapsed = _perf() - t
    store.close()
    return elapsed


def store_memory_latency(count: int) -> list[float]:
    """The duration of one ``append`` call."""
    import nova
    from nova.store import MemoryStore

    store = MemoryStore(max_events_per_stream=count + 1, name="bench-memory-latency")
    out = call_durations(count, store.append, lambda i: ("orders", nova.Event("order.created", i)))
    store.close()
    return out


@contextmanager
def _sqlite_store(name: str) -> Iterator[Any]:
    """A SqliteStore in a temporary directory, closed and removed afterwards."""
    from nova.store import SqliteStore

    with tempfile.TemporaryDirectory(prefix="nova-bench-") as d:
        store = SqliteStore(os.path.join(d, "events.db"), name=name)
        try:
            yield store
        finally:
            store.close()


def store_sqlite(n: int) -> float:
    """``SqliteStore.append`` of one event per call (one transaction each)."""
    import nova

    events = [nova.Event("order.created", i) for i in range(n)]
    with _sqlite_store("bench-sqlite") as store:
        append = store.append
        t = _perf()
        for ev in events:
            append("orders", ev)
        return _perf() - t


def store_sqlite_latency(count: int) -> list[float]:
    """The duration of one ``append`` call."""
    import nova

    with _sqlite_store("bench-sqlite-latency") as store:
        return call_durations(count, store.append, lambda i: ("orders", nova.Event("order.created", i)))


# -- plain Python -----------------------------------------------------------------------------


def python_loop(n: int) -> float:
    """A ``for`` loop calling the handler: the floor of any dispatch."""
    handlers = [noop]
    t = _perf()
    for i in range(n):
        for h in handlers:
            h(i)
    return _perf() - t


def floor_sync(n: int) -> float:
    """The ceiling of any in-process dispatcher, for the targets' sake: the loop builds a
    minimal C object of the event's two fields (a ``slice``, among the cheapest objects CPython
    makes) and calls the handler with it, with no dispatch at all. Under the GIL a queued
    dispatcher's producer and worker take turns, so this is its ceiling too."""
    handler, make = noop, slice
    t = _perf()
    for i in range(n):
        handler(make("order.created", i))
    return _perf() - t


def floor_keyed(n: int) -> float:
    """``floor_sync`` for an event with a metadata key (a bus's ordering key): the dict, the
    object, the handler call; nothing routed, queued or accounted."""
    handler, make = noop, slice
    keys = [f"c{i}" for i in range(1000)]
    t = _perf()
    for i in range(n):
        handler(make("order.created", i, {"customer_id": keys[i % 1000]}))
    return _perf() - t


def queue_worker(n: int) -> float:
    """``queue.Queue`` to one consumer thread."""
    q: queue.Queue[Any] = queue.Queue(maxsize=1000)

    def work() -> None:
        while True:
            item = q.get()
            if item is None:
                return
            noop(item)

    th = threading.Thread(target=work, name="bench-queue-worker")
    th.start()
    t = _perf()
    for i in range(n):
        q.put(i)
    q.put(None)
    th.join()
    return _perf() - t


def queue_worker_latency(count: int) -> list[float]:
    """From ``put`` to the consumer, at 10,000 events/s."""
    q: queue.Queue[Any] = queue.Queue(maxsize=1000)
    delays: list[float] = []

    def work() -> None:
        while True:
            item = q.get()
            if item is None:
                return
            delays.append(_perf() - item)

    th = threading.Thread(target=work, name="bench-queue-latency")
    th.start()
    out = paced(count, q.put, delays)
    q.put(None)
    th.join()
    return out


# -- peers, and Nova's drop-ins for them ------------------------------------------------------
# ``module`` names pyee or blinker, or a module with the same API (nova.compat.pyee,
# nova.compat.blinker), so a peer and its drop-in are measured by the same loop.


def _pyee_emitter(module: str) -> Any:
    ee = importlib.import_module(module).EventEmitter()
    ee.on("order.created", noop)
    return ee


def _blinker_signal(module: str) -> Any:
    sig = importlib.import_module(module).Signal()
    sig.connect(noop)
    return sig


def pyee_emit(n: int, module: str = "pyee") -> float:
    """``EventEmitter.emit``."""
    emit = _pyee_emitter(module).emit
    t = _perf()
    for i in range(n):
        emit("order.created", i)
    return _perf() - t


def pyee_latency(count: int, module: str = "pyee") -> list[float]:
    """The duration of one ``emit`` call."""
    return call_durations(count, _pyee_emitter(module).emit, lambda i: ("order.created", i))


def pyee_executor(n: int) -> float:
    """pyee's ``ExecutorEventEmitter`` (a thread pool): ``emit`` of ``n`` events, then the
    executor's shutdown, which waits for every call."""
    from pyee.executor import ExecutorEventEmitter

    ee = ExecutorEventEmitter()
    ee.on("order.created", noop)
    t = _perf()
    for i in range(n):
        ee.emit("order.created", i)
    ee._executor.shutdown(wait=True)
    return _perf() - t


def blinker_send(n: int, module: str = "blinker") -> float:
    """``Signal.send``."""
    send = _blinker_signal(module).send
    t = _perf()
    for i in range(n):
        send(i)
    return _perf() - t


def blinker_latency(count: int, module: str = "blinker") -> list[float]:
    """The duration of one ``send`` call."""
    return call_durations(count, _blinker_signal(module).send, lambda i: (i,))
