"""Optimisation structures, made as a dosimetrist makes them before optimising.

- Each prescribed target's **optimised volume** (``PTV70_opt``): the PTV less its air (voxels
  below ``air_hu``: OpenKBP's PTV70 often holds part of the airway or oral cavity, where the dose
  engine, like any, gives less dose than in the tissue around it; chasing coverage there drives
  up the beamlets crossing the air, which peak in the tissue beside it, outside the PTV) and
  less the voxels within ``skin_crop_mm`` of the body's surface (the build-up region, where no
  beam arrangement reaches the prescription). The optimiser and the target goals use it; the
  whole PTV's figures are still reported (:mod:`planner.review.quality`). Where nothing is left
  out, the target is its own optimised volume.
- **Outside PTVs** (:data:`planner.protocol.OUTSIDE_TARGETS`): the body outside every whole
  prescribed target, on which every protocol's hot-spot, maximum and normal-tissue goals act.

Settings come from the protocol's ``[planning]`` table (:class:`planner.protocol.PlanningSettings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.ndimage

from dose.segments import MIN_DOSE_DENSITY_G_CM3
from planner.patient import Patient, Structure
from planner.protocol import OUTSIDE_TARGETS, Protocol, StructureMapping, map_structures

OPTIMISED_SUFFIX = "_opt"


@dataclass(frozen=True)
class PlanningStructures:
    """A patient with its optimisation structures, and which structure plays each protocol name.

    Attributes
    ----------
    patient : Patient
        The patient with the derived structures added (optimised targets, ``Outside PTVs``).
    mapping : dict
        Protocol structure name -> the patient structure its goals and objectives act on (a
        target's optimised volume, ``Outside PTVs`` itself, an organ as delineated).
    names : StructureMapping
        The protocol's structures mapped onto the delineated ones
        (:func:`planner.protocol.map_structures`).
    notes : tuple of str
        One line per derived structure: what it is and how much was left out.
    """

    patient: Patient = field(repr=False)
    mapping: dict[str, str]
    names: StructureMapping
    notes: tuple[str, ...]

    @property
    def delineated(self) -> dict[str, str]:
        """Protocol structure name -> the delineated patient structure (no derived ones)."""
        return self.names.mapping

    def mask(self, protocol_name: str) -> np.ndarray:
        """The mask a protocol structure's goals act on."""
        return self.patient.structure(self.mapping[protocol_name]).mask


def body_or_dense(patient: Patient) -> np.ndarray:
    """The body (external contour, else possible-dose mask), else the voxels dense enough to
    get a dose (``MIN_DOSE_DENSITY_G_CM3``)."""
    body = patient.body_mask()
    return patient.density >= MIN_DOSE_DENSITY_G_CM3 if body is None else body


def planning_structures(patient: Patient, protocol: Protocol,
                        names: StructureMapping | None = None) -> PlanningStructures:
    """The optimisation structures of ``patient`` under ``protocol`` (module docstring).

    ``names`` is ``map_structures(protocol, <the patient's structure names>)`` when the caller
    has mapped them already.

    Raises
    ------
    InputError
        A structure needed by a non-optional goal is missing (from
        :func:`planner.protocol.map_structures`).
    """
    settings = protocol.planning
    if names is None:
        names = map_structures(protocol, [s.name for s in patient.structures])
    delineated = names.mapping
    body = body_or_dense(patient)
    # Depth of each voxel centre below the surface: the distance to the nearest voxel outside
    # the body less half a voxel.
    depth = (scipy.ndimage.distance_transform_edt(body, sampling=patient.grid.spacing_mm)
             - 0.5 * min(patient.grid.spacing_mm))
    tissue = patient.hu >= settings.air_hu
    voxel_cc = patient.grid.voxel_volume_cc
    added: list[Structure] = []
    mapping = dict(delineated)
    notes = []
    whole_targets = np.zeros(patient.grid.shape, dtype=bool)
    taken = {s.name for s in patient.structures}
    for rx in protocol.prescriptions:
        if rx.target not in delineated:
            continue
        name = delineated[rx.target]
        whole = patient.structure(name).mask
        whole_targets |= whole
        air = whole & ~tissue
        skin = whole & tissue & (depth < settings.skin_crop_mm)
        kept = whole & ~air & ~skin
        if not (air.any() or skin.any()):
            continue
        if not kept.any():
            notes.append(f"{name}: optimised as delineated (all of it is air or within "
                         f"{settings.skin_crop_mm:g} mm of the skin)")
            continue
        derived = name + OPTIMISED_SUFFIX
        while derived in taken:
            derived += OPTIMISED_SUFFIX
        taken.add(derived)
        added.append(Structure(derived, "target", kept))
        mapping[rx.target] = derived
        notes.append(f"{derived} = {name} less {air.sum() * voxel_cc:.1f} cc of air (below "
                     f"{settings.air_hu:g} HU) and {skin.sum() * voxel_cc:.1f} cc within "
                     f"{settings.skin_crop_mm:g} mm of the skin ({kept.sum() * voxel_cc:.1f} of "
                     f"{whole.sum() * voxel_cc:.1f} cc kept)")
    outside = body & ~whole_targets
    outside_name = OUTSIDE_TARGETS
    while outside_name in taken:  # the patient's own structure of that name keeps it
        outside_name += OPTIMISED_SUFFIX
    added.append(Structure(outside_name, "organ", outside))
    mapping[OUTSIDE_TARGETS] = outside_name
    notes.append(f"{OUTSIDE_TARGETS} = the body outside every prescribed target "
                 f"({outside.sum() * voxel_cc:.0f} cc)")
    planned = replace(patient, structures=patient.structures + tuple(added))
    return PlanningStructures(planned, mapping, names, tuple(notes))
