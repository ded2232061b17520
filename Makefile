# Every target creates the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs pytest bench mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip  # --group needs pip >= 25.1
	$(BIN)/python -m pip install -q -e . --group dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/statements.py

test: lint typecheck docs pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

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
	rm -rf $(VENV) mutants .coverage .coverage.* .mypy_cache .ruff_cache site
