# Every target sets up what it needs: a fresh machine with Python 3.11 and pip is enough.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Folders that exist on this branch (benchmarks/ may not yet).
LINTED := $(wildcard src tests benchmarks examples mkdocs_hooks.py)

.PHONY: setup test lint typecheck unit docs demo bench clean debian-packages bench-redis \
	bench-history bench-pacing bench-scale bench-redis-rate loadgen

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

# What the tests run from Debian, as COMMAND=PACKAGE: the Redis backplane's tests start
# their own redis-server on a free port of 127.0.0.1, tests/browser/ drives
# /usr/bin/chromium headless, and the serve tests publish with curl and make a
# throwaway TLS certificate with openssl, and the C load generator's test builds it with
# cc (gcc). debian-packages installs those whose command
# is missing (apt-get, as root), all in one apt-get.
DEBIAN_PACKAGES := redis-server=redis-server /usr/bin/chromium=chromium curl=curl \
	openssl=openssl cc=gcc

debian-packages:
	@missing=""; \
	for wanted in $(DEBIAN_PACKAGES); do \
		command -v "$${wanted%%=*}" >/dev/null 2>&1 || missing="$$missing $${wanted#*=}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "missing, installing Debian's:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

unit: $(STAMP) debian-packages
	$(BIN)/pytest

# The documentation site, into site/: warnings (a broken link or anchor, a docstring
# mkdocstrings cannot read) are errors.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck docs unit

demo: $(STAMP)
	$(BIN)/wsfanout demo

# Pacing from the drain rate: a real client reading at 50 kB/s under 200 kB/s published
# (about a minute; ARGS=--help for the knobs). See docs/performance.md.
bench-pacing: $(STAMP)
	$(BIN)/python -m benchmarks.pacing $(ARGS)

bench-redis: DEBIAN_PACKAGES := redis-server=redis-server
bench-redis: $(STAMP) debian-packages
	$(BIN)/python benchmarks/redis_scaling.py

# Does the backplane hold its rate (issue 17)? ARGS="--rate 50000 --seconds 60" by default.
bench-redis-rate: DEBIAN_PACKAGES := redis-server=redis-server
bench-redis-rate: $(STAMP) debian-packages
	$(BIN)/python benchmarks/redis_rate.py $(ARGS)

# The C load generator of the scale benchmark (issue 17), built into build/ (ignored).
LOADGEN := build/loadgen

$(LOADGEN): benchmarks/loadgen.c | debian-packages
	@mkdir -p $(dir $@)
	cc -O2 -Wall -Wextra -Werror -o $@ $<

loadgen: DEBIAN_PACKAGES := cc=gcc
loadgen: $(LOADGEN)

# 10,000 clients on one hub for a minute (about 2 minutes in all); ARGS=--quick: 500
# clients for 3 s; ARGS="--loadgen python" for the Python load generator. Needs no extra:
# the hub, websockets and the raw-socket load generator (C, built first).
bench-scale: DEBIAN_PACKAGES := cc=gcc
bench-scale: $(STAMP) $(LOADGEN)
	$(BIN)/python -m benchmarks.scale $(ARGS)

# What offsets, history and resuming cost per message, in process and through Redis.
bench-history: DEBIAN_PACKAGES := redis-server=redis-server
bench-history: $(STAMP) debian-packages
	$(BIN)/python benchmarks/history.py $(ARGS)

# The bench extra (aiohttp, picows, uvloop, matplotlib) is optional: cases whose
# package is missing are reported as skipped. ARGS=--quick (about 30 s) or ARGS=--full.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]' || echo "bench extra not installed; its cases will be skipped"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build site
