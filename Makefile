# Two commands for a newcomer: `make dev` (install + run on the bundled samples) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLES ?= $(abspath ../shared/samples)

.PHONY: install dev test lint bench

$(BIN)/rd-assets: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/rd-assets

test: install
	$(BIN)/ruff check rd_assets rd_assets_tests bench
	$(BIN)/ruff format --check rd_assets rd_assets_tests bench
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check --fix rd_assets rd_assets_tests bench
	$(BIN)/ruff format rd_assets rd_assets_tests bench
