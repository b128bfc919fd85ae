# Tollgate — install, run, test. Everything installs into ./.venv from the pinned lock file.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test test-fast lint contracts typecheck bench-overhead bench-routing services clean

$(STAMP): requirements.lock pyproject.toml
	@python3 -m pip --version >/dev/null 2>&1 || { echo "python3 with pip is required"; exit 1; }
	python3 -m pip install --quiet --disable-pip-version-check "uv==0.13.9" || true
	@if python3 -m uv --version >/dev/null 2>&1; then \
	  python3 -m uv venv --quiet --allow-existing $(VENV) --python python3 && \
	  python3 -m uv pip install --quiet --python $(PY) --find-links /opt/wheels -r requirements.lock && \
	  python3 -m uv pip install --quiet --python $(PY) --no-deps -e . ; \
	else \
	  python3 -m venv $(VENV) && \
	  $(PY) -m pip install --quiet -r requirements.lock && \
	  $(PY) -m pip install --quiet --no-deps -e . ; \
	fi
	touch $(STAMP)

install: $(STAMP)

## Run the gateway on its embedded defaults (config.yaml, SQLite under ./var, in-process state).
serve: install
	$(VENV)/bin/tollgate serve

## Make sure PostgreSQL and Redis are up (the integration tests talk to real servers).
services:
	bash .ci/services

## The whole test suite: unit, service and integration tiers. The architecture rules (import
## contracts, os.environ only in settings, module sizes) run in it: tests/unit/test_architecture.py.
test: install services
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/service

lint: install
	$(VENV)/bin/ruff check gateway policies predictors migrations tests bench

## The import contracts alone ([tool.importlinter] in pyproject.toml), with their explanations.
contracts: install
	$(VENV)/bin/lint-imports --no-cache

## mypy over gateway, policies and predictors; strict on policies/ and predictors/. Not part
## of `make test`: a cold run takes about 2 CPU-minutes.
typecheck: install
	$(VENV)/bin/mypy

bench-overhead: install
	$(PY) bench/overhead.py

bench-routing: install
	$(PY) bench/routing.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
