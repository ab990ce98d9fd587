"""Clinical goals on a dose in the protocol's units, and impossible-protocol explanations."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from planner.patient import Structure
from planner.phantoms import cshape_phantom
from planner.protocol import read_protocol
from planner.review.goals import evaluate_protocol, protocol_conflicts

PROTOCOL = """
name = "test"
[[prescriptions]]
target = "PTV"
dose_gy = 50.0
fractions = 25
[structures.PTV]
kind = "target"
[structures.Core]
kind = "organ"
synonyms = ["Centre"]
[[goals]]
structure = "PTV"
metric = "D95%"
min = 100.0
unit = "%"
[[goals]]
structure = "Core"
metric = "V20Gy"
max = 30.0
unit = "%"
[[goals]]
structure = "Core"
metric = "V20Gy"
max = 2.0
unit = "cc"
[[goals]]
structure = "Core"
metric = "Dmean"
max = 15.0
unit = "Gy"
[[goals]]
structure = "Core"
metric = "{organ_metric}"
max = {organ_limit}
unit = "Gy"
priority = "{priority}"
"""


def _protocol(protocol_file, organ_metric="D0.1cc", organ_limit=45.0, priority="hard"):
    return read_protocol(protocol_file(PROTOCOL.format(
        organ_metric=organ_metric, organ_limit=organ_limit, priority=priority)))


def _hottest(d, fraction):
    """Independent D_v: sort descending, the ceil(v n)-th value."""
    return np.sort(d)[::-1][max(math.ceil(fraction * d.size - 1e-9), 1) - 1]


def test_goals_in_protocol_units_with_margins(case, protocol_file):
    patient = dataclasses.replace(case.patient, structures=tuple(
        dataclasses.replace(s, name="Centre") if s.name == "Core" else s
        for s in case.patient.structures))  # found through its synonym
    rows = evaluate_protocol(patient, case.dose_gy, _protocol(protocol_file))
    ptv = case.dose_gy[patient.structure("PTV").mask].astype(float)
    core = case.dose_gy[patient.structure("Centre").mask].astype(float)
    voxel = patient.grid.voxel_volume_cc
    d95 = _hottest(ptv, 0.95)
    v20 = (core >= 20.0).sum()
    expected = [(d95, 50.0, "Gy", d95 - 50.0),
                (100 * v20 / core.size, 30.0, "%", 30.0 - 100 * v20 / core.size),
                (v20 * voxel, 2.0, "cc", 2.0 - v20 * voxel),
                (core.mean(), 15.0, "Gy", 15.0 - core.mean()),
                (_hottest(core, 0.1 / (core.size * voxel)), 45.0, "Gy", None)]
    assert [r.structure for r in rows] == ["PTV", "Centre", "Centre", "Centre", "Centre"]
    for row, (value, limit, unit, margin) in zip(rows, expected):
        assert row.value == pytest.approx(value, rel=1e-6)
        assert (row.limit, row.unit) == (limit, unit)
        if margin is not None:
            assert row.margin == pytest.approx(margin, rel=1e-6, abs=1e-9)
        assert row.met == (row.margin >= 0)
    # The synthetic plan under-covers the PTV (D95 47 Gy): reported as unmet, not hidden.
    assert not rows[0].met and rows[0].margin < -1.0
    assert rows[0].dvh_point == (50.0, 95.0)
    assert rows[1].dvh_point == (20.0, 30.0)
    assert rows[3].dvh_point is None


def _small_cshape():
    """The TG-119 C-shape at 5 mm in a 12 x 12 x 16 cm block."""
    return cshape_phantom(voxel_mm=5.0, body_size_mm=(120.0, 120.0, 160.0), margin_mm=5.0)


def _overlapping_patient():
    """C-shape at 5 mm with the core grown into the PTV's right arm (x > 15 mm)."""
    patient = _small_cshape()
    ptv = patient.structure("PTV").mask
    z, y, x = np.meshgrid(*patient.grid.axes_mm(), indexing="ij")
    core = patient.structure("Core").mask | (ptv & (x > 15.0))
    overlap_cc = float((ptv & core).sum()) * patient.grid.voxel_volume_cc
    structures = tuple(Structure("Core", "organ", core) if s.name == "Core" else s
                       for s in patient.structures)
    return dataclasses.replace(patient, structures=structures), overlap_cc


def test_overlap_with_a_hard_maximum_below_the_prescription_is_explained(protocol_file):
    patient, overlap_cc = _overlapping_patient()
    assert overlap_cc > 1.0
    (conflict,) = protocol_conflicts(patient, _protocol(protocol_file, "D0.1cc", 45.0))
    assert (conflict.target, conflict.organ) == ("PTV", "Core")
    assert conflict.overlap_cc == pytest.approx(overlap_cc)
    assert conflict.limit_gy == 45.0 and conflict.prescription_gy == 50.0
    assert f"overlaps Core by {overlap_cc:.2f} cc" in conflict.explanation
    assert "Core D0.1cc <= 45 Gy" in conflict.explanation
    assert "allows only 0.10 cc" in conflict.explanation


@pytest.mark.parametrize("metric, limit, priority", [
    ("D0.1cc", 55.0, "hard"),   # limit above the prescription: coverage can meet it
    ("D0.1cc", 45.0, "soft"),   # soft goals may be traded: not impossible
    ("D90%", 45.0, "hard"),     # 90 % of the core may exceed 45 Gy, more than the overlap
])
def test_no_conflict_when_the_goal_can_be_met(protocol_file, metric, limit, priority):
    patient, _ = _overlapping_patient()
    assert protocol_conflicts(patient, _protocol(protocol_file, metric, limit, priority)) == ()


def test_tg119_protocol_on_the_c_shape_has_no_conflict():
    """TG-119 keeps a 5 mm gap between target and core."""
    patient = _small_cshape()
    assert protocol_conflicts(patient, read_protocol("tg119_c_shape")) == ()
