"""nova.compat.pyee behaves like pyee 13 (written from pyee's documented behaviour)."""

from __future__ import annotations

import asyncio
import copy
import enum
import gc
import pickle
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyee as real_pyee
import pytest

from nova.compat import pyee
from nova.compat._table import PyeeTable
from nova.compat.pyee import (
    AsyncIOEventEmitter,
    EventEmitter,
    ExecutorEventEmitter,
    PyeeError,
)


def module_handler(*args: Any, **kwargs: Any) -> None:
    """A picklable handler."""


class Color(enum.Enum):
    RED = 1


# -- registering and emitting --------------------------------------------------------------------


def test_import_surface() -> None:
    assert pyee.EventEmitter is EventEmitter
    assert issubclass(pyee.PyeeError, pyee.PyeeException)
    assert issubclass(PyeeError, Exception)
    from nova.compat.pyee.asyncio import AsyncIOEventEmitter as A
    from nova.compat.pyee.base import EventEmitter as E
    from nova.compat.pyee.executor import ExecutorEventEmitter as X

    assert (A, E, X) == (AsyncIOEventEmitter, EventEmitter, ExecutorEventEmitter)
    # dispatch lives in the Rust table
    assert isinstance(EventEmitter(), PyeeTable)
    assert EventEmitter.emit is PyeeTable.emit


def test_on_as_decorator_and_call() -> None:
    ee = EventEmitter()
    calls: list[Any] = []

    @ee.on("data")
    def decorated(x: Any) -> None:
        calls.append(("dec", x))

    def direct(x: Any) -> None:
        calls.append(("direct", x))

    assert ee.on("data", direct) is direct
    assert ee.add_listener("other", direct) is direct

    @ee.listens_to("other")
    def via_listens_to(x: Any) -> None:
        calls.append(("lt", x))

    assert callable(decorated) and decorated.__name__ == "decorated"
    assert ee.emit("data", 1) is True
    assert ee.emit("other", 2) is True
    assert calls == [("dec", 1), ("direct", 1), ("direct", 2), ("lt", 2)]


def test_emit_passes_args_and_kwargs_and_reports_handled() -> None:
    ee = EventEmitter()
    seen: list[Any] = []
    ee.on("e", lambda *a, **k: seen.append((a, k)))
    assert ee.emit("e", 1, 2, key="v") is True
    assert ee.emit(event="e") is True
    assert seen == [((1, 2), {"key": "v"}), ((), {})]
    assert ee.emit("nobody") is False
    assert ee.emit("nobody", 1, x=2) is False


def test_handlers_run_in_registration_order_and_once_per_registration() -> None:
    ee = EventEmitter()
    order: list[str] = []

    def a() -> None:
        order.append("a")

    def b() -> None:
        order.append("b")

    ee.on("e", a)
    ee.on("e", b)
    ee.on("e", a)  # same handler again: still one entry, in its first place
    ee.emit("e")
    assert order == ["a", "b"]
    assert ee.listeners("e") == [a, b]


def test_handler_exception_propagates_and_stops_the_emit() -> None:
    ee = EventEmitter()
    after: list[int] = []

    @ee.on("e")
    def boom() -> None:
        raise ValueError("boom")

    ee.on("e", lambda: after.append(1))
    with pytest.raises(ValueError, match="boom"):
        ee.emit("e")
    assert after == []


def test_event_names_may_be_any_hashable_with_dict_semantics() -> None:
    ee = EventEmitter()
    seen: list[Any] = []
    ee.on(Color.RED, lambda: seen.append("enum"))
    ee.on(("a", 1), lambda: seen.append("tuple"))
    ee.on(1, lambda: seen.append("int"))
    assert ee.emit(Color.RED) and ee.emit(("a", 1)) and ee.emit(1.0) and ee.emit(True)
    assert seen == ["enum", "tuple", "int", "int"]
    assert ee.event_names() == {Color.RED, ("a", 1), 1}
    with pytest.raises(TypeError):
        ee.emit([1])  # unhashable, as a dict key would be


def test_bound_methods_compare_equal_for_removal() -> None:
    class Owner:
        def __init__(self) -> None:
            self.n = 0

        def handle(self) -> None:
            self.n += 1

    o = Owner()
    ee = EventEmitter()
    ee.on("e", o.handle)
    ee.on("e", o.handle)  # an equal bound method: the same listener
    ee.emit("e")
    assert o.n == 1
    ee.remove_listener("e", o.handle)
    assert ee.emit("e") is False
    assert o.n == 1


# -- once ------------------------------------------------------------------------------------------


