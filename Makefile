# The two commands of the README. Each creates its own virtual environment when there is none.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup run test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

# Main job on the bundled real Fashion-MNIST subset: PGD adversarial training (smoke preset), then
# per-exit clean and adversarial accuracy, budgeted and transferability metrics, and one JSON result.
run: setup
	$(BIN)/neokd-bench run --defense adv --dataset fashion-mnist --preset smoke

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider

bench: setup
	$(BIN)/python benchmarks/bench_attacks.py

clean:
	rm -rf $(VENV) runs .pytest_cache
