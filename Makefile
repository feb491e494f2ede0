# Two entry points do all set-up on a fresh machine with only Python 3.11:
#   make repro   create .venv, install trainwell, run the whole DVC pipeline
#   make test    create .venv, install trainwell with its dev extra, run the test suite
# Both re-install only when pyproject.toml changes (the .venv/.installed stamp).

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# dvc runs each stage's `trainwell ...` command through the shell: put the venv first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: install repro test test-fast clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "trainwell needs Python 3.11 (TensorFlow 2.16); set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow'

clean-venv:
	rm -rf $(VENV)
