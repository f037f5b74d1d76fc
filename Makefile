# perpex: two commands matter, `make demo` and `make test`. Both build .venv from plain python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck pytest demo bench clean compiled test-compiled bench-compiled \
	sweep-demo browser serve

# The optional accelerated build (setup.py): the core compiled with mypyc, in a venv of its own
# so that the editable pure-Python install in .venv stays the reference.
VENV_C := .venv-mypyc
BIN_C := $(VENV_C)/bin
STAMP_C := $(VENV_C)/.installed
BUILD_TOOLS := setuptools==84.2.1 wheel==0.48.0

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint browser
	$(BIN)/pytest

# The dashboard's browser test drives Debian's chromium (Playwright's own download is not
# available). Installed here when missing and we may; otherwise that one test says why it skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	      >/dev/null) || echo "warning: could not install chromium; the browser test will skip"; \
	  else echo "note: chromium is missing (apt-get install chromium); the browser test will skip"; fi; }

# The main job: replay Black Thursday with 10,000 leveraged traders; summary + HTML report.
demo: venv
	$(BIN)/perpex simulate covid-2020-03-12 --out perpex-runs/covid-2020-03-12

bench: venv
	$(BIN)/python -m benchmarks

# A local exchange with Binance's API and the dashboard (Ctrl-C stops it; state in the data dir).
serve: venv
	$(BIN)/perpex serve

# A small insurance-fund sweep on this machine's cores (about two minutes on 2 cores).
sweep-demo: venv
	$(BIN)/perpex sweep insurance-fund-sizing-small --out perpex-runs/sweep-small

# Needs a C compiler and the Python headers; the plain build above needs neither.
compiled: $(STAMP_C)

$(STAMP_C): pyproject.toml setup.py $(wildcard src/perpex/*.py src/perpex/*/*.py)
	$(PYTHON) -m venv $(VENV_C)
	$(BIN_C)/python -m pip install --quiet --upgrade pip
	$(BIN_C)/python -m pip install --quiet $(BUILD_TOOLS) '.[dev,ray]'
	PERPEX_MYPYC=1 $(BIN_C)/python -m pip install --quiet --no-build-isolation --no-deps \
		--force-reinstall .
	rm -rf build
	touch $(STAMP_C)

# The server's tests (real clients, a browser) run once, in `make test`: the server is the same
# Python code on either core, and the compiled core is exercised by every other test here.
test-compiled: compiled
	$(BIN_C)/pytest -p no:cacheprovider -m "not server"

bench-compiled: compiled
	$(BIN_C)/python -m benchmarks

clean:
	rm -rf $(VENV) $(VENV_C) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
