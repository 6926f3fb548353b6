"""asyncio support for the core: which handlers are coroutines, and where they run.

An ``async def`` listener runs on the component's loop (given, or running where the component
was created) or, failing that, on a private loop in a daemon thread that Nova starts on first
need. The calling worker waits for the result with the GIL released.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import Any

_lock = threading.Lock()
_private: asyncio.AbstractEventLoop | None = None


def is_async(fn: Any) -> bool:
    """True for an ``async def`` function or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def private_loop() -> asyncio.AbstractEventLoop:
    """Nova's own loop thread, started once."""
    global _private
    with _lock:
        if _private is None or _private.is_closed():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="nova-asyncio", daemon=True).start()
            started.wait()
            _private = loop
        return _private


def target_loop(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    if loop is not None and loop.is_running() and not loop.is_closed():
        return loop
    return private_loop()


def wait(loop: asyncio.AbstractEventLoop | None, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on the target loop from a non-loop thread and return its result."""
    target = target_loop(loop)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is target:
        coro.close()
        raise RuntimeError(
            "an async listener cannot be awaited by a synchronous emit running on its own event "
            "loop; use `await emitter.aemit(event)` (or emit_async) from async code"
        )
    return asyncio.run_coroutine_threadsafe(coro, target).result()
