"""The command line (API section 16): `nova bench`, `nova tune`, `nova demo`, through a
subprocess (`python -m nova`, the `nova` console script) and through `nova.cli.main([...])`."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nova.cli import BENCH_NAMES, TuneCell, main, recommend
from support.redis_server import free_port

TESTS = Path(__file__).resolve().parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
ENV.pop("NOVA_DEBUG", None)

DEMO_COUNTS = {
    "events processed": 232,
    "retried": 18,
    "dead-lettered": 7,
    "redriven": 7,
    "duplicates skipped": 10,
    "rejected": 1,
    "replayed": 137,
}


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nova", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd or TESTS,
        timeout=timeout,
    )


def demo_counts(stdout: str) -> dict[str, int]:
    summary = stdout.split("\nSummary\n", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^  ([a-z -]+?):\s+(\d+)", summary, re.M)}


def assert_one_error_line(err: str, *needles: str) -> None:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def handlers_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))


# -- help, and the optional dependencies ------------------------------------------------------


def test_help_through_python_m_imports_neither_rich_nor_matplotlib() -> None:
    code = textwrap.dedent("""
        import sys
        import nova
        import nova.cli
        assert "rich" not in sys.modules and "matplotlib" not in sys.modules
        status = nova.cli.main(["--help"])
        assert status == 0, status
        assert "rich" not in sys.modules and "matplotlib" not in sys.modules
        print("clean")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "bench" in proc.stdout and "tune" in proc.stdout and "demo" in proc.stdout
    assert proc.stdout.strip().endswith("clean")
    help_proc = run_cli("tune", "--help")
    assert help_proc.returncode == 0 and "MODULE:HANDLER" in help_proc.stdout


