"""nova.compat against the libraries it replaces, in one process and one run.

    python benches/compat_figures.py [--events N] [--repeat R] [--json]
    python benches/compat_figures.py --callgrind [--events N]

Each workload is one emitter (signal) with one no-op handler (receiver), emitting (sending) N
times from a loop that binds the method once:

    pyee            pyee.EventEmitter.emit("event", i)
    nova-pyee       nova.compat.pyee.EventEmitter.emit("event", i)
    blinker         blinker.Signal.send(None)            (receiver connected for ANY, weakly)
    nova-blinker    nova.compat.blinker.Signal.send(None)

The wall-clock figures are the best of R interleaved repeats (the machine is shared; quote ratios
from one run). With --callgrind every workload runs under valgrind at two sizes and the figure is
instructions per event (the difference divided by the extra events), which noise cannot move.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


def noop(*_a: Any, **_k: Any) -> None:
    return None


def _emit_loop(module: Any) -> Callable[[int], float]:
    def run(n: int) -> float:
        ee = module.EventEmitter()
        ee.on("event", noop)
        emit = ee.emit
        t = time.perf_counter()
        for i in range(n):
            emit("event", i)
        return time.perf_counter() - t

    return run


def _send_loop(module: Any) -> Callable[[int], float]:
    def run(n: int) -> float:
        sig = module.Signal()
        sig.connect(noop)
        send = sig.send
        t = time.perf_counter()
        for _ in range(n):
            send(None)
        return time.perf_counter() - t

    return run


def workloads() -> dict[str, Callable[[int], float]]:
    import blinker
    import pyee

    import nova.compat.blinker
    import nova.compat.pyee

    return {
        "pyee": _emit_loop(pyee),
        "nova-pyee": _emit_loop(nova.compat.pyee),
        "blinker": _send_loop(blinker),
        "nova-blinker": _send_loop(nova.compat.blinker),
    }


PAIRS = [("pyee", "nova-pyee"), ("blinker", "nova-blinker")]


def wall_clock(n: int, repeat: int) -> dict[str, float]:
    """events/s per workload: best of `repeat`, the workloads interleaved."""
    work = workloads()
    for fn in work.values():
        fn(min(n, 10_000))  # warm up
    best = {name: float("inf") for name in work}
    for _ in range(repeat):
        for name, fn in work.items():
            best[name] = min(best[name], fn(n))
    return {name: n / secs for name, secs in best.items()}


def _instructions(name: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--only",
                name,
                "--events",
                str(n),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        m = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
        if not m:
            raise RuntimeError(f"no instruction count from callgrind:\n{proc.stderr[-2000:]}")
        return int(m.group(1))


def callgrind(n: int) -> dict[str, float]:
    """Instructions per event per workload (two sizes, so start-up cancels out)."""
    return {name: (_instructions(name, 2 * n) - _instructions(name, n)) / n for name in workloads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--callgrind", action="store_true", help="instructions per event under valgrind")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # one workload (what --callgrind runs)
    args = ap.parse_args()
    cores = os.cpu_count()

    if args.only:
        workloads()[args.only](args.events or 10_000)
        return

    if args.callgrind:
        n = args.events or 20_000
        ins = callgrind(n)
        ratios = {new: ins[old] / ins[new] for old, new in PAIRS}
        if args.json:
            print(json.dumps({"cores": cores, "instructions_per_event": ins, "ratios": ratios}))
            return
        print(f"Python {sys.version.split()[0]}, {cores} cores, callgrind, {n} extra events")
        for name, v in ins.items():
            print(f"  {name:<14}{v:>12,.0f} instructions/event")
        for old, new in PAIRS:
            print(f"  {new} vs {old}: {ratios[new]:.2f}x fewer instructions (target >= 2x)")
        return

    n = args.events or 300_000
    rates = wall_clock(n, args.repeat)
    ratios = {new: rates[new] / rates[old] for old, new in PAIRS}
    if args.json:
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "cores": cores,
                    "events": n,
                    "events_per_s": rates,
                    "ratios": ratios,
                }
            )
        )
        return
    print(f"Python {sys.version.split()[0]}, {cores} cores, {n} events, best of {args.repeat}")
    for name, r in rates.items():
        print(f"  {name:<14}{r:>14,.0f} events/s  ({1e9 / r:,.0f} ns/event)")
    for old, new in PAIRS:
        label = "EventEmitter.emit" if old == "pyee" else "Signal.send"
        print(f"  nova.compat.{old}.{label} vs {old}.{label}: {ratios[new]:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
