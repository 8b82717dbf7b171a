# The two commands of the README. Each creates its own virtual environment when there is none.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST := HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider

.PHONY: setup run test test-fast test-reversed test-shuffled lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

# Main job on the bundled real Fashion-MNIST subset: PGD adversarial training (smoke preset), then
# per-exit clean and adversarial accuracy, budgeted and transferability metrics, and one JSON result.
run: setup
	$(BIN)/neokd-bench run --defense adv --dataset fashion-mnist --preset smoke

# The whole suite: what CI runs (via .ci/run).
test: setup
	$(PYTEST)

# Contributors' quick loop: everything but the tests marked slow (under 3 minutes on a 2-core CPU).
test-fast: setup
	$(PYTEST) -m "not slow"

# The suite in other orders, to show that no test depends on what an earlier one left behind.
test-reversed: setup
	$(PYTEST) --reverse

SEED ?= 20261125
test-shuffled: setup
	$(PYTEST) --random-order-bucket=global --random-order-seed=$(SEED)

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/bench_attacks.py

clean:
	rm -rf $(VENV) runs .pytest_cache
