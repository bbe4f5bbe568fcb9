# Quick start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PIP_FLAGS := --disable-pip-version-check --quiet --constraint constraints.txt
RUNTIME_STAMP := $(VENV)/.fedcare-runtime
TEST_STAMP := $(VENV)/.fedcare-test
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test lint audit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so the `torch>=2.6` range is already met by the local CPU build.
$(RUNTIME_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install $(PIP_FLAGS) torch==2.13.0
	$(PIP) install $(PIP_FLAGS) -e .
	touch $@

$(TEST_STAMP): $(RUNTIME_STAMP)
	$(PIP) install $(PIP_FLAGS) -e '.[test]'
	touch $@

demo: $(RUNTIME_STAMP)
	$(BIN)/fedcare simulate --out runs/demo

# The whole suite, every test, in a new order each run (pytest-randomly; the header prints the
# seed: `make test PYTEST_ARGS=--randomly-seed=S` repeats an order). The end-to-end tests spend
# most of their time waiting on Flower's polling and on process start-ups, so the suite runs on
# TEST_WORKERS pytest-xdist workers, one test file per worker at a time (--dist loadfile), so a
# module fixture (a running federation) is built once (see tests/conftest.py).
TEST_WORKERS ?= 4
PYTEST_ARGS ?=
test: $(TEST_STAMP) audit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)
	$(BIN)/python tests/mutation/run.py --quick

# The benchmarks; `bench serve` needs the bench extra (KServe, the reference row).
bench: $(RUNTIME_STAMP)
	$(PIP) install $(PIP_FLAGS) -e '.[bench]'
	$(BIN)/fedcare bench dp
	$(BIN)/fedcare bench latency
	$(BIN)/fedcare bench serve

# Security lint of the installed package: any high-severity finding fails (see [tool.bandit]).
PACKAGE_DIRS := fedcare server client privacy simulations
audit: $(TEST_STAMP)
	$(BIN)/bandit -c pyproject.toml -r $(PACKAGE_DIRS) --severity-level high --quiet
	@echo "bandit: no high-severity finding in $(PACKAGE_DIRS)"

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy fedcare server client privacy simulations

# The whole suite under coverage, the processes it starts included (CLI, SuperLink, SuperNodes,
# executors, apps: see [tool.coverage.run]); slower than `make test` and not part of it. Same
# tests, workers and order options as `make test` (TEST_WORKERS, PYTEST_ARGS). Prints every
# module (fails under [tool.coverage.report] fail_under) and the trust core, each module of which
# must reach 80 % (tests/coverage/trust_core.py); writes htmlcov/index.html. Fails if a test fails.
.PHONY: coverage
coverage: $(TEST_STAMP)
	$(BIN)/coverage erase
	@$(BIN)/coverage run -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); tests=$$?; \
	$(BIN)/coverage combine --quiet; $(BIN)/coverage html --quiet --fail-under=0; \
	echo "=== coverage of every module, subprocesses included (htmlcov/index.html) ==="; \
	$(BIN)/coverage report; total=$$?; \
	echo "=== trust core ===" && $(BIN)/python tests/coverage/trust_core.py; core=$$?; \
	test $$tests -eq 0 && test $$total -eq 0 && test $$core -eq 0

# Mutation testing of the trust core with mutmut ([tool.mutmut]; tests/mutation/run.py stages
# the tree as the package lays it out in build/mutation/ and runs mutmut there): prints the
# per-module table and writes reports/mutation.md. A fresh full run, not part of `make test`
# (which runs `tests/mutation/run.py --quick`). `--resume` re-runs only what was not killed.
.PHONY: mutate
mutate: $(TEST_STAMP)
	$(BIN)/python tests/mutation/run.py

clean:
	rm -rf $(VENV) build *.egg-info runs
