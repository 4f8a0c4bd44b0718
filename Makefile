# modellens task runner. `make run` serves the default model locally; `make test` installs everything the tests
# need (Python packages and Debian's prometheus) and runs the whole suite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL_DIR ?= models/diabetes

.PHONY: help install install-dev system-deps model run test test-fast lint format bench clean

help:
	@echo "make run    - train the default model if missing and serve it on 127.0.0.1:8000 (no Docker)"
	@echo "make test   - install test dependencies (incl. Debian's prometheus) and run every test"
	@echo "make lint   - import contracts, ruff and mypy"
	@echo "make test-fast - the in-process tests only, in about a minute"

# The virtualenv, with the runtime dependencies (and, for tests, the dev extra). Re-run when pyproject changes.
$(BIN)/.runtime: pyproject.toml
	@scripts/ensure-venv "$(PYTHON)"
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@echo "Installing modellens and its dependencies into $(VENV) (a few minutes on a fresh machine; once)..."
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e .
	touch $@

$(BIN)/.dev: $(BIN)/.runtime
	@echo "Installing the test and lint tools into $(VENV)..."
	$(BIN)/python -m pip install --progress-bar off -e '.[dev]'
	touch $@

# The Kubernetes manifests' offline checks (checkov, kubernetes-validate) in a virtualenv of their own: checkov's
# pins conflict with the test tools'. tests/test_kubernetes.py runs them from there.
K8S_CHECKS ?= .venv-k8s
$(K8S_CHECKS)/.installed: deploy/kubernetes/checks-requirements.txt
	[ -x $(K8S_CHECKS)/bin/python ] || $(PYTHON) -m venv $(K8S_CHECKS)
	@echo "Installing the Kubernetes manifest checks into $(K8S_CHECKS)..."
	$(K8S_CHECKS)/bin/python -m pip install --quiet --upgrade pip
	$(K8S_CHECKS)/bin/python -m pip install --progress-bar off -r deploy/kubernetes/checks-requirements.txt
	touch $@

install: $(BIN)/.runtime
install-dev: $(BIN)/.dev

# Debian packages the tests use: prometheus + promtool (apt never starts the service), wrk for benchmarks.
system-deps:
	@scripts/ensure-system-deps

model: install
	$(BIN)/modellens train --if-missing --output $(MODEL_DIR)

run: model
	MODELLENS_MODEL_DIR=$(MODEL_DIR) $(BIN)/modellens serve

# The whole suite: the import contracts (pyproject.toml, [tool.importlinter]), then every test, the slow ones
# (real gunicorn, Prometheus, wrk) and the property tests at their full example count included. Two pytest-xdist
# workers: every test that starts a process takes its own free loopback ports and temp dirs, and most of them
# wait on sockets, so the benchmark smoke run (the longest test) overlaps the rest of the suite.
test: install-dev system-deps $(K8S_CHECKS)/.installed
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -n 2

# The tier to run while editing: no processes started, property tests at a small example count, both cores.
test-fast: install-dev system-deps
	HYPOTHESIS_PROFILE=fast $(BIN)/python -m pytest -m "not slow" -n 2

lint: install-dev
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks (BENCHMARKS.md): every configuration under gunicorn, driven by Debian's wrk, interleaved over rounds,
# plus in-process micro-benchmarks and a 1M-request memory run. `make bench` writes benchmarks/results/<time>.{json,md}
# and refreshes BENCHMARKS.md (about an hour on 2 cores, most of it the memory run: BENCH_ARGS="--skip memory"
# leaves it out). `make bench-short` proves the harness works in a few minutes; its timings mean nothing.
BENCH_ARGS ?=
.PHONY: bench bench-short

bench: install-dev system-deps
	$(BIN)/python -m benchmarks.run --update-benchmarks-md $(BENCH_ARGS)

bench-short: install-dev system-deps
	$(BIN)/python -m benchmarks.run --short $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(K8S_CHECKS) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# --- the compose stack (docs/stack.md) --------------------------------------------------------------------------
# Compose reads .env (committed, no secrets); .env.local (copied from .env.example, never committed) adds the
# Grafana admin password and local overrides. Exporting GRAFANA_ADMIN_PASSWORD works too.
COMPOSE := docker compose --env-file .env $(if $(wildcard .env.local),--env-file .env.local)

.PHONY: up down smoke

up:
	$(COMPOSE) up --detach --build

down:
	$(COMPOSE) down

smoke:
	scripts/smoke