def test_once_runs_once_and_is_removed_before_running() -> None:
    ee = EventEmitter()
    calls: list[Any] = []

    @ee.once("e")
    def handler(x: Any) -> None:
        calls.append((x, ee.listeners("e")))
        ee.emit("e", "nested")  # re-entrant emit does not run it again

    assert handler.__name__ == "handler"
    assert ee.event_names() == {"e"}
    assert ee.emit("e", 1) is True
    assert calls == [(1, [])]
    assert ee.emit("e", 2) is False
    assert ee.event_names() == set()


def test_once_direct_call_returns_the_handler_and_can_be_removed() -> None:
    ee = EventEmitter()

    def handler() -> None:
        raise AssertionError("removed")

    assert ee.once("e", handler) is handler
    assert ee.listeners("e") == [handler]
    ee.remove_listener("e", handler)
    assert ee.event_names() == set()
    assert ee.emit("e") is False


def test_once_handler_is_still_callable_directly() -> None:
    ee = EventEmitter()
    n: list[int] = []

    @ee.once("e")
    def handler() -> None:
        n.append(1)

    handler()  # calling it yourself does not consume the registration
    assert ee.emit("e") is True
    assert n == [1, 1]


def test_once_and_on_mixed_keep_order() -> None:
    ee = EventEmitter()
    out: list[str] = []
    ee.on("e", lambda: out.append("on1"))
    ee.once("e", lambda: out.append("once"))
    ee.on("e", lambda: out.append("on2"))
    ee.emit("e")
    ee.emit("e")
    assert out == ["on1", "once", "on2", "on1", "on2"]


# -- the error event -------------------------------------------------------------------------------


def test_unhandled_error_event_raises_the_exception() -> None:
    ee = EventEmitter()
    err = KeyError("k")
    with pytest.raises(KeyError) as info:
        ee.emit("error", err)
    assert info.value is err


def test_unhandled_error_event_with_non_exception_raises_pyee_error() -> None:
    ee = EventEmitter()
    with pytest.raises(PyeeError, match="Uncaught, unspecified 'error' event: oops"):
        ee.emit("error", "oops")
    with pytest.raises(PyeeError, match="event: None"):
        ee.emit("error")


def test_handled_error_event_does_not_raise() -> None:
    ee = EventEmitter()
    got: list[BaseException] = []
    ee.on("error", got.append)
    err = RuntimeError("x")
    assert ee.emit("error", err) is True
    assert got == [err]


# -- new_listener ----------------------------------------------------------------------------------


def test_new_listener_fires_before_adding_and_not_for_itself() -> None:
    ee = EventEmitter()
    seen: list[Any] = []

    @ee.on("new_listener")
    def on_new(event: Any, f: Any) -> None:
        seen.append((event, f, f in ee.listeners(event)))

    def h() -> None:
        pass

    ee.on("e", h)
    ee.once("o", h)
    assert seen == [("e", h, False), ("o", h, False)]


# -- removing and inspecting -----------------------------------------------------------------------


def test_remove_listener_rules() -> None:
    ee = EventEmitter()

    def a() -> None:
        pass

    def b() -> None:
        pass

    ee.on("e", a)
    ee.on("e", b)
    ee.remove_listener("e", a)
    assert ee.listeners("e") == [b]
    with pytest.raises(KeyError):
        ee.remove_listener("e", a)  # the event is known, the handler is not
    ee.remove_listener("unknown", a)  # an unknown event: nothing happens
    ee.remove_listener("e", b)
    assert ee.event_names() == set()
    assert ee.listeners("e") == []


def test_remove_all_listeners() -> None:
    ee = EventEmitter()
    ee.on("a", module_handler)
    ee.on("b", module_handler)
    ee.remove_all_listeners("a")
    assert ee.listeners("a") == []
    assert ee.event_names() == {"a", "b"}  # as pyee: the event stays, with no handlers
    assert ee.emit("a") is False
    ee.remove_all_listeners()
    assert ee.event_names() == set()
    assert ee.emit("b") is False


def test_listeners_is_a_copy() -> None:
    ee = EventEmitter()
    ee.on("e", module_handler)
    got = ee.listeners("e")
    got.clear()
    assert ee.listeners("e") == [module_handler]
    assert ee.listeners("none") == []


def test_events_snapshot_matches_pyee_shape() -> None:
    ee = EventEmitter()

    def a() -> None:
        pass

    ee.on("e", a)
    assert ee._events == {"e": OrderedDict([(a, a)])}
    ee._events = {"x": OrderedDict([(a, a)])}
    assert ee.event_names() == {"x"}


def test_listener_removed_during_emit_still_runs_added_does_not() -> None:
    ee = EventEmitter()
    calls: list[str] = []

    def late() -> None:
        calls.append("late")

    def second() -> None:
        calls.append("second")

    def first() -> None:
        calls.append("first")
        if second in ee.listeners("e"):
            ee.remove_listener("e", second)
            ee.on("e", late)

    ee.on("e", first)
    ee.on("e", second)
    ee.emit("e")
    assert calls == ["first", "second"]
    calls.clear()
    ee.emit("e")
    assert calls == ["first", "late"]


