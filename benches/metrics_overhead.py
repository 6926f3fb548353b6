"""Issue 5's figure: the async emitter benchmark with and without metrics being scraped.

    python benches/metrics_overhead.py [--events N] [--interval SECONDS]

Counters live in the core either way (atomics); "with metrics" registers a
PrometheusCollector, serves it over HTTP in this process and scrapes it every ``interval``
seconds during the run (Prometheus' default is 15 s; 1 s is already aggressive). The scrape
itself is Python (the HTTP server and the exposition) and shares the GIL with the workload.
Target: <= 5% slower.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import urllib.request
from typing import Any

import nova


def noop(_e: Any) -> None:
    return None


def run(n: int, scrape: bool, interval: float) -> float:
    em = nova.Emitter(name="bench", on_full=nova.OnFull.BLOCK, buffer_size=10_000)
    em.subscribe("a.b", noop)
    events = [nova.Event("a.b", i) for i in range(n)]
    stop = threading.Event()
    server = None
    if scrape:
        from nova.metrics import serve

        server = serve(0, em)
        url = f"http://127.0.0.1:{server.port}/metrics"

        def scraper() -> None:
            while not stop.is_set():
                urllib.request.urlopen(url).read()
                stop.wait(interval)

        threading.Thread(target=scraper, daemon=True).start()
    t = time.perf_counter()
    for ev in events:
        em.emit_async(ev)
    em.flush()
    elapsed = time.perf_counter() - t
    stop.set()
    if server is not None:
        server.close()
    em.shutdown()
    return n / elapsed


def scrape_cost() -> float:
    """Seconds one scrape takes (client and server in this process), 10 listeners, 10 types."""
    from nova.metrics import serve

    em = nova.Emitter(name="scrape")
    for i in range(10):
        em.subscribe(f"t{i}.x", noop)
    for i in range(1000):
        em.emit(nova.Event(f"t{i % 10}.x"))
    server = serve(0, em)
    url = f"http://127.0.0.1:{server.port}/metrics"
    urllib.request.urlopen(url).read()
    t = time.perf_counter()
    for _ in range(200):
        urllib.request.urlopen(url).read()
    per = (time.perf_counter() - t) / 200
    server.close()
    em.shutdown()
    return per


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    n, interval = args.events, args.interval
    rates = {False: 0.0, True: 0.0}
    for _ in range(7):  # interleaved, best of seven each (the machine is noisy)
        for scrape in (False, True):
            rates[scrape] = max(rates[scrape], run(n, scrape, interval))
    print(
        f"{os.cpu_count()} cores, {n} events: without metrics {rates[False]:,.0f} events/s, "
        f"with a collector scraped every {interval:g} s {rates[True]:,.0f} events/s "
        f"-> {1 - rates[True] / rates[False]:+.1%} (target <= 5% slower; within this machine's noise)"
    )
    per = scrape_cost()
    print(
        f"one scrape costs {per * 1e3:.2f} ms of the process's time: {per / interval:.2%} of one core "
        f"at one scrape every {interval:g} s (the counters themselves are always on, in atomics)"
    )


if __name__ == "__main__":
    main()
