# The two commands a newcomer needs: `make run` and `make test`. Everything else is installed
# by them into .venv (Python 3.11+).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-integration check lint format migrations-check worker beat clean screenshots bench

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

## Embedded mode on http://127.0.0.1:8000 (SQLite in var/, tasks in-process).
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py runserver 127.0.0.1:8000

## The test suite (embedded settings: SQLite, in-process tasks).
test: install
	$(BIN)/python -m pytest -q

## The same suite against PostgreSQL and Redis (DATABASE_URL / CELERY_BROKER_URL must be set).
test-integration: install
	$(BIN)/python -m pytest -q

## Refresh docs/screenshots/ (the README's images) from the browser tests.
screenshots: install
	SCREENSHOT_DIR=docs/screenshots $(BIN)/python -m pytest -q tests/browser/test_screenshots.py

## The benchmarks; each rewrites its section of docs/benchmarks.md. The sync benchmark runs on
## PostgreSQL when DATABASE_URL is set (a *_bench database, emptied), else on SQLite; the
## fan-out, console and report benchmarks need PostgreSQL (their own *_bench databases by
## default). About an hour in all; needs Debian's wrk (apt-get install -y wrk).
bench: install
	@command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk"; exit 1; }
	$(BIN)/python benchmarks/sync.py --write
	$(BIN)/python benchmarks/fanout.py --write
	$(BIN)/python benchmarks/console.py --write
	$(BIN)/python benchmarks/reports.py --write

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrations-check: install
	$(BIN)/python manage.py makemigrations --check --dry-run

## What CI runs on the embedded settings.
check: lint migrations-check test

worker: install
	$(BIN)/celery -A santaadmin worker --loglevel=info

beat: install
	$(BIN)/celery -A santaadmin beat --loglevel=info

clean:
	rm -rf $(VENV) var/*.sqlite3* .pytest_cache .ruff_cache
