# Everything runs from a virtual environment in .venv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp is named after the metadata and the pins, so a checkout that changes them reinstalls
# even where its files are older than the stamp.
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
LINT_STAMP := $(subst .installed-,.installed-lint-,$(STAMP))
# The pins are resolved for one Python minor (constraints.txt's header names it: the image's);
# `make install PINS=` installs without them on another.
PINS ?= -c constraints.txt

.PHONY: install constraints debs run process demo test soak lint readme screenshot bench clean up down

# Every package at its version in constraints.txt (see `constraints` below).
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PINS) -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

# The lint tools at the exact versions of setup.cfg's `lint` extra.
$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(PINS) -e '.[test,lint]'
	touch $@

install: $(STAMP)

# constraints.txt pins what `make install`, `make lint` and the Dockerfile install: everything
# `pip install -e '.[test,lint]'` gives a fresh venv of $(PYTHON) now (the project itself, pip
# and setuptools left out). Run it after changing setup.cfg's requirements, or to move up.
constraints:  ## refresh constraints.txt, from a throwaway venv
	set -e; venv=$$(mktemp -d); trap 'rm -rf "$$venv" constraints.txt.new' EXIT; \
	$(PYTHON) -m venv "$$venv"; \
	"$$venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$venv/bin/python" -m pip install --quiet -e '.[test,lint]'; \
	{ \
	  echo "# Exact versions of everything the service and its test and lint extras install, for"; \
	  echo "# make install, make lint and the Dockerfile (pip install -c constraints.txt). Written by"; \
	  echo "# make constraints (Python $$("$$venv/bin/python" -c 'import platform; print(platform.python_version())'), $$(uname -sm)): run it again, do not edit by hand."; \
	  "$$venv/bin/python" -m pip freeze --exclude-editable | LC_ALL=C sort -f -t= -k1,1; \
	} > constraints.txt.new; \
	mv constraints.txt.new constraints.txt

run: install  ## the service on the folder store (minio-data/), with demo data if it is empty
	$(BIN)/userdata demo --if-empty
	$(BIN)/userdata serve

process: install  ## one batch pass: read minio-data/, write output.csv, exit
	$(BIN)/userdata process

demo: install  ## (re)write the demo data set in minio-data/
	$(BIN)/userdata demo

# Debian packages the tests run: chromium for the dashboard's browser tests (tests/test_browser.py),
# nats-server for the replicas' JetStream (tests/test_jetstream.py), haproxy for the compose
# topology's load balancer (tests/test_deploy.py). Where one is missing, apt-get is there and we
# are root (a fresh Debian CI machine), it is installed first; elsewhere, or if that fails, those
# tests skip saying why (fail with TESTS_REQUIRE_BROWSER / TESTS_REQUIRE_NATS / TESTS_REQUIRE_HAPROXY).
DEBS := /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver /usr/sbin/nats-server:nats-server \
	/usr/sbin/haproxy:haproxy
debs:
	@missing=""; for pair in $(DEBS); do [ -x "$${pair%%:*}" ] || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing$$missing for the tests (apt-get)"; \
	  log=$$(mktemp); \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; } \
	    >"$$log" 2>&1 || { tail -n 20 "$$log"; echo "not installed:$$missing; the tests that need them will say so"; }; \
	  rm -f "$$log"; \
	fi

test: install debs
	$(BIN)/pytest

SOAK_SECONDS ?= 15
soak: install  ## the fault suite at length (tests/test_soak.py; `make test` runs it with 2 s phases)
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest --timeout=900 tests/test_soak.py

lint: $(LINT_STAMP)
	$(BIN)/ruff check userdata tests bench
	$(BIN)/ruff format --check userdata tests bench
	$(BIN)/mypy userdata bench
	$(BIN)/mypy --allow-untyped-defs --allow-incomplete-defs tests

readme: install  ## README.md's sample answers, from the demo data served with a pinned clock
	$(BIN)/python tests/readme_samples.py

screenshot: install debs  ## docs/dashboard.png, README.md's picture of the dashboard, from the demo data served
	$(BIN)/python tests/screenshot.py

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
