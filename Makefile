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

## the test suite (slow tests excluded; `make test-all` runs them too)
test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

## the main job: build a tiny reference + a copy tampered on one category, attest, write the report
demo: setup
	$(BIN)/lmassay toy build --out $(DEMO_DIR)/toy
	$(BIN)/lmassay attest --model $(DEMO_DIR)/toy/tampered --reference $(DEMO_DIR)/toy/reference \
		--probes $(DEMO_DIR)/toy/probes.jsonl --out $(DEMO_DIR)/attestation; \
	status=$$?; test $$status -le 1 || exit $$status; \
	echo "exit code $$status (0 consistent, 1 flagged); open $(DEMO_DIR)/attestation/report.html"

## the peer benchmark against lm-eval and the layer-streaming benchmark (`make bench BENCH_FLAGS=--quick`: ~5 min)
bench: setup
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/throughput.py $(BENCH_FLAGS)
	$(BIN)/python benchmarks/streaming.py $(BENCH_FLAGS)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
