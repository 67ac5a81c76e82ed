# Two commands do the whole set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean browser

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "retrainer needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/retrainer demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Debian's Chromium for the dashboard's browser test (tests/retrainer/api/test_dashboard_browser.py), driven by
# the Playwright package `make install` puts in the venv; Playwright's own browser download is never used.
# Elsewhere the test skips, or set RETRAINER_CHROMIUM to a Chromium or Chrome binary.
browser:
	@command -v chromium >/dev/null || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends chromium; }
	@echo "chromium: $$(command -v chromium)"

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf var/demo .pytest_cache
