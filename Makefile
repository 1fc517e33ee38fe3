# Reelhouse: `make run` to start everything in one process, `make test` to run the test suite.
# Every target works from a fresh clone: the virtualenv is created and filled on first use.

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=

BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q

# The installs are keyed on the content of the files that decide them, so re-running a target is quick
# and any change to pyproject.toml or constraints.txt reinstalls.
DEPS_KEY := $(shell cat pyproject.toml constraints.txt 2>/dev/null | cksum | cut -d' ' -f1)
INSTALL_STAMP := $(VENV)/.installed-$(DEPS_KEY)
TEST_STAMP := $(VENV)/.installed-test-$(DEPS_KEY)

# Everything the web app is built from (not its build output or node_modules).
FRONTEND_SOURCES := $(shell find frontend \( -name node_modules -o -name out -o -name .next \) -prune \
                      -o -type f -print 2>/dev/null)

.DEFAULT_GOAL := help
.PHONY: help run install test soak lint frontend web-app-if-npm cluster cluster-down bench

help:
	@echo "make run       install into $(VENV) if needed, build the web app if npm is here, start Reelhouse"
	@echo "make install   create $(VENV) and install Reelhouse with the pinned versions of constraints.txt"
	@echo "make test      install the test extras, build the web app if npm is here, run pytest (PYTEST_ARGS='-k auth -x')"
	@echo "make soak      the reliability suite at full size (REELHOUSE_SOAK=1): faults, hostile input, security, load"
	@echo "make cluster   the distributed topology as separate processes behind nginx on :8080 (make cluster-down)"
	@echo "make bench     every benchmark beside its baseline, a table of figures vs targets (< 20 min); see BENCHMARKS.md"
	@echo "make lint      ruff check ."
	@echo "make frontend  npm ci && npm run build in frontend/ (served by the gateway at /)"

run: install web-app-if-npm
	exec $(BIN)/reelhouse up

# The web app is built when npm is here (the browser tests need it; without npm they fail under
# REELHOUSE_REQUIRE_INFRA=1 and are skipped otherwise).
web-app-if-npm:
	@if command -v npm >/dev/null 2>&1 && [ -f frontend/package.json ] \
	    && [ "$$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -ge 20 ]; then \
	  $(MAKE) --no-print-directory frontend/out/index.html; \
	else echo "Node.js 20+ with npm not found: the web app is not built (see make frontend)" >&2; fi

install: $(INSTALL_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALL_STAMP): | $(BIN)/python
	@echo "Installing Reelhouse into $(VENV) (pinned by constraints.txt) ..."
	$(PIP) -e . -c constraints.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

$(TEST_STAMP): | $(BIN)/python
	@echo "Installing Reelhouse with its test extras into $(VENV) (pinned by constraints.txt) ..."
	$(PIP) -e '.[test]' -c constraints.txt
	@rm -f $(VENV)/.installed-*
	@touch $@ $(INSTALL_STAMP)

test: $(TEST_STAMP) web-app-if-npm
	@echo "$(BIN)/python -m pytest $(PYTEST_ARGS)"
	@$(BIN)/python -m pytest $(PYTEST_ARGS) || { status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest ran no tests (its exit code 5)" >&2; fi; exit $$status; }

# The scenarios of RELIABILITY.md at full size (make test runs them at a size CI can afford).
soak: $(TEST_STAMP) web-app-if-npm
	REELHOUSE_SOAK=1 $(BIN)/python -m pytest tests/reliability -m reliability $(PYTEST_ARGS)

# Needs RabbitMQ on 127.0.0.1:5672 and nginx (Debian: nginx-light); data and logs in .cluster/.
cluster: install web-app-if-npm
	$(BIN)/reelhouse cluster up --detach --dir .cluster --port $${REELHOUSE_PORT:-8080}

cluster-down:
	$(BIN)/reelhouse cluster down --dir .cluster

# Each also runs on its own (see bench/README.md); BENCH_ARGS=--smoke runs tiny sizes (what CI checks).
bench: $(TEST_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

frontend:
	@[ -f frontend/package.json ] || { echo "frontend/package.json does not exist yet: the web app arrives with issue #7" >&2; exit 1; }
	@command -v npm >/dev/null 2>&1 || { echo "npm is not on PATH: install Node.js 20+ and npm to build the web app" >&2; exit 1; }
	cd frontend && npm ci && npm run build

# Rebuilt by `make run` only when a source file is newer than the last build.
frontend/out/index.html: $(FRONTEND_SOURCES)
	$(MAKE) --no-print-directory frontend
