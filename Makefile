# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.complai-installed
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck bench clean browser java

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,spark]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/complai quickstart --workspace build/quickstart --reset

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

# the HTML audit report is checked in headless Chromium (Debian's package)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null))

# Spark (external datasets, tests/spark) runs on a JVM: Java 17 or later (Debian's headless runtime)
java:
	@command -v java >/dev/null 2>&1 || \
	  (apt-get install -y -q openjdk-17-jre-headless >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q openjdk-17-jre-headless >/dev/null))

test: lint typecheck browser java
	$(BIN)/pytest -n 2 --dist loadscope $(PYTEST_ARGS)

bench: install java
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps "anonypy>=0.2"
	$(BIN)/python -m pip install --quiet -c constraints.txt "locust>=2.20" "pipeline-dp>=0.3.1"
	$(BIN)/python benchmarks/ledger.py
	$(BIN)/python benchmarks/vault.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/access.py
	$(BIN)/python benchmarks/deid.py
	$(BIN)/python benchmarks/dp_queries.py
	$(BIN)/python benchmarks/dp_budget.py
	$(BIN)/python benchmarks/spark_dp.py
	$(BIN)/python benchmarks/dp_training.py
	$(BIN)/python benchmarks/federated.py
	$(BIN)/python benchmarks/audit.py
	$(BIN)/python benchmarks/service.py

clean:
	rm -rf build .pytest_cache .ruff_cache .hypothesis
