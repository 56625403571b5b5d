# The two commands a new user runs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
OUT ?= out
HOST ?= 127.0.0.1
PORT ?= 8080

# The ABR simulator's results over the bundled traces, into docs/abr-results.md.
abr-report: install
	$(PY) samples/traces/report.py


.PHONY: lock stress-memory abr-report bench-deps demo test venv install install-test system-deps node-deps sample package lint typecheck pytest bench stress clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

# Editable, like install-test: both share .venv, and a non-editable snapshot here
# left `cadenza` in this venv running the code of the last `make bench` or `make
# demo` (any edit since then unseen) until `make test` reinstalled it editable.
install: $(PY)
	$(PIP) install --quiet -e .

install-test: $(PY)
	$(PIP) install --quiet -e '.[test]'

# System packages the tests drive for real: nginx (the CDN), Chromium (the players' browser),
# Node.js/npm (playwright-core), redis-server (the shared session store), wrk (the origin load
# test). Installed from Debian only when missing.
system-deps:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing="$$missing redis-server"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

sample: install
	$(PY) samples/make_sample.py samples/sample.flac

package: install
	$(VENV)/bin/cadenza package samples/sample.flac --out $(OUT)

# Package the sample, then serve it with the demo player page (players from npm, no internet).
demo: install package node-deps
	@echo "packaged samples/sample.flac into $(OUT)/"
	@echo "open http://$(HOST):$(PORT)/ in a browser (Ctrl-C to stop)"
	$(VENV)/bin/cadenza serve $(OUT) --host $(HOST) --port $(PORT)

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-test
	$(VENV)/bin/mypy

# hls.js, dash.js, Shaka Player and playwright-core, pinned by package-lock.json.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

node-deps: system-deps node_modules/.installed

pytest: install-test node-deps
	$(VENV)/bin/pytest

test: install-test node-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

# Benchmarks against ffmpeg and nginx (peers installed here: the bench extra, Debian's wrk and
# nginx). Writes bench/results.json, bench/results.md and docs/benchmarks.md; never run by `make test`.
bench-deps: install
	$(PIP) install --quiet -e '.[bench]'
	@missing=""; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

bench: bench-deps
	$(PY) -m bench.run

# The checks with wall-clock and memory bounds (pytest marker `stress`: make test skips them,
# since a loaded machine breaks a bound without any fault in the code), with the origin load
# test at full length: 1,000 connections for 60 s (make test runs it for 10 s, unbounded).
stress: install-test system-deps
	CADENZA_STRESS=1 CADENZA_LOAD_S=60 $(VENV)/bin/pytest -m stress tests -q -s

# Peak RSS packaging a 3-hour track against a 3-minute one (~25 min); writes
# bench/stress-memory.json. STRESS_LONG_S sets the long track's length.
stress-memory: bench-deps
	$(PY) -m bench.stress_memory

# The image's Python dependencies, locked with hashes (deploy/Dockerfile installs only these):
# run after changing pyproject.toml's dependencies.  The commands are the ones the locks quote.
LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --annotation-style line
lock: $(PY)
	$(PIP) install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) -o deploy/requirements.lock
	$(VENV)/bin/uv pip compile deploy/requirements-build.in $(LOCK_FLAGS) -o deploy/requirements-build.lock

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info
