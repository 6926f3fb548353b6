"""The event codec (``nova._codec``) with orjson against the standard library's json, on the
paths that use it: the store's encode/decode and the Redis serializer's dumps/loads (per
event), and SqliteStore append (batches of 100) and replay throughput.

Usage:
  python benches/codec.py                  # one run with what is installed (orjson if it is)
  python benches/codec.py --backend json   # one run with orjson hidden
  python benches/codec.py --compare        # json and orjson, --runs runs each (3), in fresh
                                           # processes: median, spread and ratios
  python benches/codec.py --compare --baseline DIR
      # and an older tree first: DIR holds a ``nova`` package (an older python/nova with a
      # built _core module copied in), put first on PYTHONPATH

Events: "small" ``{"order_id": i, "amount": 12.5, "sku": "SKU-123"}`` (the store figures'
event) and "typical" (nested customer and items, a None, non-ASCII text, two metadata pairs).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

N_EVENTS = 2000  # events per micro-benchmark pass
STORE_EVENTS = 20_000


def make_events(kind: str, n: int) -> list[Any]:
    import nova

    if kind == "small":
        return [
            nova.Event("order.created", {"order_id": i, "amount": 12.5, "sku": "SKU-123"}) for i in range(n)
        ]
    return [
        nova.Event(
            "order.created",
            {
                "order_id": f"o-{i}",
                "customer": {"id": i, "name": "Zoë Müller", "tier": "gold"},
                "items": [
                    {"sku": "SKU-1", "qty": 2, "price": 9.99},
                    {"sku": "SKU-2", "qty": 1, "price": 24.5},
                ],
                "total": 44.48,
                "coupon": None,
                "paid": True,
            },
            metadata={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "source": "checkout"},
        )
        for i in range(n)
    ]


def per_event(fn: Any, items: list[Any], repeat: int = 5) -> float:
    """Best microseconds per item of ``fn`` over ``items``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def store_throughput(kind: str) -> tuple[float, float]:
    """(append, replay) events/s of a SqliteStore file: batches of 100, best of 3."""
    from nova.store import SqliteStore

    events = make_events(kind, STORE_EVENTS)
    batches = [tuple(events[i : i + 100]) for i in range(0, len(events), 100)]
    append = replay = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(3):
            store = SqliteStore(Path(folder) / f"s{attempt}.db")
            gc.collect()
            start = time.perf_counter()
            for batch in batches:
                store.append("orders", *batch)
            append = max(append, len(events) / (time.perf_counter() - start))
            start = time.perf_counter()
            n = sum(1 for _ in store.replay())
            replay = max(replay, n / (time.perf_counter() - start))
            store.close()
    return append, replay


def one_run() -> dict[str, Any]:
    import nova
    from nova.backends.redis import JsonSerializer
    from nova.store._codec import decode, encode

    try:
        from nova._codec import backend

        name = backend()
    except ImportError:
        name = "today"
    serializer = JsonSerializer()
    results: dict[str, float] = {}
    for kind in ("small", "typical"):
        events = make_events(kind, N_EVENTS)
        texts = [encode(e)[1] for e in events]
        wire = [serializer.dumps(e) for e in events]
        wire_bytes = [w.encode() if isinstance(w, str) else bytes(w) for w in wire]
        assert [decode(t) for t in texts] == events
        assert [serializer.loads(w) for w in wire_bytes] == events
        results[f"{kind} store encode us"] = per_event(encode, events)
        results[f"{kind} store decode us"] = per_event(decode, texts)
        results[f"{kind} redis dumps us"] = per_event(serializer.dumps, events)
        results[f"{kind} redis loads us"] = per_event(serializer.loads, wire_bytes)
        append, replay = store_throughput(kind)
        results[f"{kind} sqlite append ev/s"] = append
        results[f"{kind} sqlite replay ev/s"] = replay
    return {"backend": name, "nova": nova.__file__, "python": sys.version.split()[0], "results": results}


def run_child(backend: str, baseline: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    args = [sys.executable, __file__, "--json"]
    if baseline is not None:
        env["PYTHONPATH"] = baseline + os.pathsep + env.get("PYTHONPATH", "")
    if backend == "json":
        args += ["--backend", "json"]
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    got: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return got


def compare(runs: int, baseline: str | None) -> None:
    setups = ([("today", "json", baseline)] if baseline else []) + [
        ("json", "json", None),
        ("orjson", "auto", None),
    ]
    table: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in setups}
    for _ in range(runs):  # interleaved, so load on the machine hits every setup alike
        for label, backend, path in setups:
            got = run_child(backend, path)
            if label in ("json", "orjson") and got["backend"] != label:
                raise SystemExit(f"{label}: the codec ran on {got['backend']}")
            table[label].append(got["results"])
    keys = list(table["json"][0])
    labels = [label for label, _, _ in setups]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {runs} runs; median (min-max)")
    print(f"{'':28s}" + "".join(f"{label:>26s}" for label in labels) + "   orjson vs json")
    for key in keys:
        row = f"{key:28s}"
        medians = {}
        for label in labels:
            values = [r[key] for r in table[label]]
            medians[label] = statistics.median(values)
            fmt = "{:,.0f}" if key.endswith("ev/s") else "{:.2f}"
            cell = f"{fmt.format(medians[label])} ({fmt.format(min(values))}-{fmt.format(max(values))})"
            row += f"{cell:>26s}"
        faster = (
            medians["json"] / medians["orjson"] if key.endswith("us") else medians["orjson"] / medians["json"]
        )
        row += f"   {faster:.2f}x"
        if baseline:
            vs = (
                medians["today"] / medians["orjson"]
                if key.endswith("us")
                else medians["orjson"] / medians["today"]
            )
            row += f" (vs today {vs:.2f}x)"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["auto", "json"], default="auto")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", help="a folder holding an older nova package")
    parser.add_argument("--json", action="store_true", help="one line of JSON")
    args = parser.parse_args()
    if args.compare:
        compare(args.runs, args.baseline)
        return
    if args.backend == "json":
        sys.modules["orjson"] = None  # type: ignore[assignment]  # import orjson now fails
    got = one_run()
    if args.json:
        print(json.dumps(got))
    else:
        print(f"{got['backend']} ({got['nova']}), python {got['python']}")
        for key, value in got["results"].items():
            print(f"  {key:28s} {value:,.2f}")


if __name__ == "__main__":
    main()
