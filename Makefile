# Two commands on a fresh machine: `make demo` and `make test`. Both create the virtualenv
# and install the project (with its test tools) first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install system-tools demo test test-unit test-integration clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamer demo

# Debian's prometheus/promtool and chromium, for the monitoring and dashboard tests.
system-tools:
	bash tests/install-system-tools

test: $(STAMP) system-tools
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/agents streamer

test-integration: $(STAMP) system-tools
	$(BIN)/pytest tests/integration

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info

# Benchmark (bench/README.md): worker vs a raw aiokafka ceiling and Quix Streams, latency, memory,
# readiness, refit.
# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--customers 50000 --repeat 2".
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The pure core compiled by mypyc vs plain, on one replay (bench/compiled_core.py): a measured
# next step, not used by the worker.
.PHONY: bench-compiled
bench-compiled: $(STAMP)
	$(BIN)/python -m bench.compiled_core $(BENCH_ARGS)

# Memory per customer at scale, the partition index in memory vs bounded (bench/scale.py): the
# core replayed into a RocksDB state store, no Kafka. Options: BENCH_ARGS="--customers 1000000".
.PHONY: bench-scale
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale $(BENCH_ARGS)