# -- pickling --------------------------------------------------------------------------------------


def test_pickle_round_trip_drops_and_recreates_the_lock() -> None:
    ee = EventEmitter()
    ee.on("e", module_handler)
    ee.once("o", module_handler)
    setattr(ee, "custom", 42)
    assert "_lock" not in ee.__getstate__()
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        copy_ = pickle.loads(pickle.dumps(ee, protocol=proto))
        assert type(copy_) is EventEmitter
        assert copy_.listeners("e") == [module_handler]
        assert getattr(copy_, "custom") == 42
        assert copy_._lock is not ee._lock and not copy_._lock.locked()
        assert copy_.emit("o") is True
        assert copy_.emit("o") is False  # the once handler stayed a once handler
    assert copy.copy(ee).listeners("e") == [module_handler]
    assert copy.deepcopy(ee).listeners("e") == [module_handler]


# -- subclasses ------------------------------------------------------------------------------------


def test_subclass_overriding_emit_and_hooks() -> None:
    log: list[Any] = []

    class Logged(EventEmitter):
        def emit(self, event: Any, *args: Any, **kwargs: Any) -> bool:
            log.append(("emit", event))
            return super().emit(event, *args, **kwargs)

    class Wrapped(EventEmitter):
        def _emit_run(self, f: Any, args: Any, kwargs: Any) -> None:
            log.append(("run", f.__name__))
            super()._emit_run(f, args, kwargs)

    class Quiet(EventEmitter):
        def _emit_handle_potential_error(self, event: Any, error: Any) -> None:
            log.append(("unhandled", event, error))

    class Counting(EventEmitter):
        def _call_handlers(self, event: Any, args: Any, kwargs: Any) -> bool:
            log.append(("call", event))
            return super()._call_handlers(event, args, kwargs)

    def h(x: Any = None) -> None:
        log.append(("h", x))

    for cls in (Logged, Wrapped, Quiet, Counting):
        ee = cls()
        ee.on("e", h)
        ee.emit("e", 1)
    Quiet().emit("error", "x")
    assert log == [
        ("emit", "new_listener"),
        ("emit", "e"),
        ("h", 1),
        ("run", "h"),
        ("h", 1),
        ("unhandled", "new_listener", "e"),  # called for every unhandled event
        ("h", 1),
        ("call", "new_listener"),
        ("call", "e"),
        ("h", 1),
        ("unhandled", "error", "x"),
    ]


def test_subclass_attributes_and_weakrefs() -> None:
    class Mine(EventEmitter):
        def __init__(self) -> None:
            super().__init__()
            self.name = "mine"

    m = Mine()
    assert m.name == "mine"
    assert weakref.ref(m)() is m


def test_reference_cycles_are_collected() -> None:
    class Owner:
        def __init__(self) -> None:
            self.ee = EventEmitter()
            self.ee.on("e", self.handle)
            self.ee.once("o", self.handle)

        def handle(self) -> None:
            pass

    o = Owner()
    ref = weakref.ref(o)
    del o
    gc.collect()
    assert ref() is None


def test_threads_emitting_and_registering() -> None:
    ee = EventEmitter()
    count = [0]
    lock = threading.Lock()

    def inc() -> None:
        with lock:
            count[0] += 1

    ee.on("e", inc)

    def work(i: int) -> None:
        def mine() -> None:
            pass

        for _ in range(500):
            ee.on(f"x{i}", mine)
            ee.emit("e")
            ee.remove_listener(f"x{i}", mine)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count[0] == 2000
    assert ee.event_names() == {"e"}


# -- asyncio ----------------------------------------------------------------------------------------


def test_asyncio_coroutine_handlers_are_scheduled() -> None:
    async def main() -> list[Any]:
        ee = AsyncIOEventEmitter(loop=asyncio.get_running_loop())
        seen: list[Any] = []

        @ee.on("e")
        async def handler(x: Any) -> None:
            await asyncio.sleep(0)
            seen.append(x)

        @ee.once("o")
        async def once_handler() -> None:
            seen.append("once")

        assert ee.emit("e", 1) is True
        assert seen == []  # scheduled, not run
        assert not ee.complete
        ee.emit("o")
        ee.emit("o")
        await ee.wait_for_complete()
        assert ee.complete
        return seen

    assert sorted(map(str, asyncio.run(main()))) == ["1", "once"]


def test_asyncio_without_loop_uses_the_running_one() -> None:
    async def main() -> bool:
        ee = AsyncIOEventEmitter()
        done = asyncio.get_running_loop().create_future()

        @ee.on("e")
        async def handler() -> None:
            done.set_result(True)

        ee.emit("e")
        return await asyncio.wait_for(done, 1)

    assert asyncio.run(main()) is True


