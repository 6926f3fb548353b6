"""Nova beside its peers, in one process and one run, with a no-op handler.

    python benches/compare.py [--events N] [--rounds R] [--json]

Prints events/s for each workload and the ratios the issues set as targets. Quote ratios from
one run only: the machines are shared and noisy, absolute numbers drift between runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import nova


def noop(*_a: Any, **_k: Any) -> None:
    return None


def best_rates(workloads: list[tuple[str, Callable[[int], float], int]], rounds: int) -> dict[str, float]:
    """Events/s of each workload's fastest run (each returns its elapsed seconds). The rounds
    go through every workload in turn, so a burst of load from a neighbour slows one run of
    each rather than every run of one: the ratios are what this protects."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, fn, count in workloads:
            best[name] = min(best.get(name, float("inf")), fn(count))
    return {name: count / best[name] for name, _fn, count in workloads}


# ---- synchronous dispatch -------------------------------------------------------------------


def python_loop(n: int) -> float:
    handlers = [noop]
    t = time.perf_counter()
    for i in range(n):
        for h in handlers:
            h(i)
    return time.perf_counter() - t


def _emit_with(module: str, n: int) -> float:
    """`EventEmitter.emit` of pyee, or of a module with the same API (nova.compat.pyee)."""
    ee = importlib.import_module(module).EventEmitter()
    ee.on("order.created", noop)
    emit = ee.emit
    t = time.perf_counter()
    for i in range(n):
        emit("order.created", i)
    return time.perf_counter() - t


def _send_with(module: str, n: int) -> float:
    """`Signal.send` of blinker, or of a module with the same API (nova.compat.blinker)."""
    sig = importlib.import_module(module).Signal()
    sig.connect(noop)
    send = sig.send
    t = time.perf_counter()
    for i in range(n):
        send(i)
    return time.perf_counter() - t


def pyee_emit(n: int) -> float:
    return _emit_with("pyee", n)


def blinker_send(n: int) -> float:
    return _send_with("blinker", n)


def nova_emit_new_event(n: int) -> float:
    em = nova.Emitter(name="bench-sync")
    em.subscribe("order.created", noop)
    Event, emit = nova.Event, em.emit
    t = time.perf_counter()
    for i in range(n):
        emit(Event("order.created", i))
    elapsed = time.perf_counter() - t
    em.shutdown()
    return elapsed


# ---- asynchronous, end to end ---------------------------------------------------------------


def queue_worker(n: int) -> float:
    q: queue.Queue[Any] = queue.Queue(maxsize=1000)

    def work() -> None:
        while True:
            item = q.get()
            if item is None:
                return
            noop(item)

    th = threading.Thread(target=work)
    th.start()
    t = time.perf_counter()
    for i in range(n):
        q.put(i)
    q.put(None)
    th.join()
    return time.perf_counter() - t


def pyee_executor(n: int) -> float:
    from pyee.executor import ExecutorEventEmitter

    ee = ExecutorEventEmitter()
    ee.on("order.created", noop)
    t = time.perf_counter()
    for i in range(n):
        ee.emit("order.created", i)
    ee._executor.shutdown(wait=True)
    return time.perf_counter() - t


def nova_emit_async(n: int) -> float:
    em = nova.Emitter(name="bench-async", on_full=nova.OnFull.BLOCK, buffer_size=10_000)
    em.subscribe("order.created", noop)
    events = [nova.Event("order.created", i) for i in range(n)]
    emit = em.emit_async
    t = time.perf_counter()
    for ev in events:
        emit(ev)
    em.flush()
    elapsed = time.perf_counter() - t
    em.shutdown()
    return elapsed


# ---- bus: 16 partitions keyed by a metadata field, 4 workers ----------------------------------


def _bus_run(n: int, key: Any) -> float:
    bus = nova.Bus(pool=nova.WorkerPool(4), name="bench-bus")
    bus.create_topic(
        "orders",
        partitions=16,
        ordering_key=key,
        on_full=nova.OnFull.BLOCK,
        delivery_mode=nova.DeliveryMode.AT_MOST_ONCE,
        buffer_size=10_000,
    )
    bus.subscribe("orders", noop)
    events = [nova.Event("order.created", i, metadata={"customer_id": f"c{i % 1000}"}) for i in range(n)]
    publish = bus.publish
    t = time.perf_counter()
    for ev in events:
        publish("orders", ev)
    bus.flush()
    elapsed = time.perf_counter() - t
    bus.shutdown()
    bus.pool.close()
    return elapsed


def nova_bus_keyed(n: int) -> float:
    return _bus_run(n, "customer_id")


def nova_bus_unkeyed(n: int) -> float:
    return _bus_run(n, None)


# ---- drop-in replacements ---------------------------------------------------------------------


def compat_pyee_emit(n: int) -> float:
    return _emit_with("nova.compat.pyee", n)


def compat_blinker_send(n: int) -> float:
    return _send_with("nova.compat.blinker", n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = args.events
    rates = best_rates(
        [
            ("python-loop", python_loop, n),
            ("pyee-emit", pyee_emit, n),
            ("blinker-send", blinker_send, n),
            ("nova-emit(new Event)", nova_emit_new_event, n),
            ("queue-worker", queue_worker, n // 4),
            ("pyee-executor", pyee_executor, n // 20),
            ("nova-emit_async+flush", nova_emit_async, n),
            ("nova-bus-16(keyed)", nova_bus_keyed, n),
            ("nova-bus-16(no key)", nova_bus_unkeyed, n),
            ("compat-pyee-emit", compat_pyee_emit, n),
            ("compat-blinker-send", compat_blinker_send, n),
        ],
        args.rounds,
    )
    ratios = {
        "nova sync emit / pyee emit (target >= 3)": rates["nova-emit(new Event)"] / rates["pyee-emit"],
        "nova async / queue.Queue worker (target >= 8)": rates["nova-emit_async+flush"]
        / rates["queue-worker"],
        "nova async / pyee executor (target >= 25)": rates["nova-emit_async+flush"] / rates["pyee-executor"],
        "nova bus-16 keyed / queue.Queue worker (target >= 6)": rates["nova-bus-16(keyed)"]
        / rates["queue-worker"],
        "bus cost of a metadata key vs none (target <= 1.15)": rates["nova-bus-16(no key)"]
        / rates["nova-bus-16(keyed)"],
        "compat.pyee emit / pyee emit (target >= 2)": rates["compat-pyee-emit"] / rates["pyee-emit"],
        "compat.blinker send / blinker send (target >= 2)": rates["compat-blinker-send"]
        / rates["blinker-send"],
    }
    if args.json:
        print(json.dumps({"cores": os.cpu_count(), "rates": rates, "ratios": ratios}, indent=2))
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, {n} events")
    for name, r in rates.items():
        print(f"  {name:<28} {r:>14,.0f} events/s")
    for name, r in ratios.items():
        print(f"  {name:<56} {r:6.2f}x")


if __name__ == "__main__":
    main()
