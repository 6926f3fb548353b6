"""Figures of the Redis backend on loopback (one run).

    .venv/bin/python benches/redis_figures.py [--events 100000] [--json]

Starts its own redis-server (Debian's package) on a free loopback port, then measures:

- ``publish-pipelined``: ``publish_batch`` of 1,000 events at a time (one MULTI pipeline of
  server-side XADD loops per batch) to a topic of 16 partitions ordered by a metadata key;
- ``publish-single``: ``publish`` one event at a time (one round trip each);
- ``end-to-end``: the same pipelined publishing while ONE consumer process (this script with
  ``--consumer``) consumes with a no-op listener under the default ``ListenerConfig()``; from
  the first publish until every entry is acknowledged.

Targets (issue 7): pipelined publish >= 50,000 events/s, end-to-end >= 20,000 events/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

import nova
from nova.backends.redis import RedisBackend

TOPIC = "bench"
PARTITIONS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.01)
    client.close()
    return proc, url


def make_events(n: int) -> list[nova.Event]:
    return [
        nova.Event("order.created", {"order": i, "amount": 12.5}, metadata={"customer": f"c{i % 1000}"})
        for i in range(n)
    ]


def new_bus(url: str, group: str) -> nova.Bus:
    bus = nova.Bus(backend=RedisBackend(url, group=group))
    bus.create_topic(TOPIC, partitions=PARTITIONS, ordering_key="customer")
    return bus


def publish_pipelined(bus: nova.Bus, events: list[nova.Event], batch: int = 1000) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(events), batch):
        bus.publish_batch(TOPIC, events[i : i + batch])
    return time.perf_counter() - t0


def consumer(url: str, ready: str) -> int:
    bus = new_bus(url, "bench")
    count = 0
    lock = threading.Lock()

    def handle(event: nova.Event) -> None:
        nonlocal count
        with lock:
            count += 1

    bus.subscribe(TOPIC, nova.Listener("noop", handle))
    Path(ready).write_text(str(os.getpid()))
    try:
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        bus.shutdown(10)
        print(count, flush=True)
    return 0


def backlog(client: redis.Redis) -> int:
    pipe = client.pipeline(transaction=False)
    for p in range(PARTITIONS):
        pipe.xinfo_groups(f"nova:{TOPIC}:{p}")
    total = 0
    for groups in pipe.execute():
        for g in groups:
            total += int(g["pending"]) + int(g["lag"] or 0)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--consumer", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.consumer:
        return consumer(args.consumer, args.ready)

    n = args.events
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="nova-bench-redis-") as tmp:
        server, url = start_server(tmp)
        try:
            client = redis.Redis.from_url(url)
            # 1. Pipelined publish, nobody consuming.
            bus = new_bus(url, "publisher")
            publish_pipelined(bus, make_events(2000))  # warm up (script load, connections)
            events = make_events(n)
            dt = publish_pipelined(bus, events)
            results.append({"name": "publish-pipelined", "events": n, "seconds": dt, "events_per_s": n / dt})
            # 2. One publish per event.
            few = make_events(max(1, n // 10))
            t0 = time.perf_counter()
            for e in few:
                bus.publish(TOPIC, e)
            dt = time.perf_counter() - t0
            results.append(
                {"name": "publish-single", "events": len(few), "seconds": dt, "events_per_s": len(few) / dt}
            )
            bus.shutdown(5)
            client.flushall()
            # 3. End to end with one consumer process.
            ready = Path(tmp) / "consumer.ready"
            proc = subprocess.Popen(
                [sys.executable, __file__, "--consumer", url, "--ready", str(ready)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            while not ready.exists():
                if proc.poll() is not None:
                    sys.exit("the consumer process failed to start")
                time.sleep(0.01)
            bus = new_bus(url, "publisher")
            while len(client.keys(f"nova:{TOPIC}:*:lease:*")) < PARTITIONS:
                time.sleep(0.01)
            events = make_events(n)
            t0 = time.perf_counter()
            publish_pipelined(bus, events)
            t_pub = time.perf_counter() - t0
            while backlog(client) > 0:
                time.sleep(0.005)
            dt = time.perf_counter() - t0
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            consumed = int(proc.stdout.read().strip() or 0)
            proc.wait(30)
            bus.shutdown(5)
            results.append(
                {
                    "name": "end-to-end-1-consumer",
                    "events": n,
                    "seconds": dt,
                    "events_per_s": n / dt,
                    "publish_seconds": t_pub,
                    "consumed": consumed,
                }
            )
            client.close()
        finally:
            server.terminate()
            server.wait(10)
    cores = os.cpu_count() or 1
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "cores": cores, "results": results}))
    else:
        print(
            f"Redis backend on loopback, {cores} cores, Python {sys.version.split()[0]}, "
            f"redis-py {redis.__version__}"
        )
        for r in results:
            print(
                f"  {r['name']:<24} {r['events_per_s']:>10,.0f} events/s  ({r['events']:,} events "
                f"in {r['seconds']:.2f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
