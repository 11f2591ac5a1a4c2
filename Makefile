# Two entry points (see README.md): `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
# torch is installed first, with a pin you can override (e.g. TORCH_SPEC="torch==2.5.1"
# with PIP_INDEX_URL pointing at a CUDA wheel index), so pip never pulls CUDA by accident.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/synccurate demo example

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check synccurate tests benchmarks
	$(BIN)/ruff format --check synccurate tests benchmarks
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
