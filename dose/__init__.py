"""Physics: 6 MV photon beam model, geometry, ray tracing, beamlet and segment dose (numpy or cupy)."""

from dose.beams import Beam, BeamSet, beamlets_covering, coplanar_beams, equispaced_beams
from dose.grid import Grid
from dose.machine import Machine, load_machine
from dose.segments import Segment, open_field, segments_fluence

__all__ = [
    "Beam",
    "BeamSet",
    "Grid",
    "Machine",
    "Segment",
    "beamlets_covering",
    "coplanar_beams",
    "equispaced_beams",
    "load_machine",
    "open_field",
    "segments_fluence",
]
