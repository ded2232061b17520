# Every target creates the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pyright docs pytest bench mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip  # --group needs pip >= 25.1
	$(BIN)/python -m pip install -q -e . --group dev
	touch $(STAMP)

DEMO_VENV := .venv-demo

$(DEMO_VENV)/.installed: pyproject.toml  # the package and its runtime dependencies only
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install -q -e .
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python examples/statements.py

test: lint typecheck pyright docs pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pyright strict on the examples and the typing pins (pyrightconfig.json): what users' code sees.
# The wheel bundles pyright, and its `nodejs` extra brings node from PyPI: nothing is downloaded here.
pyright: $(STAMP)
	PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(BIN)/pyright

docs: $(STAMP)  # fails on any warning: a broken link, a docstring griffe can't read
	$(BIN)/mkdocs build --strict --site-dir site

pytest: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

bench: $(STAMP)  # add --strict to a script to make a missed target fail
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/durable.py
	$(BIN)/python benchmarks/durable_threads.py
	$(BIN)/python benchmarks/run_many.py
	$(BIN)/python benchmarks/executors.py
	$(BIN)/python benchmarks/dask_executor.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/store_runs.py
	$(BIN)/python benchmarks/store_open.py
	$(BIN)/python benchmarks/queues.py
	$(BIN)/python benchmarks/entities.py
	$(BIN)/python benchmarks/postgres.py  # needs a server: CHOREOGRAPH_TEST_POSTGRES

# Mutation testing of the core (choreograph/_core/, choreograph/_errors.py; see
# [tool.mutmut] in pyproject.toml): about 20 minutes on 2 cores, so not part of
# `make test`. Starts from scratch each time (mutmut keeps a mutant's verdict
# until its function changes, even when the tests do); to re-check some
# mutants after changing tests: `$(BIN)/mutmut run 'choreograph._core.loop.*'`.
mutation: $(STAMP)
	rm -rf mutants
	$(BIN)/mutmut run
	$(BIN)/python tools/mutation_score.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) mutants .coverage .coverage.* .mypy_cache .ruff_cache site
