# The front door: `make demo` runs the system, `make test` proves it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CLUSTER ?= 0

.PHONY: help install infra-up infra-down kafka-up kafka-down redis-up redis-down \
        topics lint test test-unit demo cluster-demo bench chaos upgrade console docs clean compose-tool browser-tool

help:
	@echo "make demo       run the three services on local Kafka and Redis, driving clinics through the lifecycle"
	@echo "make test       lint, then every test against real Kafka and Redis (started when needed)"
	@echo "make lint       ruff and mypy"
	@echo "make bench      the system against the raw Kafka client, and the scheduler's figures"
	@echo "make cluster-demo  the demo on 3 Kafka brokers and a 3+3 Redis Cluster, killing a broker and a Redis primary"
	@echo "make chaos      kill and restart services, Kafka and Redis under load; check nothing was lost"
	@echo "make console    the clinic console (http://127.0.0.1:8005/) on the demo's clinics, with sign-ins"
	@echo "make upgrade    drain the previous version's services under load, switch to this one; audit"
	@echo "make infra-up   start local Kafka (KRaft) and Redis (CLUSTER=1: a Redis Cluster); infra-down stops them"
	@echo "make docs       regenerate docs/asyncapi.yaml and docs/schemas/"

$(INSTALLED): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) (3.11) is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,bench]"
	@touch $@

install: $(INSTALLED)

kafka-up:
	@bash infra/kafka.sh up
kafka-down:
	@bash infra/kafka.sh down
# CLUSTER=1: a local Redis Cluster (3 primaries, 3 replicas) instead of one node.
redis-up:
	@REDIS_CLUSTER=$(CLUSTER) bash infra/redis.sh up
redis-down:
	@REDIS_CLUSTER=$(CLUSTER) bash infra/redis.sh down

infra-up: kafka-up redis-up
infra-down: kafka-down redis-down

topics: install
	@bash infra/with-infra.sh $(BIN)/kapctl topics apply

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

compose-tool:
	@command -v docker-compose >/dev/null || bash infra/install-compose.sh

# Debian's chromium, for the browser tests (Playwright drives it; it downloads nothing),
# and axe-core from its npm package (the console's accessibility checks).
browser-tool:
	@test -x /usr/bin/chromium || bash infra/install-chromium.sh
	@bash infra/install-axe.sh

# Like demo, chaos and bench: Kafka and Redis started here are stopped afterwards
# (ones already running stay up); the clusters the tests start stop with them.
test: install lint compose-tool browser-tool
	@bash infra/with-infra.sh $(BIN)/pytest -q -p no:cacheprovider

test-unit: install
	$(BIN)/pytest -q tests/unit

demo: install
	@bash infra/with-infra.sh $(BIN)/python -m ops.demo

# The demo on three Kafka brokers and a Redis Cluster of six, killing a broker and
# crashing a Redis primary meanwhile; starts (and then stops) both clusters.
cluster-demo: install
	@$(BIN)/python -m ops.cluster_demo

chaos: install
	@bash infra/with-infra.sh $(BIN)/python -m ops.chaos

upgrade: install
	@bash infra/with-infra.sh $(BIN)/python -m ops.upgrade

# The clinic console in a browser, on the demo's clinics, a staff member seeded per role.
console: install
	@bash infra/with-infra.sh $(BIN)/python -m ops.console

bench: install
	@bash infra/with-infra.sh $(BIN)/python -m bench

docs: install
	$(BIN)/python -m ops.contracts

clean: infra-down
	rm -rf .infra $(VENV)
