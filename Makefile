# dpukit — every target creates .venv and installs the kit on first use.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint overlay clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,train]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dpukit demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) bench/run.py --out bench/results.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The board's PYNQ overlay (.bit + .hwh) with Vivado; without Vivado, the Tcl flow's folder
# and how to build it elsewhere. BOARD: pynq-z2 or ultra96v2.
BOARD ?= pynq-z2
overlay: $(STAMP)
	$(PY) -m dpukit.hw.overlay $(BOARD) --out build/overlay/$(BOARD)

clean:
	rm -rf $(VENV) .venv-board build *.egg-info sim_build .pytest_cache bench/results.json
