"""Listeners in parallel: a CPU-bound listener (about 50 microseconds of pure-Python work per
event) on the bus, 16 partitions keyed by customer, with 1 worker and with 2; beside it the same
work through a ``ThreadPoolExecutor(2)`` and through two ``queue.Queue`` worker threads, and on
the caller's thread alone. All in one process, rounds interleaved.

    python benches/free_threaded.py [--events 4000] [--rounds 3] [--json]

On free-threaded CPython (3.13t, the GIL off) two workers run two partitions' listeners at once:
the figure to read is "bus, 2 workers" over "bus, 1 worker" (target >= 1.8x on 2 cores). With a
GIL the same run shows about 1x: the listeners take turns. Events are built in the loop with
the defaults (AT_LEAST_ONCE); each Nova row checks that every customer's events reached the
listener in publish order and that none was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import nova

clock = time.perf_counter
CUSTOMERS = [f"c{i}" for i in range(64)]
WORK_US = 50.0


def spin(k: int) -> int:
    """Pure-Python work: no allocation to speak of, nothing that releases the GIL."""
    x = 0
    for i in range(k):
        x = (x + i * i) & 0xFFFF
    return x


def calibrate() -> int:
    """The loop count of `spin` that takes WORK_US on this thread."""
    k = 200
    while True:
        t = clock()
        for _ in range(200):
            spin(k)
        per_call = (clock() - t) / 200
        if per_call > 20e-6:
            return max(1, round(k * WORK_US * 1e-6 / per_call))
        k *= 2


class Recorder:
    """The listener: the work, then the event's sequence number under its customer. Each
    customer's list is appended by one worker at a time (its partition's), so no lock."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.seen: dict[str, list[int]] = {c: [] for c in CUSTOMERS}

    def __call__(self, event: nova.Event) -> None:
        spin(self.k)
        self.seen[event.metadata["customer_id"]].append(event.data)

    def check(self, n: int) -> None:
        got = sum(len(v) for v in self.seen.values())
        assert got == n, f"{n - got} of {n} events not delivered"
        for customer, seqs in self.seen.items():
            assert seqs == sorted(seqs), f"customer {customer}: events out of order"


def bus(workers: int) -> Callable[[int, int], float]:
    def run(n: int, k: int) -> float:
        rec = Recorder(k)
        pool = nova.WorkerPool(workers, name=f"ft-bus-{workers}")
        b = nova.Bus(pool=pool, name=f"ft-bus-{workers}")
        b.create_topic("orders", partitions=16, ordering_key="customer_id", on_full=nova.OnFull.BLOCK)
        b.subscribe("orders", rec)
        publish, event = b.publish, nova.Event
        t = clock()
        for i in range(n):
            publish("orders", event("order.created", i, metadata={"customer_id": CUSTOMERS[i % 64]}))
        b.flush()
        elapsed = clock() - t
        b.shutdown()
        pool.close()
        rec.check(n)
        return elapsed

    return run


def thread_pool(n: int, k: int) -> float:
    with ThreadPoolExecutor(2) as ex:
        t = clock()
        futures = [ex.submit(spin, k) for _ in range(n)]
        for f in futures:
            f.result()
        return clock() - t


def queue_workers(n: int, k: int) -> float:
    q: queue.Queue[int | None] = queue.Queue(maxsize=1000)

    def work() -> None:
        while q.get() is not None:
            spin(k)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    t = clock()
    for i in range(n):
        q.put(i)
    for _ in threads:
        q.put(None)
    for th in threads:
        th.join()
    return clock() - t


def one_thread(n: int, k: int) -> float:
    t = clock()
    for _ in range(n):
        spin(k)
    return clock() - t


ROWS: dict[str, Callable[[int, int], float]] = {
    "bus, 1 worker": bus(1),
    "bus, 2 workers": bus(2),
    "ThreadPoolExecutor(2)": thread_pool,
    "2 queue.Queue worker threads": queue_workers,
    "one thread, no library": one_thread,
}


def gil_enabled() -> bool:
    return bool(getattr(sys, "_is_gil_enabled", lambda: True)())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    k = calibrate()
    results: dict[str, list[float]] = {name: [] for name in ROWS}
    for _ in range(args.rounds):
        for name, row in ROWS.items():
            results[name].append(args.events / row(args.events, k))
    median = {name: statistics.median(v) for name, v in results.items()}
    info = {
        "python": platform.python_version(),
        "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "gil": gil_enabled(),
        "cores": os.cpu_count(),
        "events": args.events,
        "rounds": args.rounds,
        "work_us": WORK_US,
    }
    scaling = [two / one for one, two in zip(results["bus, 1 worker"], results["bus, 2 workers"])]
    if args.json:
        print(json.dumps({**info, "events_per_s": results, "scaling": scaling}))
        return
    print(
        f"CPython {info['python']}{'t' if info['free_threaded'] else ''}, GIL {'on' if info['gil'] else 'off'}, "
        f"{info['cores']} cores; {args.events} events of ~{WORK_US:.0f} us each, median of {args.rounds}"
    )
    for name, value in median.items():
        spread = f"{min(results[name]):,.0f}-{max(results[name]):,.0f}"
        print(f"  {name:<30} {value:>9,.0f} ev/s  ({spread})")
    print(
        f"  bus, 2 workers / 1 worker: {statistics.median(scaling):.2f}x "
        f"({min(scaling):.2f}-{max(scaling):.2f}); per-key order checked"
    )


if __name__ == "__main__":
    main()
