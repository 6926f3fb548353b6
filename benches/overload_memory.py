"""Resident memory under sustained overload with OnFull.DROP_OLDEST.

    python benches/overload_memory.py [--seconds 10]

A producer emits as fast as it can into a small buffer whose listener is slow, for the given
time; resident memory (RSS) is sampled every second. Target (issue 2): flat within 20 MB.
"""

from __future__ import annotations

import argparse
import os
import time

import psutil

import nova


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    proc = psutil.Process()
    em = nova.Emitter(name="overload", buffer_size=1000, on_full=nova.OnFull.DROP_OLDEST)
    em.subscribe("load", lambda e: time.sleep(0.0001))
    samples: list[float] = []
    start = time.monotonic()
    next_sample = start + 1.0
    emitted = 0
    while time.monotonic() - start < args.seconds:
        for _ in range(1000):
            em.emit_async(nova.Event("load", {"payload": "x" * 100}))
        emitted += 1000
        if time.monotonic() >= next_sample:
            samples.append(proc.memory_info().rss / 2**20)
            next_sample += 1.0
    stats = em.stats()
    em.shutdown(timeout=1)
    growth = max(samples[1:]) - samples[1] if len(samples) > 1 else 0.0
    print(
        f"{os.cpu_count()} cores, {args.seconds:.0f}s overload: emitted {emitted}, "
        f"processed {stats.events_processed}, dropped {stats.dropped_events}"
    )
    print("RSS MB per second: " + ", ".join(f"{s:.1f}" for s in samples))
    print(f"growth after the first second: {growth:.1f} MB (target: within 20 MB)")


if __name__ == "__main__":
    main()
