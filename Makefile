# Set-up and the main jobs. `make run` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GW := $(BIN)/gateway
STAMP := $(VENV)/.installed
export GATEWAY_INSTANCE_PATH ?= $(CURDIR)/instance

.PHONY: install run test bench bench-peers lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## run: set up the instance (SQLite), the example model and a demo key; serve on 127.0.0.1:8080
run: install
	$(GW) init
	$(GW) db upgrade
	$(BIN)/python examples/setup_demo.py
	$(GW) serve --bind 127.0.0.1:8080 --workers 2

## test: lint, then the whole suite (PostgreSQL tests run when GATEWAY_TEST_POSTGRES_URL is set), in TEST_WORKERS
## processes; each test file runs whole in one of them, so its module fixtures are built once (TEST_WORKERS=0: one process)
TEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

## bench-peers: the virtualenvs of the peer model servers (MLServer, MLflow) the remote tests and benchmarks use,
## built as the tests build them (GATEWAY_TEST_PEERS_DIR, default .cache/peers); the benchmarks build a missing one
bench-peers: install
	$(BIN)/python bench/peers.py

## bench: every benchmark; each prints one JSON object with its baseline (bench/results/)
bench: install
	$(BIN)/python bench/decision_latency.py
	$(BIN)/python bench/explanation_latency.py
	$(BIN)/python bench/explanation_jobs.py
	$(BIN)/python bench/notification_throughput.py
	$(BIN)/python bench/background_cost.py
	$(BIN)/python bench/audit_log.py
	$(BIN)/python bench/decision_log.py
	$(BIN)/python bench/page_render.py
	$(BIN)/python bench/batch_decisions.py
	$(BIN)/python bench/floor.py
	$(BIN)/python bench/remote_models.py
	$(BIN)/python bench/model_kinds.py
	$(BIN)/python bench/recourse.py
	$(BIN)/python bench/audit_export.py
	$(BIN)/python bench/record_scale.py

## lint: ruff, the import-layer contracts (import-linter) and mypy on explainers/ and the domain of gateway/
lint: install
	$(BIN)/ruff check gateway explainers tests examples bench
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) instance .pytest_cache build *.egg-info
