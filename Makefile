# Every target sets up what it needs: a fresh machine with Python 3.11 and pip is enough.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Folders that exist on this branch (benchmarks/ may not yet).
LINTED := $(wildcard src tests benchmarks examples)

.PHONY: setup test lint typecheck unit demo bench clean redis-server bench-redis

BENCH_STAMP := $(VENV)/.bench-installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cli]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy

# The Redis backplane's tests start their own redis-server (Debian's package) on a
# free port of 127.0.0.1; install it when it is missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "redis-server is missing: installing Debian's redis-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	}

unit: $(STAMP) redis-server
	$(BIN)/pytest

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/wsfanout demo

bench-redis: $(STAMP) redis-server
	$(BIN)/python benchmarks/redis_scaling.py

# The bench extra (aiohttp, picows, uvloop, matplotlib) is optional: cases whose
# package is missing are reported as skipped. ARGS=--quick (about 30 s) or ARGS=--full.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]' || echo "bench extra not installed; its cases will be skipped"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build
