# Two commands for a fresh machine (Python 3.11): `make demo` and `make test`.
# Both create .venv/ once and reuse it; `make lint` and `make bench` need it too.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --progress-bar off --no-compile -e ".[all,dev]"
	@# bytecode on every core (pip compiles file by file on one: a minute of the install);
	@# a few test files inside packages are not Python 3 and fail to compile, as under pip
	-@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/verticals demo

test: $(STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
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
