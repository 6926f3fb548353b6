"""Free-threaded CPython: the core declares that it runs without the GIL (`gil_used = false`),
so importing nova leaves the GIL off; on a GIL build nothing changes."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def test_importing_nova_leaves_the_gil_as_the_interpreter_has_it() -> None:
    code = (
        "import sys, warnings; warnings.simplefilter('error'); import nova, nova._core; nova.Event('a'); "
        "print(getattr(sys, '_is_gil_enabled', lambda: True)())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == str(not FREE_THREADED), out.stderr


def test_event_metadata_changed_by_another_thread_while_it_is_copied() -> None:
    # With the GIL off another thread may change the metadata dict while Event() copies it:
    # each event keeps some whole state of it (or a clear ValidationError for a bad value seen
    # at that moment), never a crash or a panic.
    import threading

    import nova

    shared: dict[str, object] = {f"k{i}": "v" for i in range(20)}
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            shared[f"x{i % 50}"] = "v"
            shared.pop(f"x{(i + 25) % 50}", None)
            shared["bad"] = i  # not a str: an event made now is refused
            shared.pop("bad", None)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    made = refused = 0
    try:
        for _ in range(5000):
            try:
                event = nova.Event("a.b", 1, metadata=shared)
            except nova.ValidationError:
                refused += 1
                continue
            made += 1
            assert all(isinstance(v, str) for v in event.metadata.values())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert made > 0
