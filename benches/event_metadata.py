"""What metadata costs an event: ``Event(type, i, metadata=...)`` against ``Event(type, i)``, in
one process, interleaved rounds, each keeping its fastest run.

    python benches/event_metadata.py [--events N] [--runs R]

Two metadata rows: the dict made once before the loop (the event's own cost), and a dict literal
in the loop (what a publisher usually writes, the literal's own cost included).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import nova


def timed(n: int, make: Callable[[int], None]) -> float:
    start = time.perf_counter()
    make(n)
    return time.perf_counter() - start


def plain(n: int) -> None:
    event = nova.Event
    for i in range(n):
        event("order.created", i)


def with_dict(n: int) -> None:
    event, metadata = nova.Event, {"customer_id": "cust-1"}
    for i in range(n):
        event("order.created", i, metadata=metadata)


def with_literal(n: int) -> None:
    event = nova.Event
    for i in range(n):
        event("order.created", i, metadata={"customer_id": "cust-1"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.events
    ratios: list[tuple[float, float]] = []
    costs: list[tuple[float, float, float]] = []
    for _ in range(args.runs):
        a = min(timed(n, plain) for _ in range(3))
        b = min(timed(n, with_dict) for _ in range(3))
        c = min(timed(n, with_literal) for _ in range(3))
        ratios.append((b / a, c / a))
        costs.append((a / n * 1e9, b / n * 1e9, c / n * 1e9))
    for label, k in (("dict made before the loop", 0), ("dict literal in the loop", 1)):
        xs = [r[k] for r in ratios]
        print(
            f"with metadata ({label}) / without: {statistics.median(xs):.2f}x ({min(xs):.2f}x to {max(xs):.2f}x)"
        )
    ns = [statistics.median(c[k] for c in costs) for k in range(3)]
    print(f"ns per event (loop included): without {ns[0]:.0f}, dict before {ns[1]:.0f}, literal {ns[2]:.0f}")


if __name__ == "__main__":
    main()
