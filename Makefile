# Two commands for a newcomer: `make dev` (install + run on the bundled samples) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLES ?= $(abspath ../shared/samples_v3)
SAMPLE_KEY ?= rdgen-sample-signing-key-0123456789abcdef

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

# Extract the three bundled samples with the CLI, then start the Dagster UI + daemon on 127.0.0.1:3000.
# The samples mix one signed run with plain ones: with a key configured, plain runs are refused unless
# RD_ASSETS_ALLOW_UNSIGNED=1 says so explicitly.
SAMPLE_ENV := RD_ASSETS_SIGNING_KEY=$(SAMPLE_KEY) RD_ASSETS_ALLOW_UNSIGNED=1
dev: install
	for task in $(SAMPLES)/log/*/; do \
		$(SAMPLE_ENV) $(BIN)/rd-assets extract $$task --store .rd_assets_store \
			--path-map /mnt/f/Dev/RD-Agent-main/git_ignore_folder/RD-Agent_workspace=$(SAMPLES)/workspaces || exit 1; \
	done
	mkdir -p .dagster_home && cp dagster.yaml .dagster_home/dagster.yaml
	$(SAMPLE_ENV) DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -h 127.0.0.1 -p 3000

bench: install
	$(BIN)/python bench/bench_session_reader.py
	$(BIN)/python bench/bench_factor_order.py
	$(BIN)/python bench/bench_sensor.py
	$(BIN)/python bench/bench_api.py
	$(BIN)/python bench/bench_pull.py
