# The two commands of the README. Both work on a fresh machine with only Python 3.11+.
#   make run   - venv, install, a short demo on the embedded SQLite default
#   make test  - venv, install with test extras, the guardrails (make lint), the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   := $(CURDIR)/demo

.PHONY: run test venv lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[server,test,dev,postgres]'

run: venv
	@CRONWATCH_DB=$(DEMO)/history.db sh scripts/demo.sh $(BIN)

# The guardrails run first and stop the build: a lint or type error fails CI in seconds,
# before the suite's minutes. mypy is strict through pyproject.toml.
# Two worker processes (pytest-xdist): most tests wait on real processes, sockets and
# databases, so two at a time take ~0.65x the time on two cores. Each worker starts its own
# PostgreSQL cluster and browser. TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: lint
	@sh scripts/ensure-test-deps.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS)

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src/cronwatch

bench: venv
	$(BIN)/python benchmarks/bench_wrapper.py
	$(BIN)/python benchmarks/bench_passthrough.py
	$(BIN)/python benchmarks/bench_queries.py

clean:
	rm -rf $(VENV) $(DEMO) build dist src/*.egg-info .pytest_cache
