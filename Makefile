# Everything runs from a virtual environment in .venv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
LINT_STAMP := $(subst .installed-,.installed-lint-,$(STAMP))

.PHONY: install run process demo test soak lint bench clean up down

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

# The lint tools at the exact versions of setup.cfg's `lint` extra.
$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

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

SOAK_SECONDS ?= 15
soak: install  ## the fault suite at length (tests/test_soak.py; `make test` runs it with 2 s phases)
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest --timeout=900 tests/test_soak.py

lint: $(LINT_STAMP)
	$(BIN)/ruff check userdata tests bench
	$(BIN)/ruff format --check userdata tests bench
	$(BIN)/mypy userdata bench
	$(BIN)/mypy --allow-untyped-defs --allow-incomplete-defs tests

BENCH_ARGS ?=
bench: install  ## benchmarks (bench/RESULTS.md), e.g. BENCH_ARGS="--sizes 10000,100000,1000000"; the PostgreSQL one needs a server on 127.0.0.1:5432
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.postgres

up:  ## MinIO, PostgreSQL and the service in S3 mode, with docker compose (see docker-compose.yml)
	docker compose up --build -d

down:  ## stop and remove the compose containers (data stays in compose-data/ and the volumes)
	docker compose down

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
