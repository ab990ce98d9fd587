"""Packaging beside pyproject.toml (which holds everything else): the repository's ``data/``
ships in the wheel as the package ``planner_data`` (found by ``dose/_data.py``), a renaming
that pyproject.toml's package discovery cannot express."""

from setuptools import find_namespace_packages, setup

DATA_PACKAGES = ["planner_data", *(f"planner_data.{name}"
                                   for name in find_namespace_packages(where="data"))]

setup(
    packages=[*find_namespace_packages(include=["planner*", "dose*", "optim*"]), *DATA_PACKAGES],
    package_dir={"planner_data": "data"},
    package_data={name: ["*"] for name in DATA_PACKAGES},
)
