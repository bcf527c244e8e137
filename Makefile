# Handover Vault: every target makes its own virtualenv (.venv) and installs what it needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint typecheck unit docs bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

## demo: a throwaway vault walked through the whole job (record, check, end, letter, export, verify, request, audit, forget)
demo: $(STAMP)
	$(BIN)/handover demo

## test: lint, type-check and the whole test suite
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# One worker per core (pytest-xdist); each worker starts its own throwaway PostgreSQL server, and
# tests that watch the machine's /dev/shm share one worker with the browser (xdist_group).
JOBS    ?= auto
unit: $(STAMP)
	$(BIN)/pytest -q -n $(JOBS) --dist loadgroup

## docs: regenerate docs/cli-reference.md from --help
docs: $(STAMP)
	$(BIN)/python -m handover_vault.cli.reference > docs/cli-reference.md

## bench: the side-by-side benchmarks (writes docs/performance.md)
bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