def test_without_rich_and_matplotlib(tmp_path: Path) -> None:
    """rich and matplotlib made unimportable: plain progress and tables, `--plot` refused."""
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("rich", "matplotlib"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None
        sys.meta_path.insert(0, Block())
        import importlib.util
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in ("rich", "matplotlib") else real(name, *a)
        import nova.cli
        status = nova.cli.main(["bench", "--events", "300"])
        assert status == 0, status
        status = nova.cli.main(["tune", "tune_handlers:io_bound", "--workers", "1", "--buffer", "10",
                                "--seconds", "0.2"])
        assert status == 0, status
        status = nova.cli.main(["tune", "tune_handlers:io_bound", "--plot", {str(tmp_path / "x.png")!r}])
        print("plot status", status)
        assert "rich" not in sys.modules and "matplotlib" not in sys.modules
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=TESTS, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "nova bench: [1/9] emitter-sync ..." in proc.stderr  # plain progress lines
    assert "nova tune: [1/1] workers=1 buffer=10 ..." in proc.stderr
    assert "workload" in proc.stdout and "emitter-sync" in proc.stdout and "┃" not in proc.stdout
    assert "Recommended:" in proc.stdout
    assert "plot status 2" in proc.stdout
    assert "--plot" in proc.stderr and "needs matplotlib" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


# -- nova bench ---------------------------------------------------------------------------------


def check_bench_doc(doc: dict[str, object]) -> None:
    assert set(doc) == {"python", "cores", "results"}
    assert isinstance(doc["python"], str) and doc["python"].count(".") == 2
    assert isinstance(doc["cores"], int) and doc["cores"] >= 1
    results = doc["results"]
    assert isinstance(results, list)
    names = [r["name"] for r in results]
    # pyee and blinker are installed in the development environment: all nine are there.
    assert names == list(BENCH_NAMES)
    for r in results:
        assert set(r) == {"name", "events_per_s", "p50_us", "p99_us"}
        assert isinstance(r["events_per_s"], float) and r["events_per_s"] > 0
        if r["name"] == "python-loop":
            assert r["p50_us"] is None and r["p99_us"] is None
        else:
            assert isinstance(r["p50_us"], float) and isinstance(r["p99_us"], float)
            assert 0 < r["p50_us"] <= r["p99_us"]


def test_bench_json_through_the_console_script() -> None:
    script = Path(sys.executable).parent / "nova"
    assert script.exists(), "the `nova` console script is not installed (pyproject [project.scripts])"
    proc = subprocess.run(
        [str(script), "bench", "--json", "--events", "300"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    check_bench_doc(json.loads(proc.stdout))  # stdout is exactly the object


def test_bench_json_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--events", "200", "--json"]) == 0
    out = capsys.readouterr().out
    check_bench_doc(json.loads(out))


def test_bench_table_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--events", "200"]) == 0
    captured = capsys.readouterr()
    for name in BENCH_NAMES:
        assert name in captured.out
    assert "events/s" in captured.out and "p99" in captured.out
    assert "nova bench: [9/9] blinker ..." in captured.err  # stderr is not a terminal here


# -- nova tune ------------------------------------------------------------------------------------


def test_tune_recommends_a_grid_cell_and_draws_a_heat_map(
    tmp_path: Path, handlers_on_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "tune.png"
    status = main(
        [
            "tune",
            "tune_handlers:io_bound",
            "--workers",
            "1,2",
            "--buffer",
            "10,100",
            "--seconds",
            "0.15",
            "--plot",
            str(png),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "events/s" in out and "p99 ms" in out and "peak MiB" in out
    m = re.search(r"nova\.WorkerPool\(workers=(\d+), queue_size=\d+\)", out)
    assert m, out
    b = re.search(r"^  buffer_size=(\d+)$", out, re.M)
    assert b, out
    assert int(m.group(1)) in (1, 2) and int(b.group(1)) in (10, 100)
    assert "Reason: " in out
    assert "Note: " in out  # on the edge of the grid, or inside it: said either way
    width, height = png_size(png)
    assert width > 300 and height > 100


def test_tune_through_a_subprocess(tmp_path: Path) -> None:
    png = tmp_path / "heat.png"
    proc = run_cli(
        "tune",
        "tune_handlers:io_bound",
        "--workers",
        "1,4",
        "--buffer",
        "50",
        "--seconds",
        "0.1",
        "--plot",
        str(png),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Recommended:" in proc.stdout and "buffer_size=50" in proc.stdout
    # A one-value buffer grid has no edge to speak of; the worker grid does.
    assert "--workers" in proc.stdout or "inside the grid" in proc.stdout
    assert png.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    "target",
    [
        "tune_handlers:io_bound_async",  # async def
        "tune_handlers:as_listener",  # a nova.Listener
        "tune_handlers:Nested.handler",  # a dotted attribute
    ],
)
def test_tune_handler_shapes(target: str, handlers_on_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    # Long enough for the first async listener's loop thread to start and finish events on a
    # loaded machine (0.05 s was not, once, on 3.13t with the GIL off in CI).
    assert main(["tune", target, "--workers", "1", "--buffer", "10", "--seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "nova.WorkerPool(workers=1" in out and "buffer_size=10" in out


def test_tune_counts_handler_errors(handlers_on_path: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["tune", "tune_handlers:sometimes_fails", "--workers", "2", "--buffer", "100", "--seconds", "0.1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "warning: the handler raised in" in out and "ValueError: every fourth event is bad" in out


def cell(w: int, b: int, rate: float, p99: float | None, mem: float = 1.0, done: int = 100) -> TuneCell:
    return TuneCell(w, b, rate, p99, mem, done, 0)


def test_recommend_prefers_throughput_then_latency_then_fewer_resources() -> None:
    cells = [
        cell(1, 10, 1000, 5.0),
        cell(1, 100, 1000, 50.0),
        cell(2, 10, 1990, 2.6),
        cell(2, 100, 2000, 20.0),
        cell(4, 10, 2010, 2.5),
        cell(4, 100, 1500, 30.0),
    ]
    rec = recommend(cells, [1, 2, 4], [10, 100])
    # 2x10 and 4x10 are within 5% of the best rate and within 10% of the lowest p99:
    # the fewer workers win.
    assert (rec.cell.workers, rec.cell.buffer) == (2, 10)
    assert "within 5% of the best" in rec.reason and "fewest workers" in rec.reason
    assert any("smallest tried (10)" in n for n in rec.edge_notes)
    assert not any("worker count" in n for n in rec.edge_notes)  # 2 is inside 1..4


def test_recommend_says_when_the_best_is_on_the_edge() -> None:
    cells = [cell(w, b, 1000.0 * w, 1.0 + b / 1000) for w in (1, 2, 4) for b in (10, 100, 1000)]
    rec = recommend(cells, [1, 2, 4], [10, 100, 1000])
    assert (rec.cell.workers, rec.cell.buffer) == (4, 10)
    assert "highest throughput" in rec.reason
    assert any("largest tried (4)" in n and "--workers 4,8,16" in n for n in rec.edge_notes)
    cells = [cell(w, b, 1000.0, 9.0 - w - b / 1000) for w in (1, 2) for b in (10, 1000)]
    rec = recommend(cells, [1, 2], [10, 1000])
    assert (rec.cell.workers, rec.cell.buffer) == (2, 1000)
    assert any("buffer is the largest tried (1000)" in n for n in rec.edge_notes)
    inside = recommend([cell(w, 100, 100.0 if w == 2 else 50.0, 1.0) for w in (1, 2, 4)], [1, 2, 4], [100])
    assert inside.cell.workers == 2 and inside.edge_notes == []


def test_recommend_without_any_finished_call() -> None:
    with pytest.raises(RuntimeError, match="finished no event"):
        recommend([cell(1, 10, 0.0, None, done=0)], [1], [10])


# -- bad arguments: status 2, one line on stderr, no traceback ------------------------------------


BAD_ARGUMENTS = [
    (["tune", "no_such_module_xyz:handle"], ["no_such_module_xyz"]),
    (["tune", "tune_handlers:missing"], ["'missing'"]),
    (["tune", "tune_handlers"], ["'tune_handlers'", "MODULE:HANDLER"]),
    (["tune", "tune_handlers:not_callable"], ["not callable"]),
    (["tune", "tune_handlers:io_bound", "--workers", "1,x"], ["--workers", "'x'"]),
    (["tune", "tune_handlers:io_bound", "--workers", "0"], ["--workers", "'0'"]),
    (["tune", "tune_handlers:io_bound", "--buffer", "-5"], ["--buffer", "'-5'"]),
    (["tune", "tune_handlers:io_bound", "--buffer", "100,,1000"], ["--buffer"]),
    (["tune", "tune_handlers:io_bound", "--buffer", "2.5"], ["--buffer", "'2.5'"]),
    (["tune", "tune_handlers:io_bound", "--seconds", "0"], ["--seconds", "'0'"]),
    (["tune", "tune_handlers:io_bound", "--seconds", "soon"], ["--seconds", "'soon'"]),
    (
        ["tune", "tune_handlers:io_bound", "--plot", "/nonexistent-dir-xyz/heat.png"],
        ["--plot", "/nonexistent-dir-xyz/heat.png"],
    ),
    (["tune"], ["MODULE:HANDLER"]),
    (["bench", "--events", "0"], ["--events", "'0'"]),
    (["bench", "--events", "many"], ["--events", "'many'"]),
    (["bench", "--frobnicate"], ["--frobnicate"]),
    (["demo", "--redis", "http://localhost:6379"], ["--redis", "http://localhost:6379"]),
    (["demo", "--redis", "redis://localhost:6379/zero"], ["--redis", "'zero'"]),
    (["demo", "--redis", "redis://localhost:99999/0"], ["--redis"]),
    (["frobnicate"], ["'frobnicate'"]),
    ([], ["required"]),
]


@pytest.mark.parametrize(
    ("argv", "needles"), BAD_ARGUMENTS, ids=[" ".join(a) or "(none)" for a, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_through_main(
    argv: list[str], needles: list[str], handlers_on_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_error_line(captured.err, *needles)


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["tune", "no_such_module_xyz:handle"], ["no_such_module_xyz"]),
        (["tune", "tune_handlers:io_bound", "--workers", "2,-1"], ["'-1'"]),
        (
            ["tune", "tune_handlers:io_bound", "--plot", "/nonexistent-dir-xyz/heat.png"],
            ["/nonexistent-dir-xyz/heat.png"],
        ),
        (["demo", "--redis", "ftp://example"], ["ftp://example"]),
    ],
)
def test_bad_arguments_through_a_subprocess(argv: list[str], needles: list[str]) -> None:
    proc = run_cli(*argv)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_error_line(proc.stderr, *needles)


def test_a_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken_handlers.py").write_text("raise RuntimeError('config missing\\nsecond line')\n")
    (tmp_path / "syntax_handlers.py").write_text("def handler(event:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["tune", "broken_handlers:handle"]) == 2
    assert_one_error_line(capsys.readouterr().err, "broken_handlers", "RuntimeError", "config missing")
    assert main(["tune", "syntax_handlers:handler"]) == 2
    assert_one_error_line(capsys.readouterr().err, "syntax_handlers", "SyntaxError")


def test_a_plot_path_that_is_a_directory(
    tmp_path: Path, handlers_on_path: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tune", "tune_handlers:io_bound", "--plot", str(tmp_path)]) == 2
    assert_one_error_line(capsys.readouterr().err, "--plot", str(tmp_path), "directory")


def test_an_unreachable_redis_server(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert main(["demo", "--redis", url]) == 2
    assert_one_error_line(capsys.readouterr().err, "--redis", url)


def test_credentials_never_shown(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    assert main(["demo", "--redis", url]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "--redis")
    assert "hunter2" not in err


# -- nova demo ------------------------------------------------------------------------------------


def test_demo_through_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert demo_counts(out) == DEMO_COUNTS
    assert "16 partitions keyed by customer_id" in out
    assert "rejected 'OrderCreated'" in out
    assert "metrics: nova_events_processed_total" in out  # prometheus_client is installed
    assert "undelivered 0" in out and "4 dead letters kept on disk" in out


def test_demo_through_a_subprocess_is_deterministic() -> None:
    first, second = run_cli("demo"), run_cli("demo")
    for proc in (first, second):
        assert proc.returncode == 0, proc.stderr
        assert demo_counts(proc.stdout) == DEMO_COUNTS
        assert "Traceback" not in proc.stderr


def test_demo_result_object() -> None:
    import io

    from nova.demo import run_demo

    result = run_demo(out=io.StringIO())
    assert (result.orders, result.duplicates, result.orders_paid, result.receipts_sent) == (120, 10, 116, 116)
    assert (result.retried, result.retried_events, result.dead_lettered) == (18, 15, 7)
    assert (result.redriven, result.dead_letters_left, result.replayed) == (7, 4, 137)
    assert result.duplicates_skipped == 10 and result.undelivered == 0 and result.backend == "in-process"


def test_demo_on_redis(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert main(["demo", "--redis", redis_url]) == 0
    out = capsys.readouterr().out
    assert "on the redis bus" in out
    assert demo_counts(out) == DEMO_COUNTS


def test_module_entry_point_exists() -> None:
    import nova.__main__  # noqa: F401  (importing it must not run the CLI)

    assert nova.cli.main is main
