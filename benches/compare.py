"""Nova beside its peers, in one process and one run, with a no-op handler.

    python benches/compare.py [--events N] [--json]

Prints events/s for each workload and the ratios the issues set as targets. Quote ratios from
one run only: the machines are shared and noisy, absolute numbers drift between runs.
"""

from __future__ import annotations

import argparse
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


def best_rate(fn: Callable[[int], float], n: int, repeat: int = 3) -> float:
    """Events/s of the fastest of `repeat` runs (each returns its elapsed seconds)."""
    best = min(fn(n) for _ in range(repeat))
    return n / best


# ---- synchronous dispatch -------------------------------------------------------------------

def python_loop(n: int) -> float:
    handlers = [noop]
    t = time.perf_counter()
    for i in range(n):
        for h in handlers:
            h(i)
    return time.perf_counter() - t


def pyee_emit(n: int) -> float:
    from pyee import EventEmitter

    ee = EventEmitter()
    ee.on("order.created", noop)
    emit = ee.emit
    t = time.perf_counter()
    for i in range(n):
        emit("order.created", i)
    return time.perf_counter() - t


def blinker_send(n: int) -> float:
    from blinker import Signal

    sig = Signal()
    sig.connect(noop)
    send = sig.send
    t = time.perf_counter()
    for i in range(n):
        send(i)
    return time.perf_counter() - t


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = args.events
    rates: dict[str, float] = {}
    for name, fn, count in [
        ("python-loop", python_loop, n),
        ("pyee-emit", pyee_emit, n),
        ("blinker-send", blinker_send, n),
        ("nova-emit(new Event)", nova_emit_new_event, n),
        ("queue-worker", queue_worker, n // 4),
        ("pyee-executor", pyee_executor, n // 20),
        ("nova-emit_async+flush", nova_emit_async, n),
    ]:
        rates[name] = best_rate(fn, count)
    ratios = {
        "nova sync emit / pyee emit (target >= 3)": rates["nova-emit(new Event)"] / rates["pyee-emit"],
        "nova async / queue.Queue worker (target >= 8)": rates["nova-emit_async+flush"] / rates["queue-worker"],
        "nova async / pyee executor (target >= 25)": rates["nova-emit_async+flush"] / rates["pyee-executor"],
    }
    if args.json:
        print(json.dumps({"cores": os.cpu_count(), "rates": rates, "ratios": ratios}, indent=2))
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, {n} events")
    for name, r in rates.items():
        print(f"  {name:<28} {r:>14,.0f} events/s")
    for name, r in ratios.items():
        print(f"  {name:<48} {r:6.2f}x")


if __name__ == "__main__":
    main()
