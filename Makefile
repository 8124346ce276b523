# Two commands for a fresh machine (Python 3.11): `make demo` and `make test`.
# Both create .venv/ once and reuse it; `make lint` and `make bench` need it too.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers for `make test` (a test file stays in one worker: its fixtures are
# made once); each runs one OpenMP thread (tests/conftest.py)
TEST_WORKERS ?= 2

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --progress-bar off -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/verticals demo

test: $(STAMP)
	@$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/finance.py
	$(BIN)/python benchmarks/medical.py
	$(BIN)/python benchmarks/manufacturing.py
	$(BIN)/python benchmarks/traffic.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/tracking.py
	$(BIN)/python benchmarks/predlog.py
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf runs bundles cache predlog monitoring
