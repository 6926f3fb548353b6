"""A bare `import nova` loads only what every use needs: the native core, the errors and the
standard library's basics. asyncio, dataclasses, sqlite3, ssl, the store, the resilience
policies and the components load on first use (issue: fast on the path users take, item 6)."""

from __future__ import annotations

import subprocess
import sys

import nova

# Modules a bare `import nova` must not load.
HEAVY = [
    "asyncio",
    "dataclasses",
    "sqlite3",
    "ssl",
    "json",
    "concurrent.futures",
    "inspect",
    "nova.bus",
    "nova.emitter",
    "nova.store",
    "nova.resilience",
    "nova._types",
    "nova._aio",
    "nova.metrics",
    "nova.tracing",
]


def loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return set(out.split())


def test_a_bare_import_loads_none_of_the_heavy_modules() -> None:
    loaded = loaded_by("import nova")
    assert "nova._core" in loaded and "nova.errors" in loaded
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_every_public_name_is_there_on_first_use() -> None:
    for name in nova.__all__:
        assert getattr(nova, name) is not None, name
    assert set(nova.__all__) <= set(dir(nova))
    loaded = loaded_by("import nova\nnova.Emitter\nnova.TopicConfig")
    assert {"nova.emitter", "nova._types"} <= loaded
    assert "nova.store" not in loaded  # only what was asked for


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        nova.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("no AttributeError")
