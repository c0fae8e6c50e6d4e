# tiergate — every entry point the README, CI and pre-commit use. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.tiergate-stamp
SOURCES := $(shell find rust python -name '*.rs' -o -name '*.py' -o -name '*.pyi' -o -name 'Cargo.toml' 2>/dev/null) Cargo.lock pyproject.toml

.PHONY: help setup demo test test-rust test-py lint bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) $(SOURCES)
	$(PIP) install -q -e '.[dev,train]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install tiergate with its Rust core built in release mode (reuses what is built)

demo: setup ## start the simulators and the sidecar, drive a short scenario, print what was decided
	$(VENV)/bin/tiergate demo

test-rust: ## cargo tests of the pure core
	cargo test --workspace --exclude tiergate-py --quiet

test-py: setup ## pytest (unit, property, integration over real loopback HTTP)
	$(VENV)/bin/pytest -q

test: setup test-rust test-py ## cargo tests, then pytest

lint: setup ## ruff, mypy strict, clippy pedantic, stubtest of _core.pyi
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(VENV)/bin/mypy
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(VENV)/bin/python -m mypy.stubtest tiergate._core

bench: setup ## criterion benches, then the Python boundary and end-to-end benches (writes benches/RESULTS.md)
	cargo bench -p tiergate-core --bench core -- --noplot
	$(PY) benches/run.py

clean: ## remove build outputs and the venv
	rm -rf $(VENV) target
