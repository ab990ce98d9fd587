# The README's two commands: `make example` (plan the bundled example) and `make test`.
# Each creates the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: example test

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.13.0: on machines without a GPU this resolves to the local CPU wheel.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# For now the example imports the TG-119 C-shape phantom and prints its summary; later issues grow
# it into a full plan of that phantom.
example: $(VENV)/.installed
	$(VENV)/bin/planner info example:cshape

test: $(VENV)/.installed
	$(PY) -m pytest -q
