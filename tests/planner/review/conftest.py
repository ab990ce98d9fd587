"""Fixtures of the review tests: one small DICOM case, written once per session."""

from __future__ import annotations

import pytest
from review_case import Case, make_case


@pytest.fixture(scope="session")
def case(tmp_path_factory) -> Case:
    return make_case(tmp_path_factory.mktemp("review_case"))
