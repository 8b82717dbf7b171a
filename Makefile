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

# The main job on the bundled real Fashion-MNIST subset: NEO-KD (smoke preset: 3 epochs on 4,096 images), then
# clean and adversarial accuracy per exit, budgeted accuracy, transferability, and one JSON result. It ends by
# saying where the result is and how to compare it with adversarial training (the committed `adv` reference of
# the same preset and seed, leaderboard/results/fashion-mnist-smoke/).
RUN_OUT := runs/neokd-fashion-mnist-smoke-s0
REF := leaderboard/results/fashion-mnist-smoke
run: setup
	$(BIN)/neokd-bench run --defense neokd --dataset fashion-mnist --preset smoke --out $(RUN_OUT)
	@echo
	@echo "Result: $(RUN_OUT)/result.json (weights: $(RUN_OUT)/checkpoint.pt)."
	@echo "Compare it with PGD adversarial training (adv), same preset and seed:"
	@echo "  $(BIN)/neokd-bench compare $(RUN_OUT)/result.json $(REF)/adv-s0.json"
	@echo "Check it against the committed NEO-KD reference (what CI's gate does):"
	@echo "  $(BIN)/neokd-bench check $(RUN_OUT)/result.json --against $(REF)"
	@echo "Train adv yourself: $(BIN)/neokd-bench run --defense adv --dataset fashion-mnist --preset smoke"

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
