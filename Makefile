# The README's two commands: `make example` (plan the bundled example) and `make test`.
# Each creates the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: example test test-pydicom3

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch 2.13.0: on machines without a GPU this resolves to the local CPU wheel.
	$(PY) -m pip install --quiet torch==2.13.0
	# reference: dicompyler-core, the independent reader some tests check against (pydicom 2);
	# thirdparty: PyDoseRT, a third-party dose engine that reads the exported RT Plan.
	$(PY) -m pip install --quiet -e '.[test,reference,thirdparty]'
	touch $@

# The full plan of the bundled TG-119 C-shape phantom: DICOM RT Plan + RT Dose (with CT and
# RTSTRUCT), review report, summary.json and plan.log in out/example (out/ is git-ignored).
example: $(VENV)/.installed
	$(VENV)/bin/planner plan example:cshape --out out/example --force

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The suite with pydicom 3, in a virtual environment of its own (.venv-pydicom3): planner
# without the reference extra, whose dicompyler-core tests then skip and say why.
test-pydicom3:
	test -x .venv-pydicom3/bin/python || $(PYTHON) -m venv .venv-pydicom3
	.venv-pydicom3/bin/python -m pip install --quiet torch==2.13.0
	.venv-pydicom3/bin/python -m pip install --quiet -e '.[test]' 'pydicom>=3'
	.venv-pydicom3/bin/python -m pytest -q
