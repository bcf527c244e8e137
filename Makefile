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

# pytest-xdist workers: one and a half per core, since many tests wait on subprocesses, fsync and
# PostgreSQL (on 2 cores, 3 workers took 9:49 against 11:41 for 2 and 9:29 for 4). Each worker
# starts its own throwaway PostgreSQL server; tests that watch the machine's /dev/shm share one
# worker with the browser (xdist_group). JOBS=0 runs the suite in one process.
JOBS    ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n * 3 / 2 )))
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
