"""Instructions per event, counted by valgrind's callgrind: the synchronous path, and one case per
queued row of benches/compare.py (every thread's instructions: the workers' too).

    python benches/callgrind_sync.py            # all cases, a table of instructions per event
    python benches/callgrind_sync.py --run CASE N  # (internal) one case under callgrind

Wall-clock rates on a shared machine drift by tens of percent between runs; instruction
counts do not. Each case runs twice under callgrind, with N events and with none, and the
difference over N is the cost of one event (the loop's own bytecode included, as in
benches/compare.py). Needs valgrind on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any


def noop(*_a: Any, **_k: Any) -> None:
    return None


def loop_only(n: int) -> None:
    for i in range(n):
        noop(i)


def nova_emit_new_event(n: int) -> None:
    import nova

    em = nova.Emitter(name="callgrind-sync")
    em.subscribe("order.created", noop)
    Event, emit = nova.Event, em.emit
    for i in range(n):
        emit(Event("order.created", i))
    em.shutdown()


def nova_event_only(n: int) -> None:
    import nova

    Event = nova.Event
    for i in range(n):
        Event("order.created", i)


def nova_emit_prebuilt(n: int) -> None:
    import nova

    em = nova.Emitter(name="callgrind-sync")
    em.subscribe("order.created", noop)
    ev, emit = nova.Event("order.created", 0), em.emit
    for _ in range(n):
        emit(ev)
    em.shutdown()


def pyee_emit(n: int) -> None:
    import pyee

    ee = pyee.EventEmitter()
    ee.on("order.created", noop)
    emit = ee.emit
    for i in range(n):
        emit("order.created", i)


def nova_event_with_metadata(n: int) -> None:
    import nova

    Event = nova.Event
    for i in range(n):
        Event("order.created", i, metadata={"customer_id": "cust-1"})


def nova_emit_async_flush(n: int) -> None:
    from nova.cli._workloads import emitter_async

    emitter_async(n)


def nova_bus_default(n: int) -> None:
    from nova.cli._workloads import bus_16

    bus_16(n)


def compat_pyee_emit(n: int) -> None:
    from nova.cli._workloads import pyee_emit as workload

    workload(n, "nova.compat.pyee")


def compat_blinker_send(n: int) -> None:
    from nova.cli._workloads import blinker_send

    blinker_send(n, "nova.compat.blinker")


def floor_slice(n: int) -> None:
    # What a dispatcher that cost nothing would run (see _workloads.floor_sync).
    make = slice
    for i in range(n):
        noop(make("order.created", i))


CASES: dict[str, Callable[[int], None]] = {
    "loop-only": loop_only,
    "floor: handler(slice(type, i))": floor_slice,
    "nova emit(Event(...))": nova_emit_new_event,
    "nova Event(...) only": nova_event_only,
    "nova Event(..., metadata)": nova_event_with_metadata,
    "nova emit(prebuilt)": nova_emit_prebuilt,
    "pyee emit": pyee_emit,
    "nova emit_async+flush": nova_emit_async_flush,
    "nova bus default, keyed": nova_bus_default,
    "compat.pyee emit": compat_pyee_emit,
    "compat.blinker send": compat_blinker_send,
}


def instructions(case: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--run",
                case,
                str(n),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(out) as f:
            m = re.search(r"^summary:\s*(\d+)", f.read(), re.M)
        assert m, "no summary line in the callgrind output"
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", nargs=2, metavar=("CASE", "N"))
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--case", action="append", help="only these cases (repeatable)")
    args = ap.parse_args()
    if args.run:
        CASES[args.run[0]](int(args.run[1]))
        return
    n = args.events
    for case in args.case or list(CASES):
        per_event = (instructions(case, n) - instructions(case, 0)) / n
        print(f"  {case:<26} {per_event:>8,.0f} instructions/event", flush=True)


if __name__ == "__main__":
    main()
