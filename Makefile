# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv, install the CPU build of torch (a pinned local wheel; an unpinned torch
# would pull a multi-GB CUDA build), then volsr with its test extras.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.volsr-installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# napari-hippo only for the real ENVI cube in its wheel (its GUI dependencies are not needed)
	$(BIN)/python -m pip install --quiet --no-deps napari-hippo==0.2.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/volsr demo demo_out --overwrite

test: $(STAMP)
	$(BIN)/ruff check volsr tests bench
	$(BIN)/python -m pytest -n 2 --doctest-modules volsr tests
	$(BIN)/python -m pytest --nbmake notebooks

bench: $(STAMP)
	$(BIN)/python bench/baselines.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
