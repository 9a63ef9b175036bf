# Two commands for a new user: `make run` and `make test`. Both set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# snakefmt calls shfmt, and rules call balloonreplay: both live in the venv.
export PATH := $(abspath $(BIN)):$(PATH)
STAMP := $(VENV)/.install-stamp
CORES ?= all

.PHONY: run test lint unit test-cluster install clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency pins or the package metadata change.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,slurm]'
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
	bash scripts/run-pytest.sh -m "not slurm" $(PYTEST_ARGS)

# Brings up a single-node SLURM on this machine (root, Debian), runs the .test study through
# Snakemake's SLURM executor and locally, compares them, and brings SLURM down; see the
# README's cluster section. -rP prints the measured times of the passing test.
test-cluster: $(STAMP)
	bash scripts/run-pytest.sh -m slurm -rP $(PYTEST_ARGS)

test: lint unit

clean:
	rm -rf $(VENV) .snakemake .pytest_cache .ruff_cache .hypothesis
