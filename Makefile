# pycrio developer targets; `make help` lists them. Run as root on Debian 12.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
C_FILES := $(shell find csrc -name '*.[ch]')
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

host-deps: ## install the Debian packages (apt) pycrio needs
	@scripts/host-deps.sh

$(STAMP): pyproject.toml
	@scripts/host-deps.sh
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "pycrio needs Python 3.11+"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q 'cffi>=1.17' 'grpcio-tools>=1.66'
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

build: $(STAMP) ## set up the venv and build the extension, helpers and CRI stubs in place
	@scripts/host-deps.sh
	cd . && $(PY) build.py

run: build ## run the daemon in the foreground with its defaults (ARGS="--log-level debug")
	$(VENV)/bin/pycrio $(ARGS)

test: build ## run the whole test suite (as root)
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

test-native: build ## C tests through cffi
	$(PY) -m pytest -q tests/native $(PYTEST_ARGS)

test-unit: build ## Python unit tests
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

test-e2e: build ## end-to-end tests against real daemons
	$(PY) -m pytest -q tests/e2e $(PYTEST_ARGS)

test-asan: build ## C tests with AddressSanitizer + UBSan (a sanitized copy under build/asan)
	rm -rf build/asan && mkdir -p build/asan
	cp -r build.py csrc pycrio tests pyproject.toml README.md build/asan/ && rm -rf build/asan/pycrio/bin build/asan/pycrio/*.so
	cd build/asan && PYCRIO_SANITIZE=1 ../../$(PY) build.py
	cd build/asan && PYCRIO_SANITIZE=1 ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
	../../$(PY) -m pytest -q -p no:cacheprovider tests/native $(PYTEST_ARGS)

FUZZ_SECONDS ?= 30
SPDY_FUZZ_SECONDS ?= 10
FUZZ_CC ?= clang
FUZZ_DIR := build/fuzz
FUZZ_LIBS = -lz -lzstd -lcrypto $(shell printf '\#include <isa-l.h>\n' | $(FUZZ_CC) -E -x c - >/dev/null 2>&1 && echo -DPYCRIO_HAVE_ISAL -lisal)

fuzz: $(STAMP) ## fuzz the layer extractor (FUZZ_SECONDS) and the SPDY frame parser (SPDY_FUZZ_SECONDS) (needs clang, libclang-rt-14-dev)
	mkdir -p $(FUZZ_DIR)/corpus $(FUZZ_DIR)/crashes
	$(FUZZ_CC) -std=gnu11 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Icsrc \
	-o $(FUZZ_DIR)/fuzz_extract csrc/fuzz/fuzz_extract.c csrc/err.c csrc/fdio.c csrc/extract*.c $(FUZZ_LIBS)
	$(PY) -m tests.support.fuzz_seeds $(FUZZ_DIR)/corpus
	$(FUZZ_DIR)/fuzz_extract -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -timeout=20 -rss_limit_mb=2048 \
	-dict=csrc/fuzz/tar.dict -artifact_prefix=$(FUZZ_DIR)/crashes/ -print_final_stats=1 $(FUZZ_DIR)/corpus
	$(PY) -m tests.support.fuzz_spdy $(FUZZ_DIR)/spdy-corpus -max_total_time=$(SPDY_FUZZ_SECONDS) -max_len=4096 \
	-artifact_prefix=$(FUZZ_DIR)/crashes/spdy- -print_final_stats=1

lint: build ## ruff, mypy and the C format check
	$(VENV)/bin/ruff check pycrio tests benchmarks build.py setup.py
	$(VENV)/bin/ruff format --check pycrio tests benchmarks build.py setup.py
	$(VENV)/bin/mypy pycrio
	clang-format --dry-run --Werror $(C_FILES)

format: build ## apply ruff format and clang-format
	$(VENV)/bin/ruff format pycrio tests benchmarks build.py setup.py
	clang-format -i $(C_FILES)

bench: build ## benchmarks against a fresh pycrio (ENDPOINT=unix:///... to measure another runtime too)
	$(PY) benchmarks/rpc_latency.py $(if $(ENDPOINT),--endpoint $(ENDPOINT))

clean: ## remove build output (keeps the venv)
	rm -rf build pycrio/*.so pycrio/bin pycrio/cri/api_pb2*.py pycrio/_native.c csrc/*.o csrc/*/*.o

.PHONY: help host-deps build run test test-native test-unit test-e2e test-asan fuzz lint format bench clean
