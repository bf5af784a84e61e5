# Two entry points (see README): `make run` (main job) and `make test`.
# Both create .venv with Python 3.11 and install requirements.txt + this package; pip
# skips what is already installed, so re-running is cheap.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test train bench gpu-check browser postgres clean install student-kit

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

# The main job: build the book (executing every changed chapter) into _build/html.
# One BLAS/OpenMP thread per kernel: the chapters' arrays are small, and extra threads
# only contend for the cores.
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is in _build/html. Open _build/html/index.html, or serve it with"
	@echo "  $(BIN)/python -m http.server -d _build/html 8000   and visit http://localhost:8000"

# The student kit (dist/student-kit/ and dist/student-kit.zip): the book, exercises/, a wheel
# without the answer key (dlcourse/answers), a student README. HTML=_build/html reuses a built
# book; without it the book is built first (as `make run`).
student-kit: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dlcourse kit dist/student-kit $(if $(HTML),--html $(HTML))

# The browser test drives Debian's chromium, and its Chinese text needs a CJK font (without
# one every Chinese term renders as boxes, and the test fails); install both where we may
# (root, as in CI).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! fc-list :lang=zh 2>/dev/null | grep -q .; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium and fonts-noto-cjk for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; \
	  else echo "note: chromium or a CJK font is missing (sudo apt-get install chromium fonts-noto-cjk); the browser test will be skipped or fail"; fi; \
	fi

# The PostgreSQL gradebook test starts a throwaway server from Debian's binaries.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql for the gradebook test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "note: postgresql is missing; the PostgreSQL test will be skipped"; fi; \
	fi

test: $(STAMP) browser postgres
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n 2 --dist loadgroup

# The documents' MLP on the embedded digits: test accuracy and a loss-curve PNG.
train: $(STAMP)
	$(BIN)/dlcourse train mlp

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

# Runs the PyTorch comparison tests with torch on CUDA and writes docs/gpu-parity.md.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_parity.py --out docs/gpu-parity.md

clean:
	rm -rf $(VENV) _build .pytest_cache dist
