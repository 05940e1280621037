# Two entry points for a newcomer (see README.md):  make demo  and  make test
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= $(CURDIR)/demo

.PHONY: demo test venv system-deps lint clean

$(BIN)/python:
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(VENV)/.installed

system-deps:
	./scripts/install-system-deps

# The demo: builds everything, generates sample data, runs every shipped notebook.
demo: venv
	$(BIN)/python scripts/demo.py --dir $(DEMO_DIR)

# The whole test suite (installs the Debian packages the integration tests need).
test: venv system-deps
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests bench scripts notebooks/tools
	$(BIN)/mypy --config-file pyproject.toml

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info src/*.egg-info
