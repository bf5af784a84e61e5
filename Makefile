# Two entry points (see README): `make run` (main job) and `make test`.
# Both create .venv with Python 3.11 and install requirements.txt + this package; pip
# skips what is already installed, so re-running is cheap.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench gpu-check clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/dlcourse train mlp

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

# Runs the PyTorch comparison tests with torch on CUDA and writes docs/gpu-parity.md.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_parity.py --out docs/gpu-parity.md

clean:
	rm -rf $(VENV) _build .pytest_cache
