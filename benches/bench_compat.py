"""pytest-benchmark: nova.compat beside pyee and blinker, one no-op handler each.

.venv/bin/python -m pytest benches/bench_compat.py --benchmark-only
"""

from __future__ import annotations

from typing import Any

import blinker
import pyee
import pytest

import nova.compat.blinker
import nova.compat.pyee


def noop(*_a: Any, **_k: Any) -> None:
    return None


@pytest.mark.parametrize("module", [pyee, nova.compat.pyee], ids=["pyee", "nova-pyee"])
def test_emit_one_noop_handler(benchmark: Any, module: Any) -> None:
    ee = module.EventEmitter()
    ee.on("event", noop)
    benchmark.group = "pyee emit"
    assert benchmark(ee.emit, "event", 1) is True


@pytest.mark.parametrize("module", [blinker, nova.compat.blinker], ids=["blinker", "nova-blinker"])
def test_send_one_noop_receiver(benchmark: Any, module: Any) -> None:
    sig = module.Signal()
    sig.connect(noop)
    benchmark.group = "blinker send"
    assert len(benchmark(sig.send, None)) == 1


@pytest.mark.parametrize("module", [blinker, nova.compat.blinker], ids=["blinker", "nova-blinker"])
def test_send_with_sender_filter(benchmark: Any, module: Any) -> None:
    class Sender:
        pass

    sender = Sender()
    sig = module.Signal()
    sig.connect(noop)
    sig.connect(noop, sender=sender)
    benchmark.group = "blinker send (ANY + sender)"
    assert len(benchmark(sig.send, sender, value=1)) == 1


@pytest.mark.parametrize("module", [pyee, nova.compat.pyee], ids=["pyee", "nova-pyee"])
def test_once_register_and_emit(benchmark: Any, module: Any) -> None:
    ee = module.EventEmitter()

    def once_cycle() -> bool:
        ee.once("event", noop)
        return bool(ee.emit("event"))

    benchmark.group = "pyee once + emit"
    assert benchmark(once_cycle) is True
