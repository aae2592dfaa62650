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
# clip-retrieval is used only for its client (clip_retrieval/clip_client.py, which needs just
# `requests`, in the dev extra) in tests/server: ClipClient is driven against `lexlens serve`.
# Its declared dependencies (torch/torchvision builds, open_clip, flask, pyspark, ...) would
# fight the pinned CPU torch and are not needed for the client.
NODEPS_DEV := clip-benchmark==1.6.2 clip-retrieval==2.45.0
# Debian's chromium + chromium-driver for the browser test of the web page (tests/server):
# installed with apt-get when missing (root); without apt the test is skipped with the reason.
CHROMIUM := $(VENV)/.chromium

.PHONY: install test test-all demo lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps $(NODEPS_DEV)
	touch $(STAMP)

install: $(STAMP)

$(CHROMIUM): | $(STAMP)
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then touch $@; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null) && touch $@ \
	  || echo "note: apt-get could not install chromium; the browser test will be skipped"; \
	else echo "note: chromium is missing and apt-get is unavailable; the browser test will be skipped"; fi

test: $(STAMP) $(CHROMIUM)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

demo: $(STAMP)
	$(VENV)/bin/lexlens demo

clean:
	rm -rf $(VENV) build dist *.egg-info
