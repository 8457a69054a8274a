# The two commands: `make run` (set up this machine and run its jobs once) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test deps venv lint bench clean

run: deps venv
	@scripts/run-local

test: deps venv
	@scripts/test-all $(PYTEST_ARGS)

deps:
	@scripts/deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the engine and its tools into $(VENV) ..."
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

lint: venv
	@scripts/lint

bench: deps venv
	$(VENV)/bin/python bench/bundles.py
	$(VENV)/bin/python bench/manifest.py
	$(VENV)/bin/python bench/provision.py
	$(VENV)/bin/python bench/snapshot.py
	$(VENV)/bin/python bench/upload.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
