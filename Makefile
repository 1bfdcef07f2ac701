# The exchange's commands. `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
PYTEST_ARGS ?=

.PHONY: run test lint bench-engine clean venv

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## run: the whole exchange on http://127.0.0.1:8000 (Ctrl-C stops everything)
run: $(STAMP)
	$(PY) manage.py run_exchange

## test: the whole suite (embedded Redis and SQLite unless REDIS_URL / DATABASE_URL are set)
test: $(STAMP)
	ITG_INSTANCE=test $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench-engine: $(STAMP)
	$(PY) benchmarks/engine_bench.py

clean:
	rm -rf var/test var/test-exchange.sqlite3*
