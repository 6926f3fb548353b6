"""The event store figures of issue 6, in one run:

1. MemoryStore append in batches of 100 (events/s)
2. SqliteStore append in batches of 100 (events/s), with synchronous=NORMAL (the default)
   and FULL
3. replay of 1,000,000 events from a SqliteStore: events/s and peak memory, measured twice:
   Python allocations during the replay (tracemalloc), and the peak RSS of a fresh process
   that only opens the store and replays it, against one that replays a tenth as much.

Events are made outside the timing: the figures are the store's cost, not the cost of
making events. Usage: ``python benches/store_figures.py [--events N] [--json]``
(``--events`` sets the replay size, default 1,000,000).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import nova
from nova.store import MemoryStore, SqliteStore

BATCH = 100


def make_batches(n_batches: int) -> list[tuple[nova.Event, ...]]:
    return [
        tuple(
            nova.Event("order.created", {"order_id": b * BATCH + i, "amount": 12.5, "sku": "SKU-123"})
            for i in range(BATCH)
        )
        for b in range(n_batches)
    ]


def memory_append(total: int) -> float:
    # 100,000 distinct events appended over and over: MemoryStore keeps references, so
    # reuse costs it nothing more or less than fresh events would.
    batches = make_batches(1000)
    store = MemoryStore(max_events_per_stream=total)
    gc.collect()
    start = time.perf_counter()
    done = 0
    while done < total:
        for i, batch in enumerate(batches):
            store.append("orders-%d" % (i % 10), *batch)
        done += len(batches) * BATCH
    elapsed = time.perf_counter() - start
    store.close()
    return done / elapsed


def sqlite_append(directory: Path, total: int, synchronous: str) -> float:
    # Each batch is made just before its append, outside the timing: the heap stays as an
    # application's would, instead of holding every event of the run at once.
    path = directory / f"append-{synchronous}.db"
    elapsed = 0.0
    with SqliteStore(path, synchronous=synchronous) as store:
        for i in range(total // BATCH):
            batch = make_batches(1)[0]
            start = time.perf_counter()
            store.append("orders-%d" % (i % 10), *batch)
            elapsed += time.perf_counter() - start
    return total // BATCH * BATCH / elapsed


def fill(path: Path, total: int) -> None:
    with SqliteStore(path) as store:
        for b in range(0, total, 1000):
            store.append(
                "orders-%d" % (b // 1000 % 10),
                *(
                    nova.Event("order.created", {"order_id": b + i, "amount": 12.5, "sku": "SKU-123"})
                    for i in range(min(1000, total - b))
                ),
            )


def replay_speed(path: Path) -> tuple[int, float]:
    with SqliteStore(path) as store:
        gc.collect()
        start = time.perf_counter()
        n = 0
        for _ in store.replay():
            n += 1
        return n, n / (time.perf_counter() - start)


def replay_traced(path: Path) -> tuple[int, int]:
    """(events, peak bytes of Python allocations while replaying)."""
    with SqliteStore(path) as store:
        gc.collect()
        tracemalloc.start()
        n = 0
        for _ in store.replay():
            n += 1
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return n, peak


CHILD = """
import resource, sys
from nova.store import SqliteStore
limit = int(sys.argv[2])
with SqliteStore(sys.argv[1]) as store:
    n = 0
    for _ in store.replay():
        n += 1
        if n == limit:
            break
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def replay_rss(path: Path, limit: int) -> tuple[int, int]:
    """(events, peak RSS in KiB) of a fresh process replaying ``limit`` events."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(limit)], check=True, capture_output=True, text=True
    ).stdout.split()
    return int(out[0]), int(out[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events to replay from SQLite (default 1,000,000)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "sqlite": __import__("sqlite3").sqlite_version,
    }
    say = (lambda *a: None) if args.json else print
    say(f"Python {results['python']}, SQLite {results['sqlite']}, {results['cores']} cores")

    results["memory_append_events_per_s"] = memory_append(2_000_000)
    say(
        f"MemoryStore append, batches of {BATCH}:         "
        f"{results['memory_append_events_per_s']:>12,.0f} events/s  (target >= 1,000,000)"
    )
    with tempfile.TemporaryDirectory(prefix="nova-store-figures-") as tmp:
        directory = Path(tmp)
        for sync in ("NORMAL", "FULL"):
            rate = sqlite_append(directory, 200_000, sync)
            results[f"sqlite_append_{sync.lower()}_events_per_s"] = rate
            say(
                f"SqliteStore append, batches of {BATCH} ({sync:6s}): {rate:>12,.0f} events/s"
                + ("  (target >= 50,000)" if sync == "NORMAL" else "")
            )

        path = directory / "replay.db"
        start = time.perf_counter()
        fill(path, args.events)
        say(
            f"(filled a store with {args.events:,} events in "
            f"{time.perf_counter() - start:.1f} s, {path.stat().st_size / 2**20:.0f} MiB)"
        )
        n, rate = replay_speed(path)
        assert n == args.events
        results["replay_events"] = n
        results["replay_events_per_s"] = rate
        say(f"SqliteStore replay of {n:,} events:      {rate:>12,.0f} events/s ({n / rate:.1f} s)")
        n, peak = replay_traced(path)
        results["replay_peak_python_bytes"] = peak
        say(f"  peak Python allocations during the replay: {peak / 2**20:.2f} MiB (tracemalloc)")
        tenth, rss_tenth = replay_rss(path, max(args.events // 10, 1))
        full, rss_full = replay_rss(path, args.events)
        results["replay_peak_rss_kib"] = {str(tenth): rss_tenth, str(full): rss_full}
        say(
            f"  peak RSS of a process replaying {tenth:,} events: {rss_tenth / 1024:.0f} MiB;"
            f" {full:,} events: {rss_full / 1024:.0f} MiB"
        )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
