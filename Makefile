# Two entry points do all set-up on a fresh machine with Python 3.10, 3.11 or 3.12:
#   make repro   create .venv, install trainwell (runtime only), run the whole DVC pipeline
#   make test    create .venv, install trainwell with its dev extra, run the whole test suite
#   make test-fast  the same without the tests marked slow (under 3 minutes on 2 cores)
# Each re-installs only when pyproject.toml changes (the stamps in .venv). Another interpreter:
#   make repro PYTHON=/path/to/python3.12

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
# dvc runs each stage's `trainwell ...` command through the shell: put the venv first on PATH.
export PATH := $(BIN):$(PATH)

.PHONY: install install-dev repro test test-fast lint params docs benchmarks clean-venv

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else "trainwell needs Python 3.10, 3.11 or 3.12 (TensorFlow 2.16); set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP) $(RUNTIME_STAMP)

install: $(RUNTIME_STAMP)

install-dev: $(DEV_STAMP)

repro: $(RUNTIME_STAMP)
	$(BIN)/dvc repro

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# -n auto: one pytest-xdist worker per core; --dist loadgroup keeps the tests sharing an expensive
# session fixture (tests/conftest.py SHARED_FIXTURE_GROUPS) on one worker, so it is built once.
XDIST := -n auto --dist loadgroup

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(XDIST)

# The fast tier: nothing that trains, runs a DVC pipeline, starts Chromium or builds a venv (the markers
# train, dvc, browser, install each imply slow; the tier guard in tests/conftest.py keeps them honest).
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest $(XDIST) -m 'not slow'

# templates/params.yaml.in and params.yaml, written from the params models (src/trainwell/params/);
# tests/test_params_template.py fails until they are rewritten after a key changes.
params: $(DEV_STAMP)
	$(BIN)/python -m trainwell.params.template

# The documentation site from docs/ into site/; --strict: a broken link or API reference fails.
# NO_MKDOCS_2_WARNING: Material prints a banner about MkDocs 2.0 on every build otherwise.
docs: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Every benchmark, each run through benchmarks/record.py, which saves its output in
# benchmarks/results/ for docs/benchmarks.md to include (about an hour on 2 cores; one at a time).
RECORD := $(BIN)/python benchmarks/record.py
benchmarks: $(DEV_STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(RECORD) near_duplicates
	$(RECORD) input_pipeline
	$(RECORD) guard_overhead
	$(RECORD) predict
	$(RECORD) audit
	$(RECORD) audit_precision
	$(RECORD) served
	$(RECORD) fuzz_audit --minutes 2
	$(RECORD) fuzz_model_files --minutes 1
	$(RECORD) label_review
	$(RECORD) scale
	$(RECORD) end_to_end

clean-venv:
	rm -rf $(VENV)
