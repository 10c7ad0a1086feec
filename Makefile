# Two commands for a newcomer: `make dev` (install + run on the bundled samples) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEV_PORT ?= 3000

.PHONY: install dev dev-port-free test lint bench lock

# requirements.lock pins every package the suite ran with (`make lock` regenerates it from pyproject.toml);
# it is a constraints file, so pyproject.toml still says what is needed and the lock only says which release.
$(BIN)/rd-assets: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,deploy]'
	touch $@

install: $(BIN)/rd-assets

test: install
	$(BIN)/ruff check rd_assets rd_assets_tests bench
	$(BIN)/ruff format --check rd_assets rd_assets_tests bench
	$(BIN)/pytest -q

# torch is pinned without its local label so pip takes the CPU wheel where one is on disk (see README).
lock: install
	$(BIN)/pip-compile --quiet --extra test --extra deploy --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml
	sed -i 's/^torch==\([0-9.]*\)+cpu/torch==\1/' requirements.lock

lint: install
	$(BIN)/ruff check --fix rd_assets rd_assets_tests bench
	$(BIN)/ruff format rd_assets rd_assets_tests bench

# The settings of `make dev` live in .env (a copy of .env.example for the bundled samples unless you wrote your
# own): the sample extraction and `dg dev` both read it, so the CLI and Dagster publish the same bundles.
.env:
	cp .env.example .env

# `dg dev` does not stop when its webserver cannot bind (the daemon runs on, the UI never comes up), so the port
# is checked first, the way the webserver binds it (SO_REUSEADDR: only a listening socket makes it fail).
dev-port-free:
	@$(PYTHON) -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' $(DEV_PORT) 2>/dev/null || \
		{ echo "make dev: 127.0.0.1:$(DEV_PORT) is already in use (another dg dev?); stop it or run make dev DEV_PORT=<free port>" >&2; exit 1; }

# Extract the three bundled samples with the CLI, then start the Dagster UI + daemon on 127.0.0.1:$(DEV_PORT)
# (services log at INFO; the job's run config keeps the run workers' DEBUG events out of the terminal).
dev: dev-port-free install .env
	set -a && . ./.env && set +a && \
	for task in "$$RD_ASSETS_LOG_ROOT"/*/; do \
		$(BIN)/rd-assets extract "$$task" --store "$$RD_ASSETS_STORE" \
			$$(printf '%s' "$$RD_ASSETS_PATH_MAP" | tr ';' '\n' | sed -n 's/^ *\(..*\)$$/--path-map=\1/p') || exit 1; \
	done
	mkdir -p .dagster_home && cp dagster.yaml .dagster_home/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dg dev --host 127.0.0.1 --port $(DEV_PORT) --log-level info

bench: install
	$(BIN)/python bench/bench_session_reader.py
	$(BIN)/python bench/bench_factor_order.py
	$(BIN)/python bench/bench_sensor.py
	$(BIN)/python bench/bench_api.py
	$(BIN)/python bench/bench_pull.py
	$(BIN)/python bench/bench_dagster_run.py
