"""asyncio workloads: Nova beside pyee's AsyncIOEventEmitter and an asyncio.Queue consumer
task, in one process, each event built inside the timed loop.

    python benches/asyncio_figures.py [--rounds R] [--json]

Workloads (all on the loop `asyncio.run` makes; Nova's emitter is made inside it, the default
configuration, so its async listeners run on that loop):
- io:    200 events, a listener that awaits 50 ms of I/O; seconds until all are done.
- noop:  50,000 events to a no-op async listener, emitted from the loop (a yield every 500
         events, as a handler emitting a few events per request would); events/s until all
         are done. `await em.aemit(event)` in a loop is its own row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

import nova

N_NOOP = 50_000
N_IO = 200


async def _until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0)


async def io_pyee() -> float:
    from pyee.asyncio import AsyncIOEventEmitter

    ee = AsyncIOEventEmitter()
    done = 0

    async def io(event: Any) -> None:
        nonlocal done
        await asyncio.sleep(0.05)
        done += 1

    ee.on("x", io)
    t = time.perf_counter()
    for i in range(N_IO):
        ee.emit("x", nova.Event("x", i))
    await _until(lambda: done == N_IO)
    return time.perf_counter() - t


async def io_nova() -> float:
    em = nova.Emitter()
    done = 0

    async def io(event: Any) -> None:
        nonlocal done
        await asyncio.sleep(0.05)
        done += 1

    em.subscribe("x", io)
    t = time.perf_counter()
    for i in range(N_IO):
        em.emit_async(nova.Event("x", i))
    await _until(lambda: done == N_IO)
    took = time.perf_counter() - t
    await _until(lambda: em.stats().events_processed == N_IO)
    em.shutdown(5)
    return took


async def noop_pyee() -> float:
    from pyee.asyncio import AsyncIOEventEmitter

    ee = AsyncIOEventEmitter()
    n = 0

    async def noop(event: Any) -> None:
        nonlocal n
        n += 1

    ee.on("y", noop)
    t = time.perf_counter()
    for i in range(N_NOOP):
        ee.emit("y", nova.Event("y", i))
        if i % 500 == 499:
            await asyncio.sleep(0)
    await _until(lambda: n == N_NOOP)
    return N_NOOP / (time.perf_counter() - t)


async def noop_nova(awaited: bool = False) -> float:
    """`emit_async` in a loop (a yield every 500 events), or `await aemit` per event."""
    em = nova.Emitter()
    n = 0

    async def noop(event: Any) -> None:
        nonlocal n
        n += 1

    em.subscribe("y", noop)
    t = time.perf_counter()
    for i in range(N_NOOP):
        if awaited:
            await em.aemit(nova.Event("y", i))
            continue
        em.emit_async(nova.Event("y", i))
        if i % 500 == 499:
            await asyncio.sleep(0)
    await _until(lambda: n == N_NOOP)
    rate = N_NOOP / (time.perf_counter() - t)
    await _until(lambda: em.stats().events_processed == N_NOOP)
    em.shutdown(5)
    return rate


async def noop_queue() -> float:
    q: asyncio.Queue[Any] = asyncio.Queue()
    n = 0

    async def consumer() -> None:
        nonlocal n
        while True:
            await q.get()
            n += 1

    task = asyncio.create_task(consumer())
    t = time.perf_counter()
    for i in range(N_NOOP):
        q.put_nowait(nova.Event("y", i))
        if i % 500 == 499:
            await asyncio.sleep(0)
    await _until(lambda: n == N_NOOP)
    rate = N_NOOP / (time.perf_counter() - t)
    task.cancel()
    return rate


async def one_round() -> dict[str, float]:
    return {
        "io-pyee (s)": await io_pyee(),
        "io-nova (s)": await io_nova(),
        "noop-pyee-emit (ev/s)": await noop_pyee(),
        "noop-nova-emit_async (ev/s)": await noop_nova(),
        "noop-nova-await-aemit (ev/s)": await noop_nova(awaited=True),
        "noop-asyncio.Queue-consumer (ev/s)": await noop_queue(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds = [asyncio.run(one_round()) for _ in range(args.rounds)]
    best = {k: (min if k.endswith("(s)") else max)(r[k] for r in rounds) for k in rounds[0]}
    ratios = {
        "nova emit_async / pyee emit, no-op async listener (target >= 2)": best["noop-nova-emit_async (ev/s)"]
        / best["noop-pyee-emit (ev/s)"],
        "nova await aemit / pyee emit, no-op async listener (target >= 1)": best[
            "noop-nova-await-aemit (ev/s)"
        ]
        / best["noop-pyee-emit (ev/s)"],
        "nova emit_async / asyncio.Queue consumer, no-op": best["noop-nova-emit_async (ev/s)"]
        / best["noop-asyncio.Queue-consumer (ev/s)"],
    }
    if args.json:
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "cores": os.cpu_count(),
                    "best": best,
                    "ratios": ratios,
                    "median_io_nova": statistics.median(r["io-nova (s)"] for r in rounds),
                },
                indent=2,
            )
        )
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, best of {args.rounds} rounds")
    for k, v in best.items():
        print(f"  {k:40s} {v:12,.3f}" if k.endswith("(s)") else f"  {k:40s} {v:12,.0f}")
    for k, v in ratios.items():
        print(f"  {k:66s} {v:5.2f}x")


if __name__ == "__main__":
    main()
