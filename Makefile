# The two commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PYLIB  := $(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")

.PHONY: all venv ensure-redis build demo test lint test-rust test-loom test-python test-matrix typecheck docs \
	bench compare clean

all: test

$(VENV)/.deps: requirements-dev.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.deps

# One release build serves the demo, the tests and the benchmarks.
build: venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q

demo: build
	$(PY) -m nova demo

test-rust: venv
	PYO3_PYTHON=$(abspath $(PY)) LD_LIBRARY_PATH=$(PYLIB) cargo test --release -q

# The Redis backend's tests need redis-server: installed here when missing and we are root.
ensure-redis:
	@bash scripts/ensure-redis.sh

# Quick: the current .venv's interpreter against an in-place build with the test-only hooks
# (injected panics; never in a release wheel).
test-python: ensure-redis venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q --features extension-module,test-hooks
	$(PY) -m pytest -q

# The whole suite against a built wheel, once per CPython found (3.11 to 3.14, 3.13t, 3.14t), each
# in a fresh venv outside the tree; NOVA_PYTHONS="3.11 3.12" and NOVA_PYTEST_ARGS narrow it.
# The free-threaded 3.13t of scripts/free-threaded-python.sh joins the matrix when it is built.
FT_BIN := $(or $(NOVA_FT_PREFIX),$(HOME)/.cache/nova-python3.13t)/bin
test-matrix: ensure-redis venv
	PATH="$(FT_BIN):$$PATH" MATURIN=$(abspath $(VENV))/bin/maturin bash scripts/test-matrix.sh

# The lane-claim (src/claim.rs) and retry hand-off (src/handoff.rs) protocols, model-checked
# over every interleaving.
test-loom: venv
	LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg nova_loom" PYO3_PYTHON=$(abspath $(PY)) LD_LIBRARY_PATH=$(PYLIB) \
		cargo test --release -q --target-dir target/loom --lib -- claim handoff holdback

typecheck: venv
	$(PY) -m mypy --strict python/nova

# The documentation site, strict: a broken link or anchor, a page missing from the nav, or an
# object of docs/api.md that does not resolve fails it. The API reference is rendered from the
# docstrings and the .pyi stubs read statically (nothing imports nova: no build needed); the
# site goes to site/ (git-ignored). No --quiet: it hides the warnings that --strict counts.
docs: venv
	$(PY) -m mkdocs build --strict --site-dir site

# Formatting and lints: rustfmt (rustfmt.toml), clippy with warnings as errors, ruff
# (pyproject.toml), and stubtest: the hand-written stubs against the built extension.
lint: build
	cargo fmt --check
	PYO3_PYTHON=$(abspath $(PY)) cargo clippy --release -q --features test-hooks -- -D warnings
	$(PY) -m ruff check python/nova tests benches
	$(PY) -m ruff format --check python/nova tests benches
	$(PY) -m mypy.stubtest nova._core nova.compat._table --allowlist stubtest-allowlist.txt --ignore-unused-allowlist

test: ensure-redis build lint test-rust test-loom typecheck docs test-matrix

bench: build
	$(PY) -m pytest benches/bench_*.py -q --benchmark-only -p no:cacheprovider

compare: build
	$(PY) benches/compare.py

clean:
	rm -rf target $(VENV) python/nova/*.so
