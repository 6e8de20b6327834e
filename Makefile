# The one entry point: make install | lint | typecheck | test | bench | demo | schema | docs | lock | js
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

# Installs are pinned: uv.lock (every package of .[dev], with hashes) is what `make install`
# installs; `make lock` updates it after a pyproject.toml change, `make upgrade` moves every
# package to today's newest release. uv itself is pinned here and lives in .tools/.
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# make test-lowest: the oldest dependency versions pyproject.toml admits
LOWEST_VENV := .venv-lowest
LOWEST_LOCK := requirements-lowest.txt
LOCK_STALE := uv.lock does not satisfy pyproject.toml: run `make lock` and commit uv.lock and $(LOWEST_LOCK)

.PHONY: install lint format typecheck test test-fast test-lowest bench demo schema docs brokers \
	redis-cluster redis-cluster-stop rabbitmq-cluster rabbitmq-cluster-stop lock upgrade check-lock \
	clean js

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# --compile-bytecode: .pyc files at install, as pip makes them (without them every start
# of the command line compiles redis-py again: 0.4 s more; see the README's start-up)
# the editable build skips the codec (EVENTBUS_NO_EXTENSIONS=1): .compiled below compiles
# it with the Cython of the lock
$(VENV)/.installed: $(UV) pyproject.toml uv.lock hatch_build.py
	@$(UV) lock --check --python $(PYTHON) --quiet || { echo "$(LOCK_STALE)" >&2; exit 1; }
	EVENTBUS_NO_EXTENSIONS=1 $(UV) sync --frozen --extra dev --python $(PYTHON) --quiet --compile-bytecode
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
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory js; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	EVENTBUS_PURE_PYTHON=1 $(BIN)/python -m pytest -m "not redis and not rabbitmq" \
		tests/test_codec.py tests/test_equivalence.py tests/test_graph_equivalence.py \
		tests/test_values.py $(PYTEST_ARGS)

test-fast: install  ## memory transport only, no broker needed
	$(BIN)/python -m pytest -m "not redis and not rabbitmq" $(PYTEST_ARGS)

test-lowest: $(UV)  ## codec, equivalence and contract tests on the lowest dependency versions allowed
	@grep -q "pyproject sha256: $$(sha256sum pyproject.toml | cut -c1-64)" $(LOWEST_LOCK) \
		|| { echo "$(LOCK_STALE)" >&2; exit 1; }
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(LOWEST_VENV)
	VIRTUAL_ENV=$(LOWEST_VENV) $(UV) pip sync --quiet $(LOWEST_LOCK)
	VIRTUAL_ENV=$(LOWEST_VENV) EVENTBUS_NO_EXTENSIONS=1 $(UV) pip install --quiet --no-deps -e .
	$(LOWEST_VENV)/bin/python hatch_build.py
	$(LOWEST_VENV)/bin/python -m pytest tests/test_codec.py tests/test_equivalence.py tests/test_graph_equivalence.py \
		tests/test_transport_contract.py $(PYTEST_ARGS)

lock: $(UV)  ## update uv.lock and requirements-lowest.txt after a pyproject.toml change (keeps other pins)
	$(UV) lock --python $(PYTHON)
	$(MAKE) --no-print-directory $(LOWEST_LOCK)

upgrade: $(UV)  ## move every locked package to its newest release (review the diff)
	$(UV) lock --upgrade --python $(PYTHON)
	$(MAKE) --no-print-directory $(LOWEST_LOCK)

# lowest-direct: each direct dependency at the floor pyproject.toml states (theirs at their
# newest compatible); the header records which pyproject.toml it was made from
$(LOWEST_LOCK): pyproject.toml | $(UV)
	$(UV) pip compile --quiet pyproject.toml --extra dev --resolution lowest-direct \
		--python-version 3.11 --generate-hashes --no-header -o $@.tmp
	{ echo "# make lock: the lowest versions pyproject.toml allows, for make test-lowest"; \
	  echo "# pyproject sha256: $$(sha256sum pyproject.toml | cut -c1-64)"; cat $@.tmp; } > $@
	rm -f $@.tmp

check-lock: $(UV)  ## fail when uv.lock no longer satisfies pyproject.toml
	@$(UV) lock --check --python $(PYTHON) --quiet || { echo "$(LOCK_STALE)" >&2; exit 1; }
	@echo "uv.lock satisfies pyproject.toml"

bench: install  ## the benchmark suite
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

demo: install  ## a worker process publishes, a separate subscriber process prints
	$(BIN)/eventbus demo $(DEMO_ARGS)

schema: install  ## regenerate docs/wire-format.schema.json (msgspec Structs) and docs/json-form.schema.json (LangChain's models)
	$(BIN)/python -c 'import sys, eventbus._wire as w; sys.stdout.write(w.json_schema_text())' > docs/wire-format.schema.json
	$(BIN)/python -c 'import sys, eventbus._jsonable as j; sys.stdout.write(j.json_schema_text())' > docs/json-form.schema.json

docs: install  ## regenerate the option tables of docs/*.md from the transports' option specs
	$(BIN)/python -m eventbus.transports._docs

# the JavaScript LangGraph SDK of tests/test_js_sdk.py, exactly as tests/js/package-lock.json pins it
JS_DIR := tests/js
$(JS_DIR)/node_modules/.package-lock.json: $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error

js: $(JS_DIR)/node_modules/.package-lock.json  ## node_modules for tests/test_js_sdk.py (npm ci; needs node >= 20)

brokers:  ## start local Redis and RabbitMQ if they are not running (root, Debian)
	bash .ci/brokers.sh

redis-cluster:  ## start (idempotently) a local Redis Cluster on ports 7100-7105 for the cluster tests
	bash .ci/redis-cluster.sh start

redis-cluster-stop:  ## stop it and remove its data
	bash .ci/redis-cluster.sh stop

rabbitmq-cluster:  ## start (idempotently) a local 3-node RabbitMQ cluster on ports 5701-5703
	bash .ci/rabbitmq-cluster.sh start

rabbitmq-cluster-stop:  ## stop it and remove its data
	bash .ci/rabbitmq-cluster.sh stop

clean:
	rm -rf $(VENV) $(LOWEST_VENV) $(TOOLS) $(JS_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis eventbus/_codec.*.so
