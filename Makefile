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

# The full plan of the bundled TG-119 C-shape phantom: DICOM RT Plan + RT Dose (with CT and
# RTSTRUCT), review report, summary.json and plan.log in out/example (out/ is git-ignored).
example: $(VENV)/.installed
	$(VENV)/bin/planner plan example:cshape --out out/example --force

test: $(VENV)/.installed
	$(PY) -m pytest -q
