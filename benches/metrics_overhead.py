"""Issue 5's figure: the async emitter benchmark with and without metrics being scraped.

    python benches/metrics_overhead.py [--events N]

Counters live in the core either way (atomics); "with metrics" registers a
PrometheusCollector, serves it over HTTP and scrapes it every 100 ms during the run.
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


def run(n: int, scrape: bool) -> float:
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
                stop.wait(0.1)

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    n = ap.parse_args().events
    rates = {False: 0.0, True: 0.0}
    for _ in range(3):  # interleaved, best of three each
        for scrape in (False, True):
            rates[scrape] = max(rates[scrape], run(n, scrape))
    print(f"{os.cpu_count()} cores, {n} events: without metrics {rates[False]:,.0f} events/s, "
          f"with a collector scraped every 100 ms {rates[True]:,.0f} events/s "
          f"-> {1 - rates[True] / rates[False]:+.1%} (target <= 5% slower)")


if __name__ == "__main__":
    main()
