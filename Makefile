# The one entry point: make install | lint | typecheck | test | bench | demo | schema
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install lint format typecheck test test-fast bench demo schema brokers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## a venv with eventbus and every extra and dev tool

lint: install  ## ruff lint and format check
	$(BIN)/ruff check eventbus tests examples benchmarks
	$(BIN)/ruff format --check eventbus tests examples benchmarks

format: install
	$(BIN)/ruff format eventbus tests examples benchmarks
	$(BIN)/ruff check --fix eventbus tests examples benchmarks

typecheck: install  ## mypy --strict on the package
	$(BIN)/mypy

test: install  ## the whole suite, brokers included (see README: Testing)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install  ## memory transport only, no broker needed
	$(BIN)/python -m pytest -m "not redis and not rabbitmq" $(PYTEST_ARGS)

bench: install  ## the benchmark suite
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

demo: install  ## a worker process publishes, a separate subscriber process prints
	$(BIN)/eventbus demo $(DEMO_ARGS)

schema: install  ## regenerate docs/wire-format.schema.json from the msgspec Structs
	$(BIN)/python -c 'import sys, eventbus._wire as w; sys.stdout.write(w.json_schema_text())' > docs/wire-format.schema.json

brokers:  ## start local Redis and RabbitMQ if they are not running (root, Debian)
	bash .ci/brokers.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
