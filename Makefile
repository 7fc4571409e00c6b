# NyxCore: the two commands are `make run` and `make test`; see README.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi

.DEFAULT_GOAL := help
.PHONY: help run test lint typecheck e2e bench lock clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# One stamp per dependency set, so editing a lock file reinstalls and nothing else does.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==25.3 setuptools==80.9.0

$(VENV)/.app-installed: requirements/app.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/app.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.test-installed: requirements/test.txt $(VENV)/.app-installed
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/test.txt
	touch $@

# `make run PORT=5001` when 5000 is taken (AirPlay on macOS); links in mail follow the port unless
# PUBLIC_URL is set in the environment.
PORT ?= 5000
PUBLIC_URL ?= http://127.0.0.1:$(PORT)

run: $(VENV)/.app-installed  ## Start the development server on http://127.0.0.1:$PORT (default 5000; SQLite, console mail)
	mkdir -p instance
	NYXCORE_ENV=development $(FLASK) db upgrade
	NYXCORE_ENV=development PUBLIC_URL='$(PUBLIC_URL)' $(FLASK) run --host 127.0.0.1 --port '$(PORT)' --debug

lint: $(VENV)/.test-installed  ## ruff, mypy --strict on nyxcore/, and the import-linter contracts (pyproject.toml)
	$(BIN)/ruff check nyxcore tests bench migrations wsgi.py worker.py
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(VENV)/.test-installed  ## Lint, then the whole suite against PostgreSQL and Redis
	$(BIN)/python tests/check_services.py
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -n auto --maxprocesses 4 --dist loadgroup --durations=15 $(PYTEST_ARGS)

bench: $(VENV)/.test-installed  ## Run the benchmarks under bench/ (slow; prints ratios)
	$(BIN)/python bench/run_all.py

lock:  ## Re-resolve requirements/*.txt from pyproject.toml
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet setuptools==80.9.0 '.[test]'
	.lock-venv/bin/pip freeze --exclude nyxcore > requirements/test.txt.new
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet setuptools==80.9.0 .
	.lock-venv/bin/pip freeze --exclude nyxcore > requirements/app.txt
	mv requirements/test.txt.new requirements/test.txt
	rm -rf .lock-venv

clean:  ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
