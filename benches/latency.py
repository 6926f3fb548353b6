"""p50/p99 latency from ``emit_async`` to the listener starting, at a steady rate.

    python benches/latency.py [--rate 10000] [--seconds 3]

The producer paces itself to the rate (sleeping between small bursts, as a service would);
each event carries its emit time and the listener records the delay. Target (issue 2): p99
<= 250 microseconds at 10,000 events/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import nova


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    delays: list[float] = []
    clock = time.perf_counter
    em = nova.Emitter(name="latency", buffer_size=10_000)
    em.subscribe("tick", lambda e: delays.append(clock() - e.data))
    # Bursts once a millisecond (rate/1000 events each), sleeping in between: a busy-waiting
    # producer would hold the GIL and measure Python's 5 ms switch interval instead of Nova.
    per_ms = max(1, args.rate // 1000)
    start = clock()
    for ms in range(int(args.seconds * 1000)):
        due = start + ms / 1000
        now = clock()
        if due > now:
            time.sleep(due - now)
        for _ in range(per_ms):
            em.emit_async(nova.Event("tick", clock()))
    em.flush()
    em.shutdown()
    warm = sorted(delays[len(delays) // 10 :])  # skip warm-up
    p50 = statistics.median(warm) * 1e6
    p99 = warm[int(len(warm) * 0.99)] * 1e6
    print(
        f"{os.cpu_count()} cores, {args.rate} events/s for {args.seconds}s: "
        f"p50 {p50:.0f} us, p99 {p99:.0f} us, max {warm[-1] * 1e6:.0f} us (target p99 <= 250 us)"
    )


if __name__ == "__main__":
    main()
