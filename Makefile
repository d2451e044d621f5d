# Two commands set up a fresh machine and do the work:
#   make run    virtual environment + locked install, then the retraining flow on the built-in data: every DVC
#               stage, the MLflow registry (champion/challenger), the champion's Bento
#   make paper  the paper's Tables I-V as queued DVC experiments on make run's results: reports/paper.md
#   make serve  the champion's Bento on http://127.0.0.1:3000 (HOST=..., PORT=...)
#   make ui     the MLflow UI on http://127.0.0.1:5000 (UI_PORT=...); make prefect-ui: Prefect's, 4200 (PREFECT_PORT)
#   make test   virtual environment + locked install, then the test suite
# `make lock` re-resolves requirements.lock from pyproject.toml (needs uv; seconds).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch's CPU wheel: a local wheel folder when the machine has one, else PyTorch's CPU index.
TORCH_WHEELS ?= /opt/wheels
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SOURCE := $(if $(wildcard $(TORCH_WHEELS)/torch-*.whl),--find-links $(TORCH_WHEELS),--extra-index-url $(TORCH_CPU_INDEX))
PYTEST_ARGS ?=
# Stage commands in dvc.yaml call `python`: the environment's. albumentations must not phone home.
export PATH := $(abspath $(BIN)):$(PATH)
export NO_ALBUMENTATIONS_UPDATE := 1
# Prefect's ephemeral server: no telemetry heartbeat (it races the flow for the SQLite file at start-up)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# its start on a new database (migrations) can take longer than Prefect's 20 s on a busy 2-core machine; set here
# because Prefect reads its settings when it is imported, before the flow's own main() could set them
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

# Headless Chromium for the web page test: Debian's package, installed when missing and apt-get can (root).
CHROMIUM ?= /usr/bin/chromium

# `make serve`: the champion's Bento, named in the file `make run` writes
CHAMPION_FILE ?= models/champion/champion.json
HOST ?= 127.0.0.1
PORT ?= 3000
# `make ui` (MLflow) and `make prefect-ui` (Prefect), on HOST too
UI_PORT ?= 5000
PREFECT_PORT ?= 4200

# `make plots`: `dvc plots show` as a page that renders offline (scripts from the npm registry, in plots/)
PLOTS := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))plots
PLOTS_OUT ?= dvc_plots

.PHONY: install browser run paper serve test ui prefect-ui plots lock lint clean-venv

# --compile-bytecode: the packages' .pyc files are written at install. Python never writes them itself where
# PYTHONDONTWRITEBYTECODE is set (as on this machine), and then every process (each DVC stage, each `dvc`
# call, each server) compiled torch, Lightning and MLflow from source again: 27 s to import a training stage,
# 7.5 s with the .pyc files (35 s to compile them once)
$(BIN)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode $(TORCH_SOURCE) -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e . --config-settings editable_mode=compat
	touch $@

install: $(BIN)/.installed

browser:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "Chromium not installed: the web page test skips (CI=true makes it fail)"

run: install
	$(BIN)/python -m pipelines.retrain --host $(HOST) --port $(PORT) --ui-port $(UI_PORT) --prefect-port $(PREFECT_PORT)
	$(BIN)/dvc status

# The paper's Tables I-V as DVC experiments queued on the workspace's results (after make run; see the README):
# reports/paper.md, reports/paper.json, reports/paper/*.png. FORCE=1 runs the experiments that exist again.
paper: install
	$(BIN)/python -m pipelines.paper $(if $(FORCE),--force)

# The current champion's Bento (a pinned model version; /info names it) on http://$(HOST):$(PORT)
serve:
	@test -f $(CHAMPION_FILE) || { echo "no champion yet ($(CHAMPION_FILE) is missing): run make run first" >&2; exit 1; }
	$(BIN)/bentoml serve "$$($(BIN)/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["bento"])' \
		$(CHAMPION_FILE))" --host $(HOST) --port $(PORT)

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The MLflow UI on the embedded store, or on the store MLFLOW_TRACKING_URI names (runs of each pipeline execution
# grouped under its flow run; the registry)
ui: install
	@case "$${MLFLOW_TRACKING_URI:-}" in http://*|https://*|databricks*) \
		echo "MLFLOW_TRACKING_URI is a tracking server ($$MLFLOW_TRACKING_URI): its own UI shows the runs"; exit 0;; esac; \
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" --host $(HOST) --port $(UI_PORT)

# The Prefect UI on Prefect's local database ($$PREFECT_HOME, default ~/.prefect): the flow runs of `make run`
prefect-ui: install
	$(BIN)/prefect server start --host $(HOST) --port $(PREFECT_PORT)

# dvc plots show with a local template: vega, vega-lite, vega-embed installed from npm (plots/package-lock.json)
# and copied beside the page, so $(PLOTS_OUT)/index.html draws its charts without internet
plots:
	npm ci --prefix $(PLOTS) --no-audit --no-fund --silent
	$(BIN)/dvc plots show --html-template $(PLOTS)/template.html -o $(PLOTS_OUT)
	mkdir -p $(PLOTS_OUT)/vendor
	cp $(PLOTS)/node_modules/vega/build/vega.min.js $(PLOTS)/node_modules/vega-lite/build/vega-lite.min.js \
		$(PLOTS)/node_modules/vega-embed/build/vega-embed.min.js $(PLOTS_OUT)/vendor/

lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		$(TORCH_SOURCE) --override torch-override.txt -o requirements.lock

lint: install
	$(BIN)/ruff check components pipelines serving tests benchmarks

clean-venv:
	rm -rf $(VENV)
