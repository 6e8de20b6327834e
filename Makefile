# The one entry point: make install | lint | typecheck | test | bench | demo | schema
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install lint format typecheck test test-fast bench demo schema brokers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml hatch_build.py
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# the compiled codec, rebuilt when its source changes (hatch_build.py; skipped, with the
# pure-Python codec running, when EVENTBUS_NO_EXTENSIONS=1 or nothing can compile it)
$(VENV)/.compiled: $(VENV)/.installed eventbus/_codec.py
	$(BIN)/python hatch_build.py
	touch $@

install: $(VENV)/.installed $(VENV)/.compiled  ## a venv with eventbus (codec compiled), every extra and dev tool

lint: install  ## ruff lint and format check
	$(BIN)/ruff check eventbus tests examples benchmarks hatch_build.py
	$(BIN)/ruff format --check eventbus tests examples benchmarks hatch_build.py

format: install
	$(BIN)/ruff format eventbus tests examples benchmarks
	$(BIN)/ruff check --fix eventbus tests examples benchmarks

typecheck: install  ## mypy --strict on the package
	$(BIN)/mypy

test: install  ## the whole suite, brokers included; then the codec's tests on the pure-Python codec
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	EVENTBUS_PURE_PYTHON=1 $(BIN)/python -m pytest -m "not redis and not rabbitmq" \
		tests/test_codec.py tests/test_equivalence.py $(PYTEST_ARGS)

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis eventbus/_codec.*.so
