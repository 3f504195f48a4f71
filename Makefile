# Everything runs from a virtual environment in .venv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run process demo test lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install  ## the service on the folder store (minio-data/), with demo data if it is empty
	$(BIN)/userdata demo --if-empty
	$(BIN)/userdata serve

process: install  ## one batch pass: read minio-data/, write output.csv, exit
	$(BIN)/userdata process

demo: install  ## (re)write the demo data set in minio-data/
	$(BIN)/userdata demo

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/python -m pip install --quiet ruff mypy
	$(BIN)/ruff check userdata tests
	$(BIN)/ruff format --check userdata tests
	$(BIN)/mypy userdata

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
