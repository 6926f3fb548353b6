"""Graceful shutdown of several components under one deadline (see docs/api.md, Shutdown)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["shutdown", "run"]


def _rank(component: Any) -> int:
    """Emitters and buses first, then listener managers, then stores, then pools."""
    name = type(component).__mro__
    kinds = {c.__name__ for c in name}
    if kinds & {"Emitter", "Bus"}:
        return 0
    if "ListenerManager" in kinds:
        return 1
    if kinds & {"MemoryStore", "SqliteStore", "DeadLetterQueue"}:
        return 2
    if "WorkerPool" in kinds:
        return 3
    return 1


def shutdown(*components: Any, timeout: float = 30.0) -> list[Any]:
    """Shut components down in order (emitters and buses, listener managers, stores, pools)
    under one deadline; returns each component's report (None where it has none), in the
    order the components were given."""
    deadline = time.monotonic() + timeout
    order = sorted(range(len(components)), key=lambda i: _rank(components[i]))
    reports: list[Any] = [None] * len(components)
    for i in order:
        c = components[i]
        left = max(0.0, deadline - time.monotonic())
        if hasattr(c, "shutdown"):
            reports[i] = c.shutdown(timeout=left)
        elif hasattr(c, "stop"):
            reports[i] = c.stop(timeout=left)
        elif hasattr(c, "close"):
            try:
                reports[i] = c.close(timeout=left)
            except TypeError:
                reports[i] = c.close()
        else:
            raise TypeError(f"nova.shutdown: {type(c).__name__} has no shutdown(), stop() or close()")
    return reports


def run(main: Callable[[], Any], *components: Any, timeout: float = 30.0) -> list[Any]:
    """Run ``main()`` (in this thread) until it returns or SIGINT/SIGTERM arrives, then shut
    the components down gracefully and return their reports. ``main`` may also be a
    long-running loop; on a signal it gets KeyboardInterrupt (SIGINT) or SystemExit (SIGTERM).
    """
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        if signum == signal.SIGTERM:
            raise SystemExit(0)
        raise KeyboardInterrupt

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        try:
            main()
        except (KeyboardInterrupt, SystemExit):
            if not stop.is_set():
                raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reports = shutdown(*components, timeout=timeout)
    return reports
