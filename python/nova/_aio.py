"""asyncio support for the core: which handlers are coroutines, and where they run.

An ``async def`` listener runs on the component's loop (given, or running where the component
was created) or, failing that, on a private loop in a daemon thread that Nova starts on first
need.

Queued deliveries (``emit_async``, a bus's workers) hand each coroutine to its loop as a task
and go back to work at once (``submit``): tasks are handed over in batches, one
``call_soon_threadsafe`` per batch, and the core is told when each task ends. A synchronous
``emit`` (and a managed listener's attempt) still waits for the result with the GIL released
(``wait``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol


class Run(Protocol):
    """One run of an async listener (``nova._core.ListenerRun``): awaitable, and told how its
    task ended."""

    def __await__(self) -> Generator[Any, None, None]: ...
    def finish(self, error: BaseException | None, result: Any = None, /) -> None: ...
    def started(self, task: asyncio.Task[None], /) -> None: ...
    def close(self) -> None: ...


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


class _Dispatcher:
    """Hands coroutines from worker threads to one loop as tasks, a batch per wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[tuple[Run, contextvars.Context]] = deque()
        self._scheduled = False
        self._lock = threading.Lock()

    def submit(self, run: Run) -> None:
        ctx = contextvars.copy_context()
        with self._lock:
            self._queue.append((run, ctx))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._start)
        except RuntimeError as e:  # the loop is closed: nobody will run them
            self._fail_all(e)

    def _fail_all(self, cause: BaseException) -> None:
        with self._lock:
            waiting = list(self._queue)
            self._queue.clear()
            self._scheduled = False
        for run, _ctx in waiting:
            run.finish(_Refused(self._loop, cause).exception())
            run.close()

    def _start(self) -> None:
        with self._lock:
            self._scheduled = False
            batch = list(self._queue)
            self._queue.clear()
        create = _task_maker(self._loop)
        for run, ctx in batch:
            run.started(create(run, context=ctx))


def _task_maker(loop: asyncio.AbstractEventLoop) -> Callable[..., asyncio.Task[Any]]:
    """``loop.create_task``; with no task factory set, that is ``asyncio.Task(coro, loop=loop)``,
    made directly, without ``create_task``'s own Python frame."""
    if loop.get_task_factory() is None:
        return functools.partial(asyncio.Task, loop=loop)
    return loop.create_task


class _Refused:
    """Stands for a task that never ran (its loop was closed): what ``done`` is handed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cause: BaseException) -> None:
        self._error = RuntimeError(
            f"the event loop {loop!r} that runs this async listener is closed; the event was not "
            f"delivered (pass a running loop to the component, or leave it to Nova's own): {cause}"
        )

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException:
        return self._error


_dispatchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Dispatcher] = weakref.WeakKeyDictionary()


def submit(loop: asyncio.AbstractEventLoop | None, run: Run) -> None:
    """Run ``run`` as a task on the target loop (in a copy of the caller's context); it settles
    its delivery when it ends. Returns at once."""
    running = asyncio._get_running_loop()
    target = loop if loop is not None and loop is running else target_loop(loop)
    if target is running:  # on the loop's own thread: start the task at once
        run.started(target.create_task(run))  # type: ignore[arg-type]
        return
    dispatcher = _dispatchers.get(target)
    if dispatcher is None:
        with _lock:
            dispatcher = _dispatchers.setdefault(target, _Dispatcher(target))
    dispatcher.submit(run)


async def until_room(attempt: Callable[[], None], wait_room: Callable[[float], bool]) -> None:
    """``attempt()`` until it does not raise ``BufferFull``; in between, ``wait_room(seconds)``
    waits for room in a thread of the loop's default executor (the loop goes on; nothing is
    polled with sleeps). A closed component's error ends it, from ``attempt``."""
    from .errors import BufferFull

    while True:
        try:
            attempt()
            return
        except BufferFull:
            await asyncio.to_thread(wait_room, 0.5)
