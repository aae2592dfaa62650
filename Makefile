# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install what they need; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS := dev,openclip,hf,server,scale,bench
PYTEST_ARGS ?=
# Test-only packages installed WITHOUT their dependencies (pip extras cannot say --no-deps):
# clip-benchmark is used only for its recall code in tests/eval (cross-check); its declared
# dependencies (torchvision, webdataset, pycocoevalcap, scikit-learn, ...) are not needed for that.
NODEPS_DEV := clip-benchmark==1.6.2

.PHONY: install test test-all demo lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps $(NODEPS_DEV)
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

demo: $(STAMP)
	$(VENV)/bin/lexlens demo

clean:
	rm -rf $(VENV) build dist *.egg-info
