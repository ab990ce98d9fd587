"""Physics: 6 MV photon beam model, geometry, ray tracing, beamlet and segment dose (numpy or cupy)."""

from dose.beam_model import BeamModel, load_beam_model
from dose.beams import Beam, BeamSet, beamlets_covering, coplanar_beams, equispaced_beams
from dose.dij import DoseInfluence, compute_dij
from dose.gamma import gamma_index, gamma_pass_rate
from dose.grid import Grid
from dose.machine import Machine, load_machine
from dose.segments import (Segment, field_voxels, open_field, segment_dose,
                           segment_dose_matrix, segments_fluence)

__all__ = [
    "Beam",
    "BeamModel",
    "BeamSet",
    "DoseInfluence",
    "Grid",
    "Machine",
    "Segment",
    "beamlets_covering",
    "compute_dij",
    "coplanar_beams",
    "equispaced_beams",
    "field_voxels",
    "gamma_index",
    "gamma_pass_rate",
    "load_beam_model",
    "load_machine",
    "open_field",
    "segment_dose",
    "segment_dose_matrix",
    "segments_fluence",
]
