"""Every ```python example of every docs/*.md page runs as written.

Each page's examples run in order in one fresh namespace (a later example may use what an
earlier one defined), in a temporary working directory, under a timeout. Markers, on the
last non-blank line before a fence:

- ``<!-- not-run: reason -->``: the block is shown, not run (a server it needs, a program
  that runs until it is signalled). Used sparingly; the reason is required.
- ``<!-- pytest -->``: the block is a pytest test module; it is written to a file and run by
  pytest (with the nova.testing plugin) and every test in it must pass.

A python block followed by a paragraph that is just ``prints`` and then a plain fence must
print exactly that (line by line; ``...`` in an expected line matches anything).

Pages about the Redis backend run against a private redis-server: the examples' address
``localhost:6379`` is pointed at it (see REDIS_PAGES).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import re
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.redis_server import RedisServer

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
_MARK = re.compile(r"<!--\s*(?P<kind>not-run|pytest)\s*(?::\s*(?P<reason>.*?))?\s*-->")

#: Pages whose examples talk to Redis at localhost:6379: run against a private server.
REDIS_PAGES = {"distributed.md"}

#: Blocks of pages this test does not own that cannot run as they are, keyed by the page and
#: a line the block contains: (reason, a module whose absence is the reason, or None). Each entry
#: should become a ``<!-- not-run -->`` marker on the page, or the module a development
#: dependency; test_known_exceptions_still_apply flags entries gone stale.
EXTERNAL_NOT_RUN: dict[tuple[str, str], tuple[str, str | None]] = {}

#: The conftest of the pytest runs: the nova.testing plugin, unless its entry point already
#: registered it.
PLUGIN_CONFTEST = """
import nova.testing.plugin as _nova_plugin

def pytest_configure(config):
    if not config.pluginmanager.is_registered(_nova_plugin):
        config.pluginmanager.register(_nova_plugin, "nova-testing")
"""


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, from 1
    code: str
    kind: str  # "run", "not-run" or "pytest"
    reason: str
    expected: str | None = None  # the output it must print, from a following "prints" fence

    @property
    def first_line(self) -> str:
        return next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")


def blocks_of(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    fences = list(_FENCE.finditer(text))
    out: list[Block] = []
    previous_end = 0
    for i, m in enumerate(fences):
        before = text[previous_end : m.start()]
        previous_end = m.end()
        if m.group("lang") != "python":
            continue
        code = textwrap.dedent(m.group("body"))
        last = next((ln for ln in reversed(before.splitlines()) if ln.strip()), "")
        mark = _MARK.search(last)
        kind, reason = "run", ""
        if mark is not None:
            kind, reason = mark.group("kind"), (mark.group("reason") or "").strip()
        expected = None
        if i + 1 < len(fences):
            nxt = fences[i + 1]
            between = text[m.end() : nxt.start()].strip()
            if between in ("prints", "prints:") and nxt.group("lang") in ("", "text"):
                expected = textwrap.dedent(nxt.group("body"))
        line = text.count("\n", 0, m.start()) + 1
        block = Block(path.name, line, code, kind, reason, expected)
        external = next(
            (
                v
                for (page, needle), v in EXTERNAL_NOT_RUN.items()
                if page == path.name and needle in code.splitlines()
            ),
            None,
        )
        if external is not None and kind == "run":
            reason, module = external
            if module is None or importlib.util.find_spec(module) is None:
                block = Block(path.name, line, code, "not-run", reason)
        out.append(block)
    return out


def check_output(block: Block, got: str) -> None:
    """The printed output against the block's ``prints`` fence, if it has one."""
    if block.expected is None:
        return
    want = [ln.rstrip() for ln in block.expected.strip("\n").splitlines()]
    have = [ln.rstrip() for ln in got.strip("\n").splitlines()]
    ok = len(want) == len(have) and all(
        re.fullmatch(".*".join(re.escape(part) for part in w.split("...")), h) is not None
        for w, h in zip(want, have)
    )
    assert ok, (
        f"docs/{block.page}, example at line {block.line} printed:\n{got}\n"
        f"but the page says it prints:\n{block.expected}"
    )


PAGES = sorted(p.name for p in DOCS.glob("*.md"))


def test_there_are_pages_with_examples() -> None:
    assert "index.md" in PAGES and "best-practices.md" in PAGES
    assert sum(len(blocks_of(DOCS / p)) for p in PAGES) >= 60


