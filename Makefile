# `make run`: set up (once) and run the smoke study on the embedded SQLite default.
# `make test`: set up (once) and run the test suite (on several test processes at once).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The pinned versions the suite was run with (see constraints.txt); `CONSTRAINTS=` installs the
# newest versions pyproject.toml allows instead.
CONSTRAINTS ?= constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

.PHONY: setup run test lint clean bench-env refresh-pins

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIN) -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hpsearch run studies/smoke.toml

# The suite runs on TEST_PROCESSES test processes at once (pytest-xdist, each test given to
# whichever process is free); TEST_PROCESSES=0 runs it in this one process. Two, as many as the
# 2-core machines it runs on have cores: on them three took 806 s and 1,428 CPU-s, two 738 s
# and 1,274 CPU-s (more processes than cores only make each slower).
TEST_PROCESSES ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_PROCESSES)),,-n $(TEST_PROCESSES) --dist worksteal) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check hpsearch search objectives tests benchmarks scripts
	$(BIN)/mypy hpsearch search objectives

# The benchmark environment: hpsearch plus the tools benchmarks/search_efficiency.py compares it
# with (keras-tuner), kept out of hpsearch's own environment.
bench-env: .venv-bench/.installed

.venv-bench/.installed: pyproject.toml $(CONSTRAINTS)
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --upgrade pip
	.venv-bench/bin/python -m pip install --quiet $(PIN) -e '.[bench]'
	touch .venv-bench/.installed

# constraints.txt anew: the newest versions pyproject.toml allows, in a scratch environment.
# Then run `make clean test` on them before committing the new pins.
refresh-pins:
	rm -rf .venv-pins && $(PYTHON) -m venv .venv-pins
	.venv-pins/bin/python -m pip install --quiet --upgrade pip
	.venv-pins/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '/^#/p' constraints.txt; .venv-pins/bin/python -m pip freeze --exclude-editable \
		| grep -v '^hpsearch'; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	rm -rf .venv-pins

clean:
	rm -rf $(VENV) .venv-bench hpsearch.db
