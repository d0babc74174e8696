# The README's two commands: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test setup lint cluster cluster-stop clean

# A virtual environment with lens and its dev tools; re-runs only when pyproject changes.
$(BIN)/lens: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/lens

setup: $(BIN)/lens

# (1) The embedded default: simulate, pack, cross-validate and report, on this machine.
demo: setup
	$(BIN)/lens demo --out demo

# (2) The whole test suite, including the end-to-end tests on a local one-node Slurm cluster.
test: setup
	bash slurm/dev/start.sh
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

cluster:
	bash slurm/dev/start.sh

cluster-stop:
	bash slurm/dev/stop.sh

clean:
	rm -rf demo runs .pytest_cache
