# One virtual environment, made with pip from constraints.txt (torch pinned to the local wheel).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck bench bench-peers bench-aggregators clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/phalanx run --out runs/seed

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/ruff check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/seed_parity.py --repeats 3 --markdown docs/seed_parity.md --json docs/seed_parity.json
	$(BIN)/python benchmarks/fault_accuracy.py --seeds 42 7 123
	$(BIN)/python benchmarks/aggregator_speed.py  # times ours alone unless bench-peers ran

# ByzFL and Flower for the aggregator comparison, kept out of `install`: both go in with
# --no-deps from exact pins, since their declared requirements clash with ours (see
# benchmarks/requirements-peers.txt). `pip check` will list what they declare but do not use.
# ByzFL's aggregators also need scipy, which `install` already brings (a phalanx dependency).
bench-peers: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps -r benchmarks/requirements-peers.txt

bench-aggregators: bench-peers
	$(BIN)/python benchmarks/aggregator_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
