# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.complai-installed
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/complai quickstart --workspace build/quickstart --reset

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps "anonypy>=0.2"
	$(BIN)/python -m pip install --quiet -c constraints.txt "matplotlib>=3.8"
	$(BIN)/python benchmarks/ledger.py
	$(BIN)/python benchmarks/vault.py
	$(BIN)/python benchmarks/access.py
	$(BIN)/python benchmarks/deid.py
	$(BIN)/python benchmarks/dp_queries.py
	$(BIN)/python benchmarks/dp_training.py
	$(BIN)/python benchmarks/federated.py

clean:
	rm -rf build .pytest_cache .ruff_cache .hypothesis
