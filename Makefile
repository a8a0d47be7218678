# Every target bootstraps .venv itself, so a fresh clone needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./stellwerk-data
HOST ?= 127.0.0.1
PORT ?= 8080
# More flags for `stellwerk serve`, e.g. make run ARGS="--allow-private-targets --log-level debug"
ARGS ?=

.PHONY: run test lint bench clean

$(BIN)/stellwerk: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/stellwerk
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/stellwerk
	$(BIN)/stellwerk serve --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT) $(ARGS)

# Two workers, a test file each at a time: most of the suite's time is servers starting and
# processes being killed and waited for, which a second worker overlaps (docs/testing.md).
PYTEST_ARGS ?= -n 2 --dist loadfile

test: $(VENV)/.dev
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/mypy

bench: $(VENV)/.dev
	$(BIN)/stellwerk bench all

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