def test_asyncio_errors_go_to_the_error_event() -> None:
    async def main() -> list[Any]:
        ee = AsyncIOEventEmitter(loop=asyncio.get_running_loop())
        errors: list[Any] = []
        ee.on("error", errors.append)

        @ee.on("async")
        async def bad_async() -> None:
            raise ValueError("async")

        @ee.on("sync")
        def bad_sync() -> None:
            raise KeyError("sync")

        assert ee.emit("sync") is True  # does not raise
        ee.emit("async")
        await ee.wait_for_complete()
        await asyncio.sleep(0)
        return errors

    errors = asyncio.run(main())
    assert [type(e) for e in errors] == [KeyError, ValueError]


def test_asyncio_sync_error_without_error_handler_raises() -> None:
    async def main() -> None:
        ee = AsyncIOEventEmitter(loop=asyncio.get_running_loop())

        @ee.on("e")
        def bad() -> None:
            raise ValueError("no handler")

        with pytest.raises(ValueError, match="no handler"):
            ee.emit("e")

    asyncio.run(main())


def test_asyncio_returned_futures_are_tracked_and_cancel() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ee = AsyncIOEventEmitter(loop=loop)
        fut: asyncio.Future[None] = loop.create_future()
        errors: list[Any] = []
        ee.on("error", errors.append)
        ee.on("f", lambda: fut)

        @ee.on("slow")
        async def slow() -> None:
            await asyncio.sleep(10)

        ee.emit("f")
        ee.emit("slow")
        await asyncio.sleep(0)
        assert not ee.complete
        ee.cancel()
        assert ee.complete
        await asyncio.sleep(0)
        assert fut.cancelled()
        assert errors == []  # cancellation is not an error

    asyncio.run(main())


# -- executor ----------------------------------------------------------------------------------------


def test_executor_runs_handlers_on_the_pool() -> None:
    with ExecutorEventEmitter() as ee:
        assert isinstance(ee._executor, ThreadPoolExecutor)
        done = threading.Event()
        threads: list[str] = []

        @ee.on("e")
        def handler(x: int) -> None:
            threads.append(threading.current_thread().name)
            done.set()

        assert ee.emit("e", 1) is True
        assert done.wait(5)
    assert threads and threads[0] != threading.current_thread().name


def test_executor_errors_go_to_the_error_event_and_custom_executor() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    ee = ExecutorEventEmitter(executor=pool)
    assert ee._executor is pool
    got: list[BaseException] = []
    seen = threading.Event()

    @ee.on("error")
    def on_error(exc: BaseException) -> None:
        got.append(exc)
        seen.set()

    @ee.on("e")
    def bad() -> None:
        raise ValueError("in pool")

    ee.emit("e")
    assert seen.wait(5)
    assert isinstance(got[0], ValueError)
    ee.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        pool.submit(print)


def test_executor_once() -> None:
    with ExecutorEventEmitter() as ee:
        n: list[int] = []
        ee.once("e", lambda: n.append(1))
        ee.emit("e")
        ee.emit("e")
    assert n == [1]


# -- the same outcomes as pyee itself ------------------------------------------------------------


def _scenario(mod: Any) -> list[Any]:
    ee = mod.EventEmitter()
    out: list[Any] = []
    ee.on("new_listener", lambda ev, f: out.append(("new", ev)))

    def a(*args: Any, **kw: Any) -> None:
        out.append(("a", args, kw))

    def b(*args: Any, **kw: Any) -> None:
        out.append(("b", args))
        ee.remove_listener("e", a)

    ee.on("e", a)
    ee.once("e", b)
    ee.on("e", a)
    out.append(ee.emit("e", 1, k=2))
    out.append(ee.emit("e", 3))
    out.append(ee.emit("missing"))
    out.append(sorted(ee.event_names()))
    ee.remove_all_listeners("new_listener")
    out.append(sorted(ee.event_names()))
    ee.remove_all_listeners()
    out.append(ee.event_names())
    try:
        ee.emit("error", 5)
    except Exception as exc:
        out.append((type(exc).__name__, str(exc)))
    return out


def test_same_outcomes_as_pyee() -> None:
    assert _scenario(pyee) == _scenario(real_pyee)


def test_recursive_emit_and_mutation_inside_handlers() -> None:
    ee = EventEmitter()
    depth: list[int] = []

    @ee.on("down")
    def down(n: int) -> None:
        depth.append(n)
        if n:
            ee.emit("down", n - 1)

    ee.emit("down", 3)
    assert depth == [3, 2, 1, 0]

    def adder() -> None:
        ee.on("grow", lambda: None)

    ee.on("grow", adder)
    for _ in range(3):
        ee.emit("grow")
    assert len(ee.listeners("grow")) == 4  # adder, then three new lambdas
