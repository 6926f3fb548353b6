"""Issue 15, item 10: event ids made in a forked child never repeat the parent's.

The id generator is per thread and seeded on first use; a child made by ``os.fork()`` inherits
the parent's memory, hence its seeded generator. Parent and child then make ids in the same
few milliseconds (UUIDv7: same time prefix), so only the random part keeps them apart — it
must be reseeded in the child.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

import pytest

import nova

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="needs os.fork"),
    # 3.12+ warns about fork() in a process with threads (pytest's, Nova's workers): the
    # child here only makes ids and leaves with os._exit.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

N = 100_000


def _ids(n: int) -> list[str]:
    return [nova.Event("x").id for _ in range(n)]


def _fork_and_compare(make_in_parent_first: int, *, in_thread: bool = False) -> None:
    """Fork and compare, again (up to 5 times) when the machine was too busy for parent and
    child to make ids in the same milliseconds (then a shared random part could not show)."""
    for _ in range(5):
        if _fork_once(make_in_parent_first, in_thread=in_thread):
            return
    raise AssertionError("parent and child never ran in the same milliseconds; the test proves nothing")


def _fork_once(make_in_parent_first: int, *, in_thread: bool = False) -> bool:
    # Seed the generator of the thread that forks (and so of the child's only thread).
    warm = _ids(make_in_parent_first)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "child-ids.txt")
        go = time.time() + 0.05  # both start together, within the same ~50 ms window
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                while time.time() < go:
                    pass
                ids = _ids(N)
                with open(path, "w", encoding="ascii") as f:
                    f.write("\n".join(ids))
                code = 0
            finally:
                os._exit(code)
        while time.time() < go:
            pass
        parent_ids = _ids(N)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        with open(path, encoding="ascii") as f:
            child_ids = f.read().split("\n")
    assert len(child_ids) == N and len(set(child_ids)) == N
    assert len(set(parent_ids)) == N
    common = set(parent_ids) & set(child_ids)
    assert not common, f"{len(common)} ids made by both parent and child, e.g. {next(iter(common))}"
    assert not set(warm) & set(child_ids)
    # Same time window: the ids share their millisecond prefixes, so a repeated random part
    # would have shown as shared ids.
    return bool({i[:13] for i in parent_ids} & {i[:13] for i in child_ids})


def test_parent_and_forked_child_make_different_ids() -> None:
    _fork_and_compare(1000)


def test_after_a_single_id_before_fork() -> None:
    _fork_and_compare(1)


def test_forked_from_a_thread_that_made_ids() -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _fork_and_compare(1000)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors == []


def test_two_children_differ_from_each_other() -> None:
    _ids(10)
    with tempfile.TemporaryDirectory() as tmp:
        go = time.time() + 0.05
        pids = []
        for k in range(2):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    while time.time() < go:
                        pass
                    with open(os.path.join(tmp, f"{k}.txt"), "w", encoding="ascii") as f:
                        f.write("\n".join(_ids(20_000)))
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        sets = []
        for k in range(2):
            with open(os.path.join(tmp, f"{k}.txt"), encoding="ascii") as f:
                sets.append(set(f.read().split("\n")))
    assert len(sets[0]) == len(sets[1]) == 20_000
    assert not sets[0] & sets[1]
