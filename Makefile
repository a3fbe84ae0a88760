# The README's two commands: `make demo` (main job) and `make test` (full test suite).
# Both use the virtual environment in .venv, built on first use: `make demo` installs only
# the package (what a plain `pip install confessional` gives), `make test` adds the extras
# and tools the test suite needs (Phoenix, MLflow, provider packages, linters).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BASE_STAMP := $(VENV)/.installed
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint env clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv

$(BASE_STAMP): pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e .
	touch $(BASE_STAMP)

$(STAMP): pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[dev]"
	touch $(STAMP) $(BASE_STAMP)

env: $(STAMP)

demo: $(BASE_STAMP)
	$(BIN)/confessional demo

# The suite starts real servers itself: a PostgreSQL server must be installed (Debian's
# package, installed here if missing) and the local model fetched and built (cached after
# the first time, about 6 minutes on 2 cores).
test: $(STAMP)
	.ci/install-postgres
	.ci/install-chromium
	.ci/prepare-local-model
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
