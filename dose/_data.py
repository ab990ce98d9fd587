"""Where planner's data files are (machine, beam model, HU table, protocols, network weights).

A source checkout keeps them in ``data/`` beside the packages; a wheel installs that folder as
``planner_data/`` beside them (``setup.py``), since a top-level ``data`` in site-packages could
be any project's. ``dose`` finds them here for ``planner`` too, which may import ``dose`` but
not the other way round.
"""

from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
#: The data folder: the installed copy where there is one, else the checkout's ``data/``.
DATA_DIR = _ROOT / "planner_data" if (_ROOT / "planner_data").is_dir() else _ROOT / "data"
