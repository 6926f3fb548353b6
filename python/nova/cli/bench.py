"""``nova bench``: throughput and p50/p99 latency of Nova's workloads beside a plain Python
loop, a ``queue.Queue`` worker and (where installed) pyee and blinker. The workloads
themselves are in :mod:`nova.cli._workloads`."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import _workloads as w
from ._common import Progress, percentile, positive_int, table

__all__ = [
    "BENCH_NAMES",
    "DEFAULT_BENCH_EVENTS",
    "BenchResult",
    "run_bench",
    "add_parser",
    "run",
]

#: The workload names of ``nova bench``, in the order they are reported.
BENCH_NAMES = (
    "emitter-sync",
    "emitter-async",
    "bus-16",
    "store-memory",
    "store-sqlite",
    "python-loop",
    "queue-worker",
    "pyee",
    "blinker",
)
DEFAULT_BENCH_EVENTS = 200_000


def add_parser(sub: Any) -> None:
    """Add ``nova bench`` and its options to the subcommands of the ``nova`` parser."""
    parser = sub.add_parser(
        "bench",
        help="throughput and latency of the built-in workloads beside plain Python and peers",
        description="Throughput and p50/p99 latency of sync emit, async emit, a 16-partition bus and "
        "store appends, beside a plain Python loop, a queue.Queue worker and (where "
        "installed) pyee and blinker.",
    )
    parser.add_argument(
        "--events",
        type=positive_int,
        default=DEFAULT_BENCH_EVENTS,
        metavar="N",
        help=f"events per workload (default {DEFAULT_BENCH_EVENTS:,})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object for machines")


@dataclass(frozen=True)
class BenchResult:
    name: str
    events_per_s: float
    p50_us: float | None
    p99_us: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "events_per_s": self.events_per_s,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
        }


def _p50_p99_us(samples: list[float] | None) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    s = sorted(samples)
    return round(percentile(s, 0.50) * 1e6, 2), round(percentile(s, 0.99) * 1e6, 2)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def run_bench(n: int, *, repeat: int = 3, progress: bool = True) -> list[BenchResult]:
    """Run every workload (pyee and blinker only where installed); events/s is the best of
    ``repeat`` runs."""
    sample = min(n, 20_000)  # per-call timings
    paced = min(n, 2_000)  # emit -> listener delays at a steady rate
    plan: list[tuple[str, Callable[[int], float], int, Callable[[], list[float]] | None]] = [
        ("emitter-sync", w.emitter_sync, n, partial(w.emitter_sync_latency, sample)),
        ("emitter-async", w.emitter_async, n, partial(w.emitter_async_latency, paced)),
        ("bus-16", w.bus_16, n, partial(w.bus_16_latency, paced)),
        ("store-memory", w.store_memory, n, partial(w.store_memory_latency, sample)),
        (
            "store-sqlite",
            w.store_sqlite,
            max(1, n // 20),
            partial(w.store_sqlite_latency, min(sample, 2_000)),
        ),
        ("python-loop", w.python_loop, n, None),
        ("queue-worker", w.queue_worker, max(1, n // 4), partial(w.queue_worker_latency, paced)),
    ]
    if _installed("pyee"):
        plan.append(("pyee", w.pyee_emit, n, partial(w.pyee_latency, sample)))
    if _installed("blinker"):
        plan.append(("blinker", w.blinker_send, n, partial(w.blinker_latency, sample)))
    results = []
    with Progress("nova bench", len(plan), enabled=progress) as bar:
        for name, run_once, count, latency in plan:
            bar.step(name)
            gc.collect()
            best = min(run_once(count) for _ in range(repeat))
            rate = count / best if best > 0 else float("inf")
            p50, p99 = _p50_p99_us(latency() if latency is not None else None)
            results.append(BenchResult(name, round(rate, 1), p50, p99))
            bar.advance()
    return results


def run(args: argparse.Namespace) -> int:
    """``nova bench`` with its parsed arguments; returns the exit status."""
    stderr_tty = sys.stderr.isatty()
    results = run_bench(args.events, progress=(not args.json) or stderr_tty)
    if args.json:
        doc = {
            "python": platform.python_version(),
            "cores": os.cpu_count() or 1,
            "results": [r.as_dict() for r in results],
        }
        print(json.dumps(doc, indent=2))
        return 0

    def us(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}"

    rows = [[r.name, f"{r.events_per_s:,.0f}", us(r.p50_us), us(r.p99_us)] for r in results]
    table(
        f"nova bench: Python {platform.python_version()}, {os.cpu_count()} cores, {args.events:,} events",
        ["workload", "events/s", "p50 µs", "p99 µs"],
        rows,
        sys.stdout,
    )
    print(
        "events/s: best of 3 runs with a no-op listener; latency: emit call (sync, stores, "
        "pyee, blinker) or emit to listener start at 10,000 events/s (async, bus, queue); "
        "see docs/benchmarks.md"
    )
    return 0
