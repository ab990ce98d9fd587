"""Optimisation structures (planner.planning_structures) on hand-made patients whose answers are
worked out by hand in each docstring: the targets less their air and skin, the tissue outside
them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dose.grid import Grid
from planner.patient import Patient, Structure
from planner.planning_structures import planning_structures
from planner.protocol import OUTSIDE_TARGETS, read_protocol

SHAPE = (12, 12, 12)
SPACING_MM = 2.5             # voxel of 2.5 mm: 0.015625 cc
VOXEL_CC = 2.5 ** 3 / 1000.0

PROTOCOL = """name = "two targets"
[[prescriptions]]
target = "PTV"
dose_gy = 60.0
fractions = 30
[[prescriptions]]
target = "Boost"
dose_gy = 66.0
fractions = 30
[structures.PTV]
kind = "target"
[structures.Boost]
kind = "target"
[structures.Cord]
kind = "organ"
[[goals]]
structure = "PTV"
metric = "D95%"
min = 100.0
unit = "%"
[[goals]]
structure = "Boost"
metric = "D95%"
min = 100.0
unit = "%"
[[goals]]
structure = "Cord"
metric = "Dmax"
max = 45.0
unit = "Gy"
{planning}"""


def _box(z: slice, y: slice, x: slice) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[z, y, x] = True
    return mask


def _patient(extra: tuple[Structure, ...] = ()) -> Patient:
    """Body: the box of voxels 1-10 along each axis (1000 voxels, 15.625 cc) in air (-1000 HU),
    water (0 HU) inside. PTV: z 3-8, y 3-8, x 1-6 (216 voxels, 3.375 cc), reaching the body's
    face at x = 1; an air pocket in it, z 4-5, y 4-5, x 4-5 (8 voxels at -1000 HU), one voxel
    at -401 HU (air: below -400) at (7, 7, 4) and one at exactly -400 HU (tissue) at (7, 7, 5).
    Boost: z 4-6, y 6-7, x 8-9 (12 voxels of water; x = 9 is 3.75 mm deep, see below). Cord:
    a column at y 9, x 3, z 2-9 (outside both targets)."""
    grid = Grid((0.0, 0.0, 0.0), (SPACING_MM,) * 3, SHAPE)
    body = _box(slice(1, 11), slice(1, 11), slice(1, 11))
    hu = np.where(body, 0.0, -1000.0).astype(np.float32)
    hu[4:6, 4:6, 4:6] = -1000.0
    hu[7, 7, 4] = -401.0
    hu[7, 7, 5] = -400.0
    density = np.where(hu < -900, 0.001, 1.0).astype(np.float32)
    ptv = _box(slice(3, 9), slice(3, 9), slice(1, 7))
    boost = _box(slice(4, 7), slice(6, 8), slice(8, 10))
    cord = _box(slice(2, 10), slice(9, 10), slice(3, 4))
    return Patient("hand", grid, hu, density,
                   (Structure("PTV", "target", ptv), Structure("Boost", "target", boost),
                    Structure("Cord", "organ", cord), Structure("BODY", "external", body))
                   + extra)


def _protocol(protocol_file, planning: str = ""):
    return read_protocol(protocol_file(PROTOCOL.format(planning=planning)))


def test_optimised_target_leaves_out_exactly_its_air_and_the_skin_layer(protocol_file):
    """PTV (216 voxels) less its air: the 8-voxel pocket and the -401 HU voxel (9 voxels,
    0.140625 cc; the -400 HU voxel is tissue and stays), less its tissue voxels whose centre is
    within 3 mm of the body's surface: the layer x = 1, whose centres are half a voxel (1.25
    mm) inside the body's face (6 x 6 = 36 voxels, 0.5625 cc); the next layer, x = 2, is 3.75
    mm deep and stays. Kept: 216 - 9 - 36 = 171 voxels (2.671875 cc). Boost: all water, its
    centres 3.75 mm or more from the surface: it is its own optimised volume. Outside PTVs:
    the body less both whole targets (air and skin included): 1000 - 216 - 12 = 772 voxels
    (12.0625 cc)."""
    patient = _patient()
    result = planning_structures(patient, _protocol(protocol_file))
    ptv = patient.structure("PTV").mask
    expected = ptv.copy()
    expected[4:6, 4:6, 4:6] = False   # the air pocket
    expected[7, 7, 4] = False         # -401 HU
    expected[:, :, 1] = False         # within 3 mm of the surface
    assert expected[7, 7, 5]          # -400 HU is tissue
    assert expected.sum() == 171
    assert result.mapping == {"PTV": "PTV_opt", "Boost": "Boost", "Cord": "Cord",
                              OUTSIDE_TARGETS: OUTSIDE_TARGETS}
    assert result.delineated == {"PTV": "PTV", "Boost": "Boost", "Cord": "Cord"}
    np.testing.assert_array_equal(result.patient.structure("PTV_opt").mask, expected)
    np.testing.assert_array_equal(result.mask("PTV"), expected)
    assert result.patient.structure("PTV_opt").kind == "target"
    # The whole PTV is still there for its reported figures; the Boost has no derived volume.
    np.testing.assert_array_equal(result.patient.structure("PTV").mask, ptv)
    assert "Boost_opt" not in [s.name for s in result.patient.structures]
    np.testing.assert_array_equal(result.mask("Boost"), patient.structure("Boost").mask)
    outside = (patient.structure("BODY").mask & ~ptv & ~patient.structure("Boost").mask)
    assert outside.sum() == 772
    np.testing.assert_array_equal(result.mask(OUTSIDE_TARGETS), outside)
    assert result.patient.structure(OUTSIDE_TARGETS).kind == "organ"
    # The organ overlaps nothing derived: as delineated.
    np.testing.assert_array_equal(result.mask("Cord"), patient.structure("Cord").mask)
    assert result.notes == (
        "PTV_opt = PTV less 0.1 cc of air (below -400 HU) and 0.6 cc within 3 mm of the skin "
        "(2.7 of 3.4 cc kept)",
        "Outside PTVs = the body outside every prescribed target (12 cc)")
    assert 171 * VOXEL_CC == pytest.approx(2.671875)


def test_planning_settings_move_the_air_and_skin_limits(protocol_file):
    """air_hu = -450: the -401 HU voxel is tissue now (8 air voxels); skin_crop_mm = 4: the layer
    x = 2 (3.75 mm deep) is cropped as well, 2 x 36 = 72 voxels (all tissue: the pocket lies at
    x 4-5): kept 216 - 8 - 72 = 136. skin_crop_mm = 0: no skin crop, only the air (216 - 8 =
    208 kept)."""
    patient = _patient()
    ptv = patient.structure("PTV").mask
    air = np.zeros(SHAPE, bool)
    air[4:6, 4:6, 4:6] = True
    result = planning_structures(patient, _protocol(
        protocol_file, "[planning]\nair_hu = -450\nskin_crop_mm = 4.0\n"))
    expected = ptv & ~air
    expected[:, :, 1:3] = False
    assert expected.sum() == 136
    np.testing.assert_array_equal(result.mask("PTV"), expected)
    result = planning_structures(patient, _protocol(
        protocol_file, "[planning]\nair_hu = -450\nskin_crop_mm = 0\n"))
    np.testing.assert_array_equal(result.mask("PTV"), ptv & ~air)
    assert result.mask("PTV").sum() == 208
    assert result.notes[0].startswith("PTV_opt = PTV less 0.1 cc of air (below -450 HU) and "
                                      "0.0 cc within 0 mm of the skin")


def test_a_target_that_is_all_air_is_optimised_as_delineated(protocol_file):
    """A Boost made wholly of air (HU -1000) would leave an empty optimised volume: it is
    planned as delineated, and a note says why."""
    patient = _patient()
    hu = patient.hu.copy()
    hu[patient.structure("Boost").mask] = -1000.0
    result = planning_structures(dataclasses.replace(patient, hu=hu), _protocol(protocol_file))
    assert result.mapping["Boost"] == "Boost"
    assert ("Boost: optimised as delineated (all of it is air or within 3 mm of the skin)"
            in result.notes)


def test_a_derived_name_the_patient_already_uses_gets_another(protocol_file):
    """A delineated structure called PTV_opt (unknown to the protocol): the derived volume is
    PTV_opt_opt, and the patient's own PTV_opt is left as it was."""
    own = Structure("PTV_opt", "organ", _box(slice(0, 1), slice(0, 1), slice(0, 1)))
    result = planning_structures(_patient((own,)), _protocol(protocol_file))
    assert result.mapping["PTV"] == "PTV_opt_opt"
    assert result.patient.structure("PTV_opt").mask.sum() == 1
    assert result.mask("PTV").sum() == 171


def test_a_patient_with_its_own_outside_ptvs_structure_is_planned(protocol_file):
    """A structure set that already holds an "Outside PTVs" (some clinics draw one; here only
    the cord's column): the derived structure is still the body less the targets, the
    patient's own is left alone."""
    own = Structure(OUTSIDE_TARGETS, "organ", _patient().structure("Cord").mask)
    patient = _patient((own,))
    result = planning_structures(patient, _protocol(protocol_file))
    outside = (patient.structure("BODY").mask & ~patient.structure("PTV").mask
               & ~patient.structure("Boost").mask)
    np.testing.assert_array_equal(result.mask(OUTSIDE_TARGETS), outside)
