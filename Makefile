# The two commands: `make run` (set up this machine and run its jobs once) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
INVENTORY ?= inventory/local

.PHONY: run test test-pythons deps venv lint bench clean collection verify

run: deps venv
	@scripts/run-local

test: deps venv
	@scripts/test-all $(PYTEST_ARGS)

# the engine's tests on Debian 12's /usr/bin/python3 (3.11.2), 3.12 and 3.13 (part of `test`)
test-pythons: deps venv
	@scripts/test-pythons

deps:
	@scripts/deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the engine and its tools into $(VENV) ..."
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# the Ansible collection strongroom.backup, built from library/, roles/ and playbooks/
collection: deps venv
	@scripts/collection

# testinfra checks of every host of INVENTORY over its own connection (default: this machine)
verify: deps venv
	@scripts/verify $(INVENTORY)

lint: venv
	@scripts/lint

bench: deps venv
	$(VENV)/bin/python bench/bundles.py
	$(VENV)/bin/python bench/repos.py
	$(VENV)/bin/python bench/manifest.py
	$(VENV)/bin/python bench/fleet.py
	$(VENV)/bin/python bench/snapshot.py
	$(VENV)/bin/python bench/snapshot_small.py
	$(VENV)/bin/python bench/smallfiles.py
	$(VENV)/bin/python bench/growth.py
	$(VENV)/bin/python bench/sync.py
	$(VENV)/bin/python bench/upload.py

clean:
	rm -rf $(VENV) .venvs .pytest_cache .ruff_cache build *.egg-info
