# `make run` and `make test` are all a fresh machine needs (Python 3.11).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser run test test-fast lint format bench-enroll

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	# torch first, pinned, so nothing else pulls a different build.
	$(PY) -m pip install -q "torch==2.14.1" "torchaudio==2.11.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the console's browser tests (they are skipped without it).
browser:
	scripts/install-browser

run: install
	$(PY) manage.py run_service

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench-enroll: install
	$(PY) bench/enroll.py
