"""Rewrite a planner RT Plan in the DYNAMIC encoding of step-and-shoot, with pydicom only.

For tests/planner/io/test_rtplan.py and tests/planner/test_check_plan.py. Treatment planning
systems such as Eclipse export step-and-shoot IMRT as BeamType DYNAMIC: control points in
pairs, the aperture held while the cumulative meterset weight increases, the leaves moving
only between control points of equal weight. This module builds that encoding from planner's
STATIC plan by hand, independently of :mod:`planner.io.rtplan`.
"""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset


def _positions(point: Dataset, kind: str) -> list[float] | None:
    for item in point.get("BeamLimitingDevicePositionSequence", []):
        if item.RTBeamLimitingDeviceType == kind:
            return [float(v) for v in item.LeafJawPositions]
    return None


def as_dynamic_step_and_shoot(ds: Dataset) -> None:
    """Rewrite every beam of ``ds`` (a planner RT Plan) in place as DYNAMIC step-and-shoot.

    Each beam gets BeamType DYNAMIC and keeps its pairs of control points (one segment each).
    Between two pairs (equal cumulative meterset weight, beam off) one control point is
    inserted at the same weight with the MLCX leaves halfway between the two apertures: the
    leaves travel with the beam off, which delivers nothing. The jaws are listed only in the
    control points where they change (DICOM PS3.3 C.8.8.14.5). ControlPointIndex and
    NumberOfControlPoints are renumbered.
    """
    for beam in ds.BeamSequence:
        beam.BeamType = "DYNAMIC"
        old = list(beam.ControlPointSequence)
        points = []
        for k, point in enumerate(old):
            if k and k % 2 == 0:  # a new segment starts: the leaves travel from the last one
                before, after = _positions(old[k - 1], "MLCX"), _positions(point, "MLCX")
                travel = Dataset()
                travel.CumulativeMetersetWeight = point.CumulativeMetersetWeight
                mlc = Dataset()
                mlc.RTBeamLimitingDeviceType = "MLCX"
                mlc.LeafJawPositions = [f"{(a + b) / 2:.2f}" for a, b in zip(before, after)]
                travel.BeamLimitingDevicePositionSequence = [mlc]
                points.append(travel)
            points.append(copy.deepcopy(point))
        last: dict[str, list[float]] = {}
        for point in points:
            kept = []
            for item in point.BeamLimitingDevicePositionSequence:
                kind = item.RTBeamLimitingDeviceType
                positions = [float(v) for v in item.LeafJawPositions]
                if kind == "MLCX" or last.get(kind) != positions:
                    kept.append(item)
                last[kind] = positions
            point.BeamLimitingDevicePositionSequence = kept
        for k, point in enumerate(points):
            point.ControlPointIndex = k
        beam.ControlPointSequence = points
        beam.NumberOfControlPoints = len(points)
