# Two commands for a new user: `make run` and `make test`. Both set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
CORES ?= all

.PHONY: run test lint unit install clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency pins or the package metadata change.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --workflow-profile profiles/default

lint: $(STAMP)
	$(BIN)/ruff check balloonreplay tests benchmarks workflow/scripts
	$(BIN)/ruff format --check balloonreplay tests benchmarks workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1 --workflow-profile profiles/default

unit: $(STAMP)
	bash scripts/run-pytest.sh $(PYTEST_ARGS)

test: lint unit

clean:
	rm -rf $(VENV) .snakemake .pytest_cache .ruff_cache .hypothesis
