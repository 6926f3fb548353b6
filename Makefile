# The two commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PYLIB  := $(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")

.PHONY: all venv build demo test test-rust test-loom test-python typecheck bench compare clean

all: test

$(VENV)/.deps: requirements-dev.txt pyproject.toml
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

test-python: build
	$(PY) -m pytest -q

# The lane-claim protocol (src/claim.rs) model-checked over every interleaving.
test-loom: venv
	LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg nova_loom" PYO3_PYTHON=$(abspath $(PY)) LD_LIBRARY_PATH=$(PYLIB) \
		cargo test --release -q --target-dir target/loom --lib claim

typecheck: venv
	$(PY) -m mypy --strict python/nova

test: build test-rust test-loom test-python typecheck

bench: build
	$(PY) -m pytest benches/bench_*.py -q --benchmark-only -p no:cacheprovider

compare: build
	$(PY) benches/compare.py

clean:
	rm -rf target $(VENV) python/nova/*.so
