"""nova.WorkerPool (API section 4)."""

from __future__ import annotations

import threading
import time

import pytest

import nova


def test_submit_returns_futures_and_stats() -> None:
    with nova.WorkerPool(2, name="p") as pool:
        futs = [pool.submit(pow, 2, i) for i in range(10)]
        assert [f.result(5) for f in futs] == [2**i for i in range(10)]
        f = pool.submit(lambda *, x: x * 2, x=21)
        assert f.result(5) == 42
        err = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            err.result(5)
        s = pool.stats()
        assert s.workers == 2 and s.completed >= 12
    with pytest.raises(nova.PoolClosed):
        pool.submit(print)


def test_queue_size_bounds_waiting_tasks() -> None:
    pool = nova.WorkerPool(1, queue_size=2)
    gate = threading.Event()
    pool.submit(gate.wait)
    time.sleep(0.05)
    pool.submit(gate.wait)
    pool.submit(gate.wait)
    with pytest.raises(nova.BufferFull):
        pool.submit(gate.wait)
    gate.set()
    pool.close(5)


def test_close_lets_queued_work_finish() -> None:
    pool = nova.WorkerPool(1)
    done: list[int] = []
    for i in range(20):
        pool.submit(lambda i=i: (time.sleep(0.001), done.append(i)))
    pool.close()
    assert done == list(range(20))


def test_workers_bound_concurrency() -> None:
    pool = nova.WorkerPool(3)
    running = 0
    peak = 0
    lock = threading.Lock()

    def job() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    futs = [pool.submit(job) for _ in range(12)]
    for f in futs:
        f.result(5)
    pool.close()
    assert peak == 3


def test_bad_arguments() -> None:
    with pytest.raises(nova.ValidationError, match="workers"):
        nova.WorkerPool(0)
    with pytest.raises(nova.ValidationError, match="queue_size"):
        nova.WorkerPool(1, queue_size=0)