def test_not_run_markers_give_a_reason_and_are_rare() -> None:
    total = skipped = 0
    for page in PAGES:
        for block in blocks_of(DOCS / page):
            total += 1
            if block.kind == "not-run":
                skipped += 1
                assert block.reason, f"{page}:{block.line}: <!-- not-run: ... --> needs a reason"
    assert skipped <= max(3, total // 10), f"{skipped} of {total} examples are not run"


def test_known_exceptions_still_apply() -> None:
    for (page, needle), (_reason, module) in EXTERNAL_NOT_RUN.items():
        path = DOCS / page
        if not path.exists():
            continue
        blocks = [b for b in blocks_of(path) if needle in b.code.splitlines()]
        assert blocks, f"EXTERNAL_NOT_RUN entry for {page} ({needle!r}) matches no block: remove it"
        if module is None:
            assert all(b.kind == "not-run" for b in blocks)


def test_every_page_is_in_the_mkdocs_nav() -> None:
    config = MKDOCS.read_text(encoding="utf-8")
    assert re.search(r"^site_name:", config, re.M)
    assert re.search(r"^docs_dir:\s*docs\s*$", config, re.M) or "docs_dir" not in config
    nav = re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", config, re.M)
    assert sorted(nav) == PAGES, f"mkdocs.yml nav {sorted(nav)} != docs pages {PAGES}"


@contextlib.contextmanager
def _redis_for(page: str, tmp_path: Path) -> Iterator[str | None]:
    if page not in REDIS_PAGES:
        yield None
        return
    d = tmp_path / "redis"
    d.mkdir()
    server = RedisServer(d)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _rewrite_for_redis(code: str, url: str) -> str:
    code = re.sub(r"redis://localhost:6379(/\d+)?", url, code)
    return code.replace("redis.Redis()", f"redis.Redis.from_url({url!r})")


def _run_pytest_block(block: Block, pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PLUGIN_CONFTEST)
    name = f"test_{Path(block.page).stem.replace('-', '_')}_{block.line}"
    path = pytester.makepyfile(**{name: block.code})
    pytester.chdir()
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", str(path))
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes.get("passed", 0) >= 1 and not outcomes.get("skipped"), (
        f"docs/{block.page}:{block.line}: the pytest example did not pass:\n" + str(result.stdout)
    )


@pytest.fixture
def isolated_logging() -> Iterator[None]:
    """Examples may configure logging; put the root and nova loggers back afterwards."""
    saved = []
    for name in (None, "nova"):
        lg = logging.getLogger(name)
        saved.append((lg, list(lg.handlers), lg.level, lg.propagate))
    try:
        yield
    finally:
        for lg, handlers, level, propagate in saved:
            for h in list(lg.handlers):
                if h not in handlers:
                    lg.removeHandler(h)
            lg.setLevel(level)
            lg.propagate = propagate


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("isolated_logging")
@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    blocks = blocks_of(DOCS / page)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # A real module, so that classes defined by the examples (dataclasses, pickling) resolve it.
    module = types.ModuleType(f"docs_{Path(page).stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    with _redis_for(page, tmp_path) as redis_url:
        for block in blocks:
            if block.kind == "not-run":
                continue
            if block.kind == "pytest":
                _run_pytest_block(block, request.getfixturevalue("pytester"))
                monkeypatch.chdir(work)
                continue
            code = block.code if redis_url is None else _rewrite_for_redis(block.code, redis_url)
            compiled = compile(code, f"docs/{page}:{block.line}", "exec")
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    exec(compiled, namespace)  # noqa: S102 - the docs are ours
            except BaseException as exc:
                raise AssertionError(
                    f"docs/{page}, example at line {block.line} failed: {type(exc).__name__}: {exc}\n"
                    f"--- its output ---\n{out.getvalue()[-2000:]}"
                ) from exc
            check_output(block, out.getvalue())


def test_the_harness_itself(tmp_path: Path, pytester: pytest.Pytester) -> None:
    """Markers are read, a wrong ``prints`` fence and a failing pytest block are caught."""
    page = tmp_path / "sample.md"
    page.write_text(
        textwrap.dedent("""
        ```python
        print("a", 1)
        print("b")
        ```

        prints

        ```
        a ...
        b
        ```

        <!-- not-run: needs a server -->
        ```python
        raise SystemExit("never run")
        ```

        <!-- pytest -->
        ```python
        def test_fails():
            assert 1 == 2
        ```
    """),
        encoding="utf-8",
    )
    first, skipped, pytest_block = blocks_of(page)
    assert (first.kind, skipped.kind, skipped.reason, pytest_block.kind) == (
        "run",
        "not-run",
        "needs a server",
        "pytest",
    )
    check_output(first, "a 1\nb\n")
    with pytest.raises(AssertionError, match="but the page says it prints"):
        check_output(first, "a 1\nc\n")
    with pytest.raises(AssertionError, match="did not pass"):
        _run_pytest_block(pytest_block, pytester)
