# `make run`: set up (once) and run the smoke study on the embedded SQLite default.
# `make test`: set up (once) and run the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint clean bench-env

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hpsearch run studies/smoke.toml

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check search objectives tests benchmarks scripts
	$(BIN)/mypy search objectives

# The benchmark environment: hpsearch plus the tools benchmarks/search_efficiency.py compares it
# with (keras-tuner), kept out of hpsearch's own environment.
bench-env: .venv-bench/.installed

.venv-bench/.installed: pyproject.toml
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --upgrade pip
	.venv-bench/bin/python -m pip install --quiet -e '.[bench]'
	touch .venv-bench/.installed

clean:
	rm -rf $(VENV) .venv-bench hpsearch.db
