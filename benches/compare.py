"""Nova beside its peers, in one process and one run, with a no-op handler.

    python benches/compare.py [--events N] [--rounds R] [--json]

Prints events/s for each workload and the ratios the issues set as targets. Quote ratios from
one run only: the machines are shared and noisy, absolute numbers drift between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from functools import partial

# The workloads are the ones `nova bench` runs, written once in the package.
from nova.cli import _workloads as w


def best_rates(workloads: list[tuple[str, Callable[[int], float], int]], rounds: int) -> dict[str, float]:
    """Events/s of each workload's fastest run (each returns its elapsed seconds). The rounds
    go through every workload in turn, so a burst of load from a neighbour slows one run of
    each rather than every run of one: the ratios are what this protects."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, fn, count in workloads:
            best[name] = min(best.get(name, float("inf")), fn(count))
    return {name: count / best[name] for name, _fn, count in workloads}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = args.events
    # The headline rows time what users write: each event built inside the loop, the
    # components' defaults (queues with OnFull.BLOCK, which a loop that never waits needs).
    # Rows marked [...] change something else, and say what.
    rates = best_rates(
        [
            ("python-loop", w.python_loop, n),
            ("pyee-emit", w.pyee_emit, n),
            ("blinker-send", w.blinker_send, n),
            ("nova-emit(new Event)", w.emitter_sync, n),
            ("queue-worker", w.queue_worker, n // 4),
            ("pyee-executor", w.pyee_executor, n // 20),
            ("nova-emit_async+flush", w.emitter_async, n),
            ("nova-bus-16(keyed)", w.bus_16, n),
            ("nova-bus-16(keyed)+MemoryStore", partial(w.bus_16_stored, kind="memory"), n // 4),
            ("nova-bus-16(keyed)+SqliteStore", partial(w.bus_16_stored, kind="sqlite"), n // 4),
            ("[AT_MOST_ONCE] nova-bus-16(keyed)", partial(w.bus_16, at_most_once=True), n),
            (
                "[prebuilt, buffer 10k] nova-emit_async+flush",
                partial(w.emitter_async, prebuilt=True, buffer_size=10_000),
                n,
            ),
            (
                "[AT_MOST_ONCE, prebuilt, buffer 10k] nova-bus-16(keyed)",
                partial(w.bus_16, at_most_once=True, prebuilt=True, buffer_size=10_000),
                n,
            ),
            (
                "[AT_MOST_ONCE, prebuilt, buffer 10k] nova-bus-16(no key)",
                partial(w.bus_16, ordering_key=None, at_most_once=True, prebuilt=True, buffer_size=10_000),
                n,
            ),
            ("[floor: no dispatcher] handler(slice(type, i))", w.floor_sync, n),
            ("[floor: no dispatcher] handler(slice(type, i, {key}))", w.floor_keyed, n),
            ("compat-pyee-emit", partial(w.pyee_emit, module="nova.compat.pyee"), n),
            ("compat-blinker-send", partial(w.blinker_send, module="nova.compat.blinker"), n),
        ],
        args.rounds,
    )
    amo = "[AT_MOST_ONCE, prebuilt, buffer 10k] nova-bus-16"
    floor = "[floor: no dispatcher] handler(slice(type, i))"
    floor_keyed = "[floor: no dispatcher] handler(slice(type, i, {key}))"
    ratios = {
        "nova sync emit / pyee emit (target >= 5)": rates["nova-emit(new Event)"] / rates["pyee-emit"],
        "nova sync emit / python loop (target >= 0.3)": rates["nova-emit(new Event)"] / rates["python-loop"],
        "nova emit_async+flush / queue.Queue worker (target >= 12)": rates["nova-emit_async+flush"]
        / rates["queue-worker"],
        "nova async / pyee executor (target >= 25)": rates["nova-emit_async+flush"] / rates["pyee-executor"],
        "nova bus-16 keyed, default / queue.Queue worker (target >= 6)": rates["nova-bus-16(keyed)"]
        / rates["queue-worker"],
        "bus managed (default) / AT_MOST_ONCE subscriber (target >= 0.9)": rates["nova-bus-16(keyed)"]
        / rates["[AT_MOST_ONCE] nova-bus-16(keyed)"],
        "bus + MemoryStore / bus (target >= 0.8)": rates["nova-bus-16(keyed)+MemoryStore"]
        / rates["nova-bus-16(keyed)"],
        "bus + SqliteStore, events/s (target >= 100k)": rates["nova-bus-16(keyed)+SqliteStore"],
        "bus cost of a metadata key vs none (target <= 1.15)": rates[f"{amo}(no key)"]
        / rates[f"{amo}(keyed)"],
        # What no dispatcher can pass on this interpreter and machine (see floor_sync): the
        # ceiling of the three ratios above whose targets are >= 5, >= 12 and >= 6.
        "[floor] no dispatcher / pyee emit (ceiling of sync emit / pyee)": rates[floor] / rates["pyee-emit"],
        "[floor] no dispatcher / queue.Queue worker (ceiling of emit_async / queue)": rates[floor]
        / rates["queue-worker"],
        "[floor] keyed, no dispatcher / queue.Queue worker (ceiling of bus / queue)": rates[floor_keyed]
        / rates["queue-worker"],
        "compat.pyee emit / pyee emit (target >= 2)": rates["compat-pyee-emit"] / rates["pyee-emit"],
        "compat.blinker send / blinker send (target >= 2)": rates["compat-blinker-send"]
        / rates["blinker-send"],
    }
    if args.json:
        print(json.dumps({"cores": os.cpu_count(), "rates": rates, "ratios": ratios}, indent=2))
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, {n} events")
    for name, r in rates.items():
        print(f"  {name:<56} {r:>14,.0f} events/s")
    for name, r in ratios.items():
        print(f"  {name:<64} {r:12,.2f}" + ("" if "events/s" in name else "x"))


if __name__ == "__main__":
    main()
