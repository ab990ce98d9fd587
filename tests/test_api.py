"""The Python API a notebook calls, exported by ``planner`` (planner/__init__.py)."""

import inspect
import subprocess
import sys

import planner


def test_every_export_is_documented():
    for name in planner.__all__:
        doc = inspect.getdoc(getattr(planner, name))
        assert doc and len(doc.split()) > 3, name


def test_import_leaves_torch_and_cupy_alone():
    """``import planner`` (and so the command's start) loads neither torch nor cupy: only the
    dose prediction and the CUDA device need them."""
    code = "import sys, planner; print(sorted({'torch', 'cupy'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout == "[]\n"
