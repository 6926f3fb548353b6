"""``nova tune MODULE:HANDLER``: run a handler through an Emitter for every (workers, buffer)
cell of a grid, measure throughput, p99 latency and peak memory, and recommend a WorkerPool
and ``buffer_size`` (with a heat map of the grid under ``--plot``, which needs matplotlib)."""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import math
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._common import Progress, UsageError, error_line, percentile, positive_float, table

__all__ = [
    "DEFAULT_WORKERS",
    "DEFAULT_BUFFERS",
    "DEFAULT_SECONDS",
    "TuneCell",
    "Recommendation",
    "recommend",
    "add_parser",
    "run",
]

DEFAULT_WORKERS = "1,2,4,8"
DEFAULT_BUFFERS = "100,1000,10000"
DEFAULT_SECONDS = 5.0

_perf = time.perf_counter


def add_parser(sub: Any) -> None:
    """Add ``nova tune``, its argument and options to the subcommands of the ``nova`` parser."""
    parser = sub.add_parser(
        "tune",
        help="measure your handler over worker counts and buffer sizes, recommend a size",
        description="Run MODULE:HANDLER through an Emitter for every (workers, buffer) cell of the "
        "grid, measure throughput, p99 latency and peak memory, and recommend a "
        "WorkerPool and buffer_size.",
    )
    parser.add_argument(
        "target", metavar="MODULE:HANDLER", help="the handler to measure, e.g. myapp.listeners:on_order"
    )
    parser.add_argument(
        "--workers",
        default=DEFAULT_WORKERS,
        metavar="LIST",
        help=f"worker counts to try (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--buffer",
        default=DEFAULT_BUFFERS,
        metavar="LIST",
        help=f"buffer sizes to try (default {DEFAULT_BUFFERS})",
    )
    parser.add_argument(
        "--seconds",
        type=positive_float,
        default=DEFAULT_SECONDS,
        metavar="S",
        help=f"seconds of load per cell (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", default=None, help="write a heat map of the grid (needs matplotlib)"
    )


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
    from .. import _aio

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
    p99 = percentile(measured, 0.99) * 1e3 if measured else None
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
    w, b = cell.workers, cell.buffer
    notes = [
        note
        for note in (
            _edge_note(
                "worker count",
                "--workers",
                w,
                workers,
                ("more may still help", [w, w * 2, w * 4]),
                ("fewer may do as well", [max(1, w // 4), max(1, w // 2), w]),
            ),
            _edge_note(
                "buffer",
                "--buffer",
                b,
                buffers,
                ("a larger one may help", [b, b * 10]),
                ("a smaller one may do as well with less memory and latency", [max(1, b // 10), b]),
            ),
        )
        if note is not None
    ]
    return Recommendation(cell, reason, notes)


def _edge_note(
    what: str,
    option: str,
    value: int,
    tried: Sequence[int],
    above: tuple[str, list[int]],
    below: tuple[str, list[int]],
) -> str | None:
    """A note when ``value`` is at an end of the values ``tried`` (a wider grid might do
    better there): what may happen beyond it, and the ``option`` values to try next."""
    if len(tried) < 2:
        return None
    if value == max(tried):
        end, (outlook, next_grid) = "largest", above
    elif value == min(tried) and value > 1:
        end, (outlook, next_grid) = "smallest", below
    else:
        return None
    grid = ",".join(str(v) for v in next_grid)
    return f"the recommended {what} is the {end} tried ({value}): {outlook}, try {option} {grid}"


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


def run(args: argparse.Namespace) -> int:
    """``nova tune`` with its parsed arguments; returns the exit status."""
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
    with Progress("nova tune", len(grid)) as bar:
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
    table(
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
        error_line(f"nova tune: {exc}")
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
