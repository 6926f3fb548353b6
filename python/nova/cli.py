"""The ``nova`` command line (API section 16): ``nova bench``, ``nova tune`` and ``nova demo``.

Also ``python -m nova ...``. rich (progress bars, tables) and matplotlib (``--plot``) are
optional and imported only when a command uses them; without rich, progress is plain text.
Bad arguments exit with status 2 and one line on stderr naming the bad value, never a
traceback. ``main(argv)`` returns the exit status instead of exiting, so it can be called
from Python.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import math
import os
import platform
import queue
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO
from urllib.parse import urlsplit

__all__ = ["main", "BENCH_NAMES", "TuneCell", "recommend"]

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
DEFAULT_WORKERS = "1,2,4,8"
DEFAULT_BUFFERS = "100,1000,10000"
DEFAULT_SECONDS = 5.0

_perf = time.perf_counter


# =============================================================================================
# argument handling
# =============================================================================================


class UsageError(Exception):
    """A bad argument: reported in one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _grid(option: str, text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (sorted, without repeats); UsageError naming the bad item."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise UsageError(f"{option}: {text!r} must be a comma-separated list of positive integers")
    values = set()
    for item in items:
        try:
            value = int(item, 10)
        except ValueError:
            raise UsageError(f"{option}: {item!r} is not a positive integer") from None
        if value < 1:
            raise UsageError(f"{option}: {item!r} is not a positive integer")
        values.add(value)
    return sorted(values)


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="nova",
        description="Nova, a fast and reliable event system: benchmarks, sizing and a demo.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{bench,tune,demo}")
    sub.required = True

    bench = sub.add_parser(
        "bench",
        help="throughput and latency of the built-in workloads beside plain Python and peers",
        description="Throughput and p50/p99 latency of sync emit, async emit, a 16-partition bus and "
        "store appends, beside a plain Python loop, a queue.Queue worker and (where "
        "installed) pyee and blinker.",
    )
    bench.add_argument(
        "--events",
        type=_positive_int,
        default=DEFAULT_BENCH_EVENTS,
        metavar="N",
        help=f"events per workload (default {DEFAULT_BENCH_EVENTS:,})",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object for machines")

    tune = sub.add_parser(
        "tune",
        help="measure your handler over worker counts and buffer sizes, recommend a size",
        description="Run MODULE:HANDLER through an Emitter for every (workers, buffer) cell of the "
        "grid, measure throughput, p99 latency and peak memory, and recommend a "
        "WorkerPool and buffer_size.",
    )
    tune.add_argument(
        "target", metavar="MODULE:HANDLER", help="the handler to measure, e.g. myapp.listeners:on_order"
    )
    tune.add_argument(
        "--workers",
        default=DEFAULT_WORKERS,
        metavar="LIST",
        help=f"worker counts to try (default {DEFAULT_WORKERS})",
    )
    tune.add_argument(
        "--buffer",
        default=DEFAULT_BUFFERS,
        metavar="LIST",
        help=f"buffer sizes to try (default {DEFAULT_BUFFERS})",
    )
    tune.add_argument(
        "--seconds",
        type=_positive_float,
        default=DEFAULT_SECONDS,
        metavar="S",
        help=f"seconds of load per cell (default {DEFAULT_SECONDS:g})",
    )
    tune.add_argument(
        "--plot", metavar="FILE.png", default=None, help="write a heat map of the grid (needs matplotlib)"
    )

    demo = sub.add_parser(
        "demo",
        help="the order-processing flow end to end, with a summary",
        description="The order-processing flow of the best-practice guide on the embedded "
        "defaults (in-process bus, SQLite store and dead letters), or on Redis.",
    )
    demo.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="run the bus on Redis Streams, e.g. redis://localhost:6379/0",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 bad arguments)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    command = next((a for a in args_list if a in ("bench", "tune", "demo")), None)
    prefix = f"nova {command}" if command else "nova"
    try:
        try:
            args = parser.parse_args(args_list)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "tune":
            return _cmd_tune(args)
        return _cmd_demo(args)
    except UsageError as exc:
        _error_line(f"{prefix}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _error_line(f"{prefix}: interrupted")
        return 130
    except BrokenPipeError:  # `nova bench | head`: the reader went away
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        if os.environ.get("NOVA_DEBUG"):
            raise
        _error_line(f"{prefix}: error: {type(exc).__name__}: {exc} (set NOVA_DEBUG=1 for a traceback)")
        return 1


def _error_line(text: str) -> None:
    line = " ".join(text.split())  # exactly one line
    print(line, file=sys.stderr, flush=True)


# =============================================================================================
# progress (rich when installed, plain lines otherwise)
# =============================================================================================


class _Progress:
    """A progress bar on stderr: rich's when installed and stderr is a terminal, else one
    plain line per step."""

    def __init__(self, title: str, total: int, *, enabled: bool = True) -> None:
        self.title = title
        self.total = total
        self.enabled = enabled
        self.done = 0
        self._rich: Any = None
        self._task: Any = None
        if not enabled or not sys.stderr.isatty():
            return  # plain lines: a log or a pipe gets one line per step
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            return
        console = Console(stderr=True)
        self._rich = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> _Progress:
        if self._rich is not None:
            self._rich.start()
            self._task = self._rich.add_task(self.title, total=self.total)
        return self

    def step(self, label: str) -> None:
        """Announce the step about to run."""
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, description=f"{self.title}: {label}")
        else:
            print(f"{self.title}: [{self.done + 1}/{self.total}] {label} ...", file=sys.stderr, flush=True)

    def advance(self) -> None:
        self.done += 1
        if self._rich is not None:
            self._rich.update(self._task, advance=1)

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """A table on ``out``: rich's when installed, else aligned plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        print(title, file=out)
        print(
            "  "
            + "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths))),
            file=out,
        )
        for row in rows:
            print(
                "  "
                + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))),
                file=out,
            )
        return
    console = Console(file=out, width=max(100, shutil.get_terminal_size().columns))
    console.print(title, markup=False, highlight=False)
    table = Table()
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


# =============================================================================================
# nova bench
# =============================================================================================


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


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def _p50_p99_us(samples: list[float] | None) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    s = sorted(samples)
    return round(_percentile(s, 0.50) * 1e6, 2), round(_percentile(s, 0.99) * 1e6, 2)


def _paced(
    count: int, emit: Callable[[float], None], delays: list[float], timeout: float = 10.0
) -> list[float]:
    """Emit ``count`` events in bursts of 10 a millisecond (sleeping in between, as a service
    would) and return the recorded delays without the first tenth (warm-up)."""
    per_burst = 10
    start = _perf()
    sent = 0
    burst = 0
    while sent < count:
        due = start + burst / 1000
        now = _perf()
        if due > now:
            time.sleep(due - now)
        for _ in range(min(per_burst, count - sent)):
            emit(_perf())
            sent += 1
        burst += 1
    deadline = _perf() + timeout
    while len(delays) < count and _perf() < deadline:
        time.sleep(0.001)
    return delays[count // 10 :]


class _Workloads:
    """Each workload: a throughput run (returns elapsed seconds for ``n`` events) and, where
    one makes sense, a latency sample (returns per-event seconds)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sample = min(n, 20_000)  # per-call timings
        self.paced = min(n, 2_000)  # emit -> listener delays at a steady rate

    # -- emitter, synchronous ----------------------------------------------------------------

    def emitter_sync(self, n: int) -> float:
        import nova

        em = nova.Emitter(name="bench-sync")
        em.subscribe("order.created", _noop)
        event_cls, emit = nova.Event, em.emit
        t = _perf()
        for i in range(n):
            emit(event_cls("order.created", i))
        elapsed = _perf() - t
        em.shutdown()
        return elapsed

    def emitter_sync_latency(self) -> list[float]:
        import nova

        em = nova.Emitter(name="bench-sync-latency")
        em.subscribe("order.created", _noop)
        out = []
        for i in range(self.sample):
            ev = nova.Event("order.created", i)
            t = _perf()
            em.emit(ev)
            out.append(_perf() - t)
        em.shutdown()
        return out

    # -- emitter, asynchronous --------------------------------------------------------------

    def emitter_async(self, n: int) -> float:
        import nova

        em = nova.Emitter(name="bench-async", on_full=nova.OnFull.BLOCK, buffer_size=10_000)
        em.subscribe("order.created", _noop)
        events = [nova.Event("order.created", i) for i in range(n)]
        emit = em.emit_async
        t = _perf()
        for ev in events:
            emit(ev)
        em.flush()
        elapsed = _perf() - t
        em.shutdown()
        return elapsed

    def emitter_async_latency(self) -> list[float]:
        import nova

        delays: list[float] = []
        em = nova.Emitter(name="bench-async-latency", buffer_size=10_000)
        em.subscribe("tick", lambda e: delays.append(_perf() - e.data))
        out = _paced(self.paced, lambda t: em.emit_async(nova.Event("tick", t)), delays)
        em.shutdown()
        return out

    # -- bus: 16 partitions keyed by a metadata field ---------------------------------------

    def _bus(self, name: str, listener: Callable[[Any], Any]) -> Any:
        import nova

        bus = nova.Bus(pool=nova.WorkerPool(4, name=f"{name}-pool"), name=name)
        bus.create_topic(
            "orders",
            partitions=16,
            ordering_key="customer_id",
            on_full=nova.OnFull.BLOCK,
            delivery_mode=nova.DeliveryMode.AT_MOST_ONCE,
            buffer_size=10_000,
        )
        bus.subscribe("orders", listener)
        return bus

    def bus_16(self, n: int) -> float:
        import nova

        bus = self._bus("bench-bus", _noop)
        events = [nova.Event("order.created", i, metadata={"customer_id": f"c{i % 1000}"}) for i in range(n)]
        publish = bus.publish
        t = _perf()
        for ev in events:
            publish("orders", ev)
        bus.flush()
        elapsed = _perf() - t
        bus.shutdown()
        bus.pool.close()
        return elapsed

    def bus_16_latency(self) -> list[float]:
        import nova

        delays: list[float] = []
        bus = self._bus("bench-bus-latency", lambda e: delays.append(_perf() - e.data))
        count = [0]

        def publish(t: float) -> None:
            count[0] += 1
            bus.publish(
                "orders", nova.Event("order.created", t, metadata={"customer_id": f"c{count[0] % 1000}"})
            )

        out = _paced(self.paced, publish, delays)
        bus.shutdown()
        bus.pool.close()
        return out

    # -- stores ------------------------------------------------------------------------------

    def store_memory(self, n: int) -> float:
        import nova
        from nova.store import MemoryStore

        store = MemoryStore(max_events_per_stream=n + 1, name="bench-memory")
        events = [nova.Event("order.created", i) for i in range(n)]
        append = store.append
        t = _perf()
        for ev in events:
            append("orders", ev)
        elapsed = _perf() - t
        store.close()
        return elapsed

    def store_memory_latency(self) -> list[float]:
        import nova
        from nova.store import MemoryStore

        store = MemoryStore(max_events_per_stream=self.sample + 1, name="bench-memory-latency")
        out = []
        for i in range(self.sample):
            ev = nova.Event("order.created", i)
            t = _perf()
            store.append("orders", ev)
            out.append(_perf() - t)
        store.close()
        return out

    @contextmanager
    def _sqlite(self, name: str) -> Iterator[Any]:
        from nova.store import SqliteStore

        with tempfile.TemporaryDirectory(prefix="nova-bench-") as d:
            store = SqliteStore(os.path.join(d, "events.db"), name=name)
            try:
                yield store
            finally:
                store.close()

    def store_sqlite(self, n: int) -> float:
        import nova

        events = [nova.Event("order.created", i) for i in range(n)]
        with self._sqlite("bench-sqlite") as store:
            append = store.append
            t = _perf()
            for ev in events:
                append("orders", ev)
            return _perf() - t

    def store_sqlite_latency(self) -> list[float]:
        import nova

        out = []
        with self._sqlite("bench-sqlite-latency") as store:
            for i in range(min(self.sample, 2_000)):
                ev = nova.Event("order.created", i)
                t = _perf()
                store.append("orders", ev)
                out.append(_perf() - t)
        return out

    # -- baselines ---------------------------------------------------------------------------

    def python_loop(self, n: int) -> float:
        handlers = [_noop]
        t = _perf()
        for i in range(n):
            for h in handlers:
                h(i)
        return _perf() - t

    def queue_worker(self, n: int) -> float:
        q: queue.Queue[Any] = queue.Queue(maxsize=1000)

        def work() -> None:
            while True:
                item = q.get()
                if item is None:
                    return
                _noop(item)

        th = threading.Thread(target=work, name="bench-queue-worker")
        th.start()
        t = _perf()
        for i in range(n):
            q.put(i)
        q.put(None)
        th.join()
        return _perf() - t

    def queue_worker_latency(self) -> list[float]:
        q: queue.Queue[Any] = queue.Queue(maxsize=1000)
        delays: list[float] = []

        def work() -> None:
            while True:
                item = q.get()
                if item is None:
                    return
                delays.append(_perf() - item)

        th = threading.Thread(target=work, name="bench-queue-latency")
        th.start()
        out = _paced(self.paced, q.put, delays)
        q.put(None)
        th.join()
        return out

    def pyee(self, n: int) -> float:
        from pyee import EventEmitter

        ee = EventEmitter()
        ee.on("order.created", _noop)
        emit = ee.emit
        t = _perf()
        for i in range(n):
            emit("order.created", i)
        return _perf() - t

    def pyee_latency(self) -> list[float]:
        from pyee import EventEmitter

        ee = EventEmitter()
        ee.on("order.created", _noop)
        out = []
        for i in range(self.sample):
            t = _perf()
            ee.emit("order.created", i)
            out.append(_perf() - t)
        return out

    def blinker(self, n: int) -> float:
        from blinker import Signal

        sig = Signal()
        sig.connect(_noop)
        send = sig.send
        t = _perf()
        for i in range(n):
            send(i)
        return _perf() - t

    def blinker_latency(self) -> list[float]:
        from blinker import Signal

        sig = Signal()
        sig.connect(_noop)
        out = []
        for i in range(self.sample):
            t = _perf()
            sig.send(i)
            out.append(_perf() - t)
        return out


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def run_bench(n: int, *, repeat: int = 3, progress: bool = True) -> list[BenchResult]:
    """Run every workload (pyee and blinker only where installed); events/s is the best of
    ``repeat`` runs."""
    w = _Workloads(n)
    plan: list[tuple[str, Callable[[int], float], int, Callable[[], list[float]] | None]] = [
        ("emitter-sync", w.emitter_sync, n, w.emitter_sync_latency),
        ("emitter-async", w.emitter_async, n, w.emitter_async_latency),
        ("bus-16", w.bus_16, n, w.bus_16_latency),
        ("store-memory", w.store_memory, n, w.store_memory_latency),
        ("store-sqlite", w.store_sqlite, max(1, n // 20), w.store_sqlite_latency),
        ("python-loop", w.python_loop, n, None),
        ("queue-worker", w.queue_worker, max(1, n // 4), w.queue_worker_latency),
    ]
    if _installed("pyee"):
        plan.append(("pyee", w.pyee, n, w.pyee_latency))
    if _installed("blinker"):
        plan.append(("blinker", w.blinker, n, w.blinker_latency))
    results = []
    with _Progress("nova bench", len(plan), enabled=progress) as bar:
        for name, run, count, latency in plan:
            bar.step(name)
            gc.collect()
            best = min(run(count) for _ in range(repeat))
            rate = count / best if best > 0 else float("inf")
            p50, p99 = _p50_p99_us(latency() if latency is not None else None)
            results.append(BenchResult(name, round(rate, 1), p50, p99))
            bar.advance()
    return results


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

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
    _table(
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


# =============================================================================================
# nova tune
# =============================================================================================


@dataclass(frozen=True)
class TuneCell:
    """One measured cell of the grid."""

    workers: int
    buffer: int
    events_per_s: float
    p99_ms: float | None
    peak_mib: float
    completed: int
    errors: int
    first_error: str = ""


def _load_handler(target: str) -> tuple[Callable[..., Any], str]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{target!r} is not MODULE:HANDLER (for example myapp.listeners:on_order)")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001 - whatever the import raises is a bad argument
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise UsageError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no handler {attr!r}") from None
    import nova

    if isinstance(obj, nova.Listener):
        obj = obj.handler
    if not callable(obj):
        raise UsageError(f"{target!r} is not callable (got {type(obj).__name__})")
    return obj, target


def _check_plot_path(path: str) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"--plot {path!r} needs matplotlib: pip install 'nova-events[cli]'")
    if os.path.isdir(path):
        raise UsageError(f"--plot: {path!r} is a directory, not a file")
    existed = os.path.exists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise UsageError(f"--plot: cannot write {path!r}: {exc.strerror or exc}") from None
    if not existed:
        os.unlink(path)


class _Errors:
    """Exceptions the handler raised during a cell (counted, the first one kept)."""

    def __init__(self) -> None:
        self.count = 0
        self.first = ""

    def add(self, exc: BaseException) -> None:
        self.count += 1
        if not self.first:
            self.first = f"{type(exc).__name__}: {exc}"


def _measure_cell(handler: Callable[..., Any], workers: int, buffer: int, seconds: float) -> TuneCell:
    """Run ``handler`` through an Emitter on a WorkerPool of ``workers`` with ``buffer`` for
    ``seconds`` at saturation, then a short tracemalloc pass for the peak memory."""
    import nova
    from . import _aio

    is_async = _aio.is_async(handler)
    sent: dict[int, float] = {}
    done: list[tuple[float, float]] = []  # (finished at, latency)
    errors = _Errors()

    if is_async:

        async def timed_async(event: Any) -> None:
            try:
                await handler(event)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.add(exc)
            now = _perf()
            done.append((now, now - sent.pop(event.data, now)))

        listener: Any = nova.Listener("tuned-handler", timed_async)
    else:

        def timed(event: Any) -> None:
            try:
                handler(event)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.add(exc)
            now = _perf()
            done.append((now, now - sent.pop(event.data, now)))

        listener = nova.Listener("tuned-handler", timed)

    def run(duration: float) -> tuple[float, float]:
        pool = nova.WorkerPool(workers=workers, name=f"tune-{workers}x{buffer}")
        em = nova.Emitter(
            pool=pool,
            buffer_size=buffer,
            on_full=nova.OnFull.BLOCK,
            max_concurrency=max(10, workers),
            name=f"tune-{workers}x{buffer}",
        )
        em.subscribe("tune.sample", listener)
        emit, event_cls = em.emit_async, nova.Event
        seq = 0
        start = _perf()
        end = start + duration
        try:
            while _perf() < end:
                for _ in range(16):
                    seq += 1
                    sent[seq] = _perf()
                    emit(event_cls("tune.sample", seq), timeout=max(0.0, end - _perf()) + 0.05)
        except nova.BufferFull:
            pass  # the deadline passed while waiting for room
        finally:
            stopped = _perf()
            em.shutdown(timeout=0)  # what is still queued is not measured
            # Calls in progress finish (a handler stuck for good is left behind, not waited on).
            pool.close(timeout=max(5.0, duration))
        return start, stopped

    # Throughput and latency, without tracemalloc (it slows every allocation down).
    start, stopped = run(seconds)
    warm = start + seconds * 0.1
    in_window = [(t, lat) for t, lat in done if t <= stopped]
    completed = len(in_window)
    measured = sorted(lat for t, lat in in_window if t >= warm) or sorted(lat for _t, lat in in_window)
    p99 = _percentile(measured, 0.99) * 1e3 if measured else None
    rate = completed / max(stopped - start, 1e-9)
    failures = errors.count

    # Peak memory: the same load for a short while under tracemalloc.
    done.clear()
    sent.clear()
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    run(min(1.0, max(0.05, seconds * 0.2)))
    peak = tracemalloc.get_traced_memory()[1] - base
    if not was_tracing:
        tracemalloc.stop()
    done.clear()
    sent.clear()
    return TuneCell(
        workers,
        buffer,
        round(rate, 1),
        None if p99 is None else round(p99, 3),
        round(max(0, peak) / 2**20, 3),
        completed,
        failures,
        errors.first,
    )


@dataclass(frozen=True)
class Recommendation:
    cell: TuneCell
    reason: str
    edge_notes: list[str]


def recommend(cells: Sequence[TuneCell], workers: Sequence[int], buffers: Sequence[int]) -> Recommendation:
    """The cell to use: throughput within 5% of the best, then the lowest p99 latency; among
    cells within 10% of that p99, the fewest workers, then the smallest buffer, then the
    least memory. Notes say when it lies on the edge of the grid."""
    measured = [c for c in cells if c.completed > 0]
    if not measured:
        raise RuntimeError("the handler finished no event in any cell; try more --seconds")
    best_rate = max(c.events_per_s for c in measured)
    fast = [c for c in measured if c.events_per_s >= 0.95 * best_rate]
    p99s = [c.p99_ms for c in fast if c.p99_ms is not None]
    low = min(p99s) if p99s else None
    if low is not None:
        near = [c for c in fast if c.p99_ms is not None and c.p99_ms <= low * 1.10 + 1e-6]
    else:
        near = fast
    cell = min(near, key=lambda c: (c.workers, c.buffer, c.peak_mib))
    if cell.events_per_s >= best_rate:
        reason = f"it has the highest throughput ({cell.events_per_s:,.0f} events/s)"
    else:
        reason = (
            f"its throughput ({cell.events_per_s:,.0f} events/s) is within 5% of the best "
            f"({best_rate:,.0f} events/s)"
        )
    if low is not None and cell.p99_ms is not None:
        if cell.p99_ms <= low:
            reason += f" and its p99 latency ({cell.p99_ms:,.2f} ms) is the lowest of those"
        else:
            reason += (
                f" and its p99 latency ({cell.p99_ms:,.2f} ms) is within 10% of the lowest "
                f"of those ({low:,.2f} ms)"
            )
    if len(near) > 1:
        reason += f"; of the {len(near)} such cells it has the fewest workers, then the smallest buffer"
    notes = []
    if len(workers) > 1 and cell.workers == max(workers):
        notes.append(
            f"the recommended worker count is the largest tried ({cell.workers}): more may "
            f"still help, try --workers {cell.workers},{cell.workers * 2},{cell.workers * 4}"
        )
    elif len(workers) > 1 and cell.workers == min(workers) and cell.workers > 1:
        notes.append(
            f"the recommended worker count is the smallest tried ({cell.workers}): fewer may "
            f"do as well, try --workers {max(1, cell.workers // 4)},{max(1, cell.workers // 2)},{cell.workers}"
        )
    if len(buffers) > 1 and cell.buffer == max(buffers):
        notes.append(
            f"the recommended buffer is the largest tried ({cell.buffer}): a larger one may "
            f"help, try --buffer {cell.buffer},{cell.buffer * 10}"
        )
    elif len(buffers) > 1 and cell.buffer == min(buffers) and cell.buffer > 1:
        notes.append(
            f"the recommended buffer is the smallest tried ({cell.buffer}): a smaller one may "
            f"do as well with less memory and latency, try --buffer {max(1, cell.buffer // 10)},{cell.buffer}"
        )
    return Recommendation(cell, reason, notes)


def _plot(
    path: str,
    cells: Sequence[TuneCell],
    workers: Sequence[int],
    buffers: Sequence[int],
    rec: TuneCell,
    target: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    by_key = {(c.workers, c.buffer): c for c in cells}
    panels: list[tuple[str, Callable[[TuneCell], float | None], str, str]] = [
        ("throughput (events/s)", lambda c: c.events_per_s, "viridis", "{:,.0f}"),
        ("p99 latency (ms)", lambda c: c.p99_ms, "magma_r", "{:,.2f}"),
        ("peak memory (MiB, tracemalloc)", lambda c: c.peak_mib, "cividis_r", "{:,.2f}"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * 3, 1.2 + 0.6 * len(workers) + 1.2), squeeze=False)
    for ax, (title, get, cmap, fmt) in zip(axes[0], panels):
        grid = [
            [math.nan if (v := get(by_key[(w, b)])) is None else float(v) for b in buffers] for w in workers
        ]
        image = ax.imshow(grid, cmap=cmap, aspect="auto", origin="lower")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(buffers)), [str(b) for b in buffers])
        ax.set_yticks(range(len(workers)), [str(w) for w in workers])
        ax.set_xlabel("buffer_size")
        ax.set_ylabel("workers")
        for yi, w in enumerate(workers):
            for xi, b in enumerate(buffers):
                v = get(by_key[(w, b)])
                ax.text(
                    xi,
                    yi,
                    "-" if v is None else fmt.format(v),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "black", "alpha": 0.35, "lw": 0},
                )
        ax.add_patch(
            Rectangle(
                (buffers.index(rec.buffer) - 0.5, workers.index(rec.workers) - 0.5),
                1,
                1,
                fill=False,
                edgecolor="red",
                linewidth=2.5,
            )
        )
    fig.suptitle(
        f"nova tune {target}: recommended workers={rec.workers}, buffer_size={rec.buffer} (red)", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _cmd_tune(args: argparse.Namespace) -> int:
    workers = _grid("--workers", args.workers)
    buffers = _grid("--buffer", args.buffer)
    if args.plot is not None:
        _check_plot_path(args.plot)
    handler, target = _load_handler(args.target)
    cells: list[TuneCell] = []
    grid = [(w, b) for w in workers for b in buffers]
    per_cell = args.seconds + min(1.0, max(0.05, args.seconds * 0.2))
    print(
        f"nova tune {target}: {len(grid)} cells x {per_cell:.1f} s (workers {workers}, buffers {buffers})",
        flush=True,
    )
    with _Progress("nova tune", len(grid)) as bar:
        for w, b in grid:
            bar.step(f"workers={w} buffer={b}")
            cells.append(_measure_cell(handler, w, b, args.seconds))
            bar.advance()
    rows = [
        [
            str(c.workers),
            str(c.buffer),
            f"{c.events_per_s:,.0f}",
            "-" if c.p99_ms is None else f"{c.p99_ms:,.3f}",
            f"{c.peak_mib:,.2f}",
            str(c.errors),
        ]
        for c in cells
    ]
    _table(
        f"nova tune {target} ({args.seconds:g} s per cell)",
        ["workers", "buffer", "events/s", "p99 ms", "peak MiB", "errors"],
        rows,
        sys.stdout,
    )
    failed = sum(c.errors for c in cells)
    if failed:
        first = next(c.first_error for c in cells if c.first_error)
        print(
            f"warning: the handler raised in {failed} of {sum(c.completed for c in cells)} calls "
            f"(first: {first}); those calls are measured like the others",
            flush=True,
        )
    try:
        rec = recommend(cells, workers, buffers)
    except RuntimeError as exc:
        _error_line(f"nova tune: {exc}")
        return 1
    c = rec.cell
    print()
    print("Recommended:")
    print(f"  pool = nova.WorkerPool(workers={c.workers}, queue_size=1000)")
    concurrency = f", max_concurrency={c.workers}" if c.workers > 10 else ""
    print(f"  emitter = nova.Emitter(pool=pool, buffer_size={c.buffer}{concurrency})")
    print(f"  buffer_size={c.buffer}")
    print(f"Reason: {rec.reason}.")
    for note in rec.edge_notes:
        print(f"Note: {note}.")
    if not rec.edge_notes:
        print("Note: the recommendation lies inside the grid.")
    if args.plot is not None:
        _plot(args.plot, cells, workers, buffers, c, target)
        print(f"Heat map written to {args.plot}")
    return 0


# =============================================================================================
# nova demo
# =============================================================================================


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()


def _check_redis_url(url: str) -> None:
    shown = _redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--redis: {shown!r} is not a valid Redis URL: {exc}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise UsageError(f"--redis: {shown!r} is not a Redis URL (use redis://, rediss:// or unix://)")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise UsageError(f"--redis: {shown!r} has no host (e.g. redis://localhost:6379/0)")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise UsageError(f"--redis: {shown!r}: the database {db!r} is not a number")
    del port
    if importlib.util.find_spec("redis") is None:
        raise UsageError("--redis needs the redis package: pip install 'nova-events[redis]'")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .errors import BackendError, ValidationError

    if args.redis is not None:
        _check_redis_url(args.redis)
    try:
        run_demo(args.redis)
    except (BackendError, ValidationError) as exc:
        if args.redis is None:
            raise
        raise UsageError(f"--redis {_redact(args.redis)!r}: {exc}") from None
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
