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

# Extract both bundled samples with the CLI, then start the Dagster UI + daemon on 127.0.0.1:3000.
dev: install
	$(BIN)/rd-assets extract $(SAMPLES)/log/2026-03-02_09-15-27-118204 --store .rd_assets_store \
		--path-map /mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace=$(SAMPLES)/workspaces
	$(BIN)/rd-assets extract $(SAMPLES)/log/2026-03-05_14-02-51-730915 --store .rd_assets_store \
		--path-map /mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace=$(SAMPLES)/workspaces
	mkdir -p .dagster_home && cp dagster.yaml .dagster_home/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -h 127.0.0.1 -p 3000

bench: install
	$(BIN)/python bench/bench_session_reader.py
	$(BIN)/python bench/bench_factor_order.py
	$(BIN)/python bench/bench_sensor.py
	$(BIN)/python bench/bench_api.py
