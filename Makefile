# The two commands: `make run` (the whole system with demo data) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
TYPED := config core tenants catalog events recommendations outcomes operations
# the Django plugin of mypy loads the settings: with these it starts no embedded service (it queries nothing)
TYPECHECK_ENV := DATABASE_URL=postgres://typecheck@127.0.0.1:1/none CELERY_BROKER_URL=memory:// ANSWER_CACHE_URL= \
	SECRET_KEY=typecheck-only-not-a-secret-0123456789abcdef
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench-ingest bench clean

# The browser test drives Debian's Chromium and ChromeDriver; installed here where apt-get can (root).
BROWSER_STAMP := .local/.browser-checked

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python manage.py serve

$(BROWSER_STAMP):
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "chromium and chromedriver are missing and cannot be installed here: the browser test will skip"; \
	  fi; \
	fi
	mkdir -p .local && touch $@

# the lint and the type check run first: CI holds them as it holds the tests
test: $(STAMP) $(BROWSER_STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(TYPECHECK_ENV) $(BIN)/mypy $(TYPED)

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .local
