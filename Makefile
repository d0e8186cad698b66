# Two commands for a fresh machine with only python3:
#   make demo   set up .venv, install, and diagnose a built-in faulty run on scikit-learn's digits
#   make test   set up .venv, install (Chromium too, for the browser tests), run ruff and the test suite (what CI runs)
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
FAULT ?= lr-too-high
# torch is pinned to the CPU build so pip never resolves a multi-GB CUDA wheel.
TORCH ?= torch==2.13.0

.PHONY: demo test setup clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]" "$(TORCH)"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/traindoctor demo --fault $(FAULT)

test: setup
	tools/ensure-chromium
	tools/ensure-postgres
	$(BIN)/python -m ruff check src tests benchmarks
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .traindoctor build src/*.egg-info
