"""A consumer process for the multi-process Redis tests.

Subscribes one listener to a topic of 16 partitions ordered by the metadata key ``key`` and
records every event it processes with ``RPUSH <record> "<worker>|<event id>|<key>|<n>"`` (one
list in Redis: the global processing order). Writes ``--ready`` once subscribed; on SIGTERM
shuts the bus down gracefully and exits 0.

``--trap-after N``: after N events, the next one writes ``--marker`` and hangs inside the
listener (before recording), so the test can SIGKILL this process mid-event.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import redis

import nova
from nova.backends.redis import RedisBackend


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--group", default="workers")
    ap.add_argument("--topic", default="orders")
    ap.add_argument("--mode", default="at_least_once")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--lease-ttl", type=float, default=2.0)
    ap.add_argument("--record", default="record")
    ap.add_argument("--name", default="worker")
    ap.add_argument("--sleep-ms", type=float, default=0.0)
    ap.add_argument("--trap-after", type=int, default=-1)
    ap.add_argument("--marker", default="")
    ap.add_argument("--ready", required=True)
    args = ap.parse_args()

    recorder = redis.Redis.from_url(args.url)
    backend = RedisBackend(args.url, group=args.group, consumer=args.name, lease_ttl=args.lease_ttl)
    bus = nova.Bus(backend=backend)
    bus.create_topic(
        args.topic, partitions=args.partitions, ordering_key="key", delivery_mode=nova.DeliveryMode(args.mode)
    )
    count = 0
    lock = threading.Lock()
    sleep = args.sleep_ms / 1000.0

    def handle(event: nova.Event) -> None:
        nonlocal count
        with lock:
            count += 1
            n = count
        if args.trap_after >= 0 and n > args.trap_after:
            Path(args.marker).write_text(event.id)
            while True:
                time.sleep(1)
        if sleep:
            time.sleep(sleep)
        recorder.rpush(args.record, f"{args.name}|{event.id}|{event.metadata['key']}|{event.data['n']}")

    bus.subscribe(args.topic, nova.Listener("record", handle))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Path(args.ready).write_text(str(os.getpid()))
    while not stop.is_set():
        stop.wait(0.1)
    report = bus.shutdown(10)
    print(
        f"{args.name}: processed {count}, shutdown {report.drained} drained, "
        f"{len(report.undelivered)} undelivered",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
