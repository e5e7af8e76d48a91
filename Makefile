# callstream task runner. Every target installs what it needs first (uv, the locked venv).
# The two a new user needs:  make demo   and   make test
SHELL := /bin/bash
# uv from PATH, else the uv that pip installs into this Python (run as a module: no PATH needed).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PYTEST_ARGS ?=
# Line and branch coverage of the product: --cov measures [tool.coverage.run] source (streams,
# agents, providers, schemas, infra) with branch=true; the summary goes to the terminal.
COVERAGE_ARGS := --cov --cov-report=term

.PHONY: demo test coverage unit integration lint typecheck bench setup kafka-jars clean

setup:  ## Install uv if missing, then the locked environment (.venv)
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv \
		|| python3 -m pip install --user --quiet uv
	@$(UV) sync --frozen --quiet

demo: setup  ## The pipeline on the embedded broker with a demo workload
	@$(UV) run --frozen callstream dev

test: setup  ## Every test: unit, contract, integration on real Apache Kafka, embedded smoke
	@$(UV) run --frozen pytest $(PYTEST_ARGS)

coverage: setup  ## Every test, then the product's line and branch coverage
	@$(UV) run --frozen pytest $(COVERAGE_ARGS) $(PYTEST_ARGS)

unit: setup
	@$(UV) run --frozen pytest -m "not integration" $(PYTEST_ARGS)

integration: setup
	@$(UV) run --frozen pytest -m integration $(PYTEST_ARGS)

lint: setup  ## ruff (style, complexity), formatting, and the import layers (lint-imports)
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen lint-imports

typecheck: setup
	@$(UV) run --frozen mypy

bench: setup  ## Throughput against a direct aiohttp client, on real Apache Kafka
	@$(UV) run --frozen callstream bench throughput

kafka-jars: setup  ## Resolve Apache Kafka's jars from Maven Central into the cache
	@$(UV) run --frozen python -c "from infra.kafka import resolve_jars; print(resolve_jars())"

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache var
