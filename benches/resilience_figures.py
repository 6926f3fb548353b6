"""Issue 4's figures, from one run.

    python benches/resilience_figures.py [--events N] [--rounds R]

1. A healthy subscriber's throughput on a bus, alone and beside a subscriber that fails every
   event and retries with 1 s delays (target: >= 90%).
2. A managed listener with the default ``ListenerConfig()`` (a 30 s timeout, 10 slots, three
   attempts; nothing failing) against a plain subscription, on an AT_MOST_ONCE bus topic with a
   no-op handler (target: <= 25% added). The same without a timeout is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import nova
from nova import Backoff, DeliveryMode, ListenerConfig, OnFull, RetryPolicy


def noop(_e: Any) -> None:
    return None


def run(n: int, *, failing: bool, managed: bool, timeout: float | None = 30.0) -> float:
    bus = nova.Bus(pool=nova.WorkerPool(4), name="bench")
    bus.create_topic(
        "t", partitions=4, delivery_mode=DeliveryMode.AT_MOST_ONCE, on_full=OnFull.BLOCK, buffer_size=10_000
    )
    done = [0]

    def healthy(_e: Any) -> None:
        done[0] += 1

    if managed:
        bus.subscribe("t", healthy, config=ListenerConfig(timeout=timeout))
    else:
        bus.subscribe("t", healthy)
    if failing:

        def always_fails(_e: Any) -> None:
            raise nova.RetryableError("down")

        bus.subscribe(
            "t",
            always_fails,
            config=ListenerConfig(
                timeout=None, retry=RetryPolicy(max_attempts=3, initial_delay=1.0, backoff=Backoff.FIXED)
            ),
        )
    events = [nova.Event("a.b", i) for i in range(n)]
    t = time.perf_counter()
    for ev in events:
        bus.publish("t", ev)
    while done[0] < n:
        time.sleep(0.0005)
    elapsed = time.perf_counter() - t
    bus.shutdown(timeout=0)
    bus.pool.close(0)
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.events
    # Interleaved rounds: the workloads of one round run back to back, so each round gives
    # its own ratios, and the median over rounds is quoted (a burst of load from a neighbour
    # then spoils one round's ratios rather than deciding them).
    workloads: dict[str, Any] = {
        "alone": dict(failing=False, managed=True),
        "beside": dict(failing=True, managed=True),
        "plain": dict(failing=False, managed=False),
        "untimed": dict(failing=False, managed=True, timeout=None),
    }
    rounds = [{name: run(n, **kwargs) for name, kwargs in workloads.items()} for _ in range(args.rounds)]
    best = {name: max(r[name] for r in rounds) for name in workloads}
    kept = statistics.median(r["beside"] / r["alone"] for r in rounds)
    added = statistics.median(r["plain"] / r["alone"] - 1 for r in rounds)
    added_untimed = statistics.median(r["plain"] / r["untimed"] - 1 for r in rounds)
    print(
        f"{os.cpu_count()} cores, {n} events, no-op handler, {args.rounds} rounds "
        "(best rates; ratios: median over rounds)"
    )
    print(f"  healthy subscriber alone:                      {best['alone']:12,.0f} events/s")
    print(
        f"  beside one failing every event (1 s retries):  {best['beside']:12,.0f} events/s"
        f"  -> {kept:.0%} kept (target >= 90%)"
    )
    print(f"  plain subscription:                            {best['plain']:12,.0f} events/s")
    print(
        f"  managed, ListenerConfig(), nothing failing:    {best['alone']:12,.0f} events/s"
        f"  -> {added:+.0%} time per event (target <= +25%)"
    )
    print(
        f"  managed, ListenerConfig(timeout=None):         {best['untimed']:12,.0f} events/s"
        f"  -> {added_untimed:+.0%} time per event"
    )


if __name__ == "__main__":
    main()
