# The exchange's commands. `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
PYTEST_ARGS ?=

.PHONY: run test lint bench bench-engine schemathesis clean venv

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

## bench: the end-to-end suite through the public API (benchmarks/suite.py; SQLite + embedded Redis unless
##   DATABASE_URL / REDIS_URL point elsewhere): closed loop ×3, open loop at BENCH_RATE ×3, open loop at 2× the
##   closed loop; prints each target's median against it and writes benchmarks/results/suite-<backend>.json.
##   BENCH_ARGS=--quick for a one-run smoke test; BENCH_ARGS=--help for every option.
BENCH_PAIRS ?= 4
BENCH_WARMUP ?= 3
BENCH_DURATION ?= 15
BENCH_RATE ?= 800
BENCH_RUNS ?= 3
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) benchmarks/suite.py --pairs $(BENCH_PAIRS) --warmup $(BENCH_WARMUP) --duration $(BENCH_DURATION) \
	  --rate $(BENCH_RATE) --runs $(BENCH_RUNS) $(BENCH_ARGS)

## schemathesis: fuzz a running exchange against its own /schema/: no 5xx, every reply as documented.
##   SCHEMATHESIS_URL (default http://127.0.0.1:8000), SCHEMATHESIS_API_KEY (default: a newly registered team)
SCHEMATHESIS_URL ?= http://127.0.0.1:8000
SCHEMATHESIS_API_KEY ?=
SCHEMATHESIS_ARGS ?= --max-examples 20 --seed 20240115
schemathesis: $(STAMP)
	@key="$(SCHEMATHESIS_API_KEY)"; \
	if [ -z "$$key" ]; then \
	  key=$$($(PY) -c 'import sys, time, requests; r = requests.post(sys.argv[1] + "/auth/register", json={"team_name": "schemathesis_%d" % time.time(), "role": "market_maker"}, timeout=10); r.raise_for_status(); print(r.json()["api_key"])' "$(SCHEMATHESIS_URL)") || exit 1; \
	fi; \
	$(VENV)/bin/schemathesis run "$(SCHEMATHESIS_URL)/schema/" --url "$(SCHEMATHESIS_URL)" -H "X-API-Key: $$key" \
	  --checks not_a_server_error,response_schema_conformance --workers 1 --generation-database none $(SCHEMATHESIS_ARGS)

## chaos: the fault drills, long variants (kill -9 of the worker and the web process under load, Redis
##   killed and frozen, 1,000 WebSockets at once); numbers in var/chaos-results.jsonl, see docs/reliability.md
.PHONY: chaos
chaos: $(STAMP)
	CHAOS_LONG=1 ITG_INSTANCE=test $(PY) -m pytest tests/chaos -m chaos -s $(PYTEST_ARGS)

clean:
	rm -rf var/test var/test-exchange.sqlite3*
