# One command for each job; each creates the virtual environment if it is missing.
# torch==2.13.0 is installed first so that pip never pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-out
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-all lint demo bench clean

$(BIN)/lmassay: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/lmassay

setup: $(BIN)/lmassay

## the default suite: every test not marked `slow` (see the markers in pyproject.toml), on two
## pytest-xdist workers (a test file stays on one worker; they share one cache of the test world)
test: setup
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile

## the whole suite, `slow` tests included
test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

## the main job, offline: make (or reuse, in the user cache) a world, a reference and a tampered
## variant; attest it; write $(DEMO_DIR)/run/report.html (the README's other examples put
## their folders beside it, in $(DEMO_DIR)/pair and runs/)
demo: setup
	$(BIN)/lmassay demo --out $(DEMO_DIR)/run

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/throughput.py $(BENCH_FLAGS)
	$(BIN)/python benchmarks/streaming.py $(BENCH_FLAGS)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
