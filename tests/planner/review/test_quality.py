"""Plan-quality figures on hand-made doses whose answers are worked out in each docstring."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dose.grid import Grid
from planner.patient import Patient, Prescription, Structure
from planner.protocol import read_protocol
from planner.review.quality import (
    BODY, NORMAL_TISSUE, QualityFigure, air_mask, figure_value, gradient_r50,
    paddick_conformity, quality_figures, volume_above_cc,
)

SHAPE = (20, 20, 20)


def _box(z: slice, y: slice, x: slice, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[z, y, x] = True
    return mask


def test_volume_above_counts_voxels_strictly_above_the_level_inside_the_mask():
    """A 2 x 3 x 4 block (24 voxels) at 80 Gy, a 1 x 1 x 5 row (5 voxels) at exactly 77 Gy, the
    rest 10 Gy; voxels of 0.024 cc (2 x 3 x 4 mm). Above 77 Gy: the block alone, 24 x 0.024 =
    0.576 cc (the row at 77 Gy is not above it). With a mask that leaves out the block's first
    slice (12 voxels): 12 x 0.024 = 0.288 cc."""
    dose = np.full(SHAPE, 10.0)
    dose[5:7, 5:8, 5:9] = 80.0
    dose[12, 12, 0:5] = 77.0
    everywhere = np.ones(SHAPE, dtype=bool)
    assert volume_above_cc(dose, everywhere, 77.0, 0.024) == pytest.approx(0.576, rel=1e-12)
    assert volume_above_cc(dose, everywhere, 76.9, 0.024) == pytest.approx(0.696, rel=1e-12)
    not_first_slice = ~_box(slice(5, 6), slice(None), slice(None))
    assert volume_above_cc(dose, not_first_slice, 77.0, 0.024) == pytest.approx(0.288, rel=1e-12)
    assert volume_above_cc(dose, everywhere, 80.0, 0.024) == 0.0


def test_paddick_of_a_target_inside_a_larger_uniform_cube_is_tv_over_piv():
    """Target: a 4^3 cube (TV 64 voxels) inside a 6^3 cube at 70 Gy (PIV 216), 0 Gy elsewhere:
    TV_PIV = 64, CI = 64^2 / (64 * 216) = 64 / 216 = 0.296296... At a level above 70 Gy no voxel
    is in PIV: CI 0."""
    target = _box(slice(6, 10), slice(6, 10), slice(6, 10))
    dose = np.where(_box(slice(5, 11), slice(5, 11), slice(5, 11)), 70.0, 0.0)
    assert paddick_conformity(dose, target, 70.0) == pytest.approx(64 / 216, rel=1e-12)
    assert paddick_conformity(dose, target, 70.5) == 0.0


def test_paddick_of_a_half_covered_target_without_spill_is_one_half():
    """Target 4^3 (64 voxels), 70 Gy on exactly its first two slices (32 voxels) and nowhere
    else: TV_PIV = PIV = 32, CI = 32^2 / (64 * 32) = 0.5. Levels are inclusive: at 70 Gy the
    voxels at 70 Gy are in PIV."""
    target = _box(slice(6, 10), slice(6, 10), slice(6, 10))
    dose = np.where(_box(slice(6, 8), slice(6, 10), slice(6, 10)), 70.0, 0.0)
    assert paddick_conformity(dose, target, 70.0) == pytest.approx(0.5, rel=1e-12)


def test_paddick_counts_the_spill_inside_the_body_only():
    """The 4^3 target inside a 6^3 cube at 70 Gy (PIV 216 voxels, 152 of them spill), with a
    body that stops at slice 9: the 6^3 cube keeps slices 5..9, 5 x 36 = 180 voxels, of which
    the target's slices 6..9 are 64. CI = 64^2 / (64 * 180) = 64 / 180."""
    target = _box(slice(6, 10), slice(6, 10), slice(6, 10))
    dose = np.where(_box(slice(5, 11), slice(5, 11), slice(5, 11)), 70.0, 0.0)
    body = _box(slice(0, 10), slice(None), slice(None))
    assert paddick_conformity(dose, target, 70.0, body) == pytest.approx(64 / 180, rel=1e-12)


def test_r50_is_the_half_isodose_volume_over_the_target_volume():
    """Target 4^3 (64 voxels) at 70 Gy, an 8^3 cube around it (512 voxels) at exactly 35 Gy, 0
    elsewhere: at 70 Gy the 50 % isodose (35 Gy, inclusive) holds 512 voxels, R50 = 512 / 64 = 8.
    Inside a body of the first 6 slices of the 8^3 cube (slices 4..9: 6 x 64 = 384 voxels):
    R50 = 384 / 64 = 6. At 72 Gy (36 Gy isodose) only the target: R50 = 1."""
    target = _box(slice(6, 10), slice(6, 10), slice(6, 10))
    dose = np.where(_box(slice(4, 12), slice(4, 12), slice(4, 12)), 35.0, 0.0)
    dose[target] = 70.0
    assert gradient_r50(dose, target, 70.0) == pytest.approx(8.0, rel=1e-12)
    body = _box(slice(0, 10), slice(None), slice(None))
    assert gradient_r50(dose, target, 70.0, body) == pytest.approx(6.0, rel=1e-12)
    assert gradient_r50(dose, target, 72.0) == pytest.approx(1.0, rel=1e-12)


def test_empty_targets_and_masks_off_the_grid_are_refused():
    dose = np.zeros(SHAPE)
    with pytest.raises(ValueError, match="target mask is empty"):
        paddick_conformity(dose, np.zeros(SHAPE, dtype=bool), 70.0)
    with pytest.raises(ValueError, match="target mask is empty"):
        gradient_r50(dose, np.zeros(SHAPE, dtype=bool), 70.0)
    with pytest.raises(ValueError, match=r"mask shape \(20, 20, 19\) differs"):
        volume_above_cc(dose, np.ones((20, 20, 19), dtype=bool), 1.0, 1.0)


def test_air_is_strictly_below_the_threshold():
    hu = np.array([-1000.0, -401.0, -400.0, -399.0, 0.0])
    np.testing.assert_array_equal(air_mask(hu), [True, True, False, False, False])
    np.testing.assert_array_equal(air_mask(hu, -900.0), [True, False, False, False, False])


# A 20^3 grid of 2 x 2 x 2.5 mm voxels: 10 mm^3 = 0.01 cc each.
GRID = Grid((0.0, 0.0, 0.0), (2.5, 2.0, 2.0), SHAPE)
VOXEL_CC = 0.01
BODY_MASK = _box(slice(2, 18), slice(2, 18), slice(2, 18))            # 16^3 = 4096 voxels
PTV70 = _box(slice(4, 10), slice(4, 10), slice(4, 10))                # 6^3 = 216 voxels
PTV70_AIR = _box(slice(6, 8), slice(6, 8), slice(6, 8))              # 2^3 = 8, inside PTV70
PTV56 = _box(slice(12, 16), slice(12, 16), slice(12, 16))            # 4^3 = 64 voxels
HOT_80 = _box(slice(12, 15), slice(4, 7), slice(4, 6))               # 3 x 3 x 2 = 18 voxels
HOT_76 = _box(slice(16, 17), slice(4, 6), slice(4, 9))               # 1 x 2 x 5 = 10 voxels
OUTSIDE_BODY = (0, 0, 0)

PROTOCOL = """
name = "quality test"
[[prescriptions]]
target = "PTV70"
dose_gy = 70.0
fractions = 35
[[prescriptions]]
target = "PTV56"
dose_gy = 56.0
fractions = 35
[[prescriptions]]
target = "PTV63"
dose_gy = 63.0
fractions = 35
[structures.PTV70]
kind = "target"
synonyms = ["PTV_High"]
[structures.PTV63]
kind = "target"
[structures.PTV56]
kind = "target"
[[goals]]
structure = "PTV70"
metric = "D95%"
min = 100.0
unit = "%"
[[goals]]
structure = "PTV63"
metric = "D95%"
min = 100.0
unit = "%"
optional = true
[[goals]]
structure = "PTV56"
metric = "D95%"
min = 100.0
unit = "%"
"""


def _patient(with_body: bool = True) -> Patient:
    """PTV70 (called PTV_High, found through its synonym) with 8 voxels of air, PTV56; no
    PTV63 (its goals are optional, so it is skipped); an external contour unless not
    ``with_body``."""
    hu = np.zeros(SHAPE, dtype=np.float32)
    hu[~BODY_MASK] = -1000.0
    hu[PTV70_AIR] = -1000.0
    structures = [Structure("PTV_High", "target", PTV70), Structure("PTV56", "target", PTV56)]
    if with_body:
        structures.append(Structure("External", "external", BODY_MASK))
    return Patient("quality", GRID, hu, np.ones(SHAPE, dtype=np.float32), tuple(structures),
                   (Prescription("PTV_High", 70.0, 35), Prescription("PTV56", 56.0, 35)))


def _dose() -> np.ndarray:
    """20 Gy in the body, PTV70 70 Gy but 50 Gy in its air, PTV56 56 Gy, an 80 Gy block of 18
    voxels and a 76 Gy block of 10 voxels outside the targets, 100 Gy in one voxel outside the
    body (not counted where a body is known)."""
    dose = np.zeros(SHAPE)
    dose[BODY_MASK] = 20.0
    dose[PTV70] = 70.0
    dose[PTV70_AIR] = 50.0
    dose[PTV56] = 56.0
    dose[HOT_80] = 80.0
    dose[HOT_76] = 76.0
    dose[OUTSIDE_BODY] = 100.0
    return dose


def test_the_hand_made_plan_figures(protocol_file):
    """Worked out by hand (voxels of 0.01 cc):

    - PTV70 (216 voxels, 8 of them air at 50 Gy, 208 tissue at 70 Gy). D99: rank ceil(0.99 x 216)
      = 214 of the hottest, among the 8 coldest (ranks 209-216): 50 Gy; on tissue only: 70 Gy.
      D95: rank ceil(0.95 x 216) = 206 <= 208: 70 Gy, and 70 Gy on tissue. Air 8 x 0.01 = 0.08 cc.
    - Paddick CI of PTV70 at 70 Gy: PIV = 208 (PTV70 tissue) + 18 (80 Gy) + 10 (76 Gy) = 236,
      TV_PIV = 208, CI = 208^2 / (216 x 236) = 43264 / 50976. R50 (>= 35 Gy): 216 + 64 + 28 = 308
      over 216.
    - PTV56 at 56 Gy: PIV = 208 + 64 + 28 = 300, TV_PIV = 64, CI = 64^2 / (64 x 300) = 64 / 300;
      its R50 (>= 28 Gy): (216 + 64 + 28) / 64 = 308 / 64. No air: D99 = D95 = 56 Gy.
    - Normal tissue: 4096 - 216 - 64 = 3816 voxels; 3788 at 20, 18 at 80, 10 at 76 Gy: mean
      (3788 x 20 + 18 x 80 + 10 x 76) / 3816 = 77960 / 3816 Gy; V35Gy 28 voxels = 0.28 cc;
      above 107 % of 70 Gy (74.9 Gy): 28 voxels, 0.28 cc; above 110 % (77 Gy): 18, 0.18 cc;
      maximum 80 Gy.
    - Body maximum 80 Gy (the 100 Gy voxel is outside the body), not in PTV70: 0.
    """
    figures = quality_figures(_patient(), _dose(), read_protocol(protocol_file(PROTOCOL)))
    expected = [
        QualityFigure("Paddick CI", "PTV_High", 43264 / 50976, ""),
        QualityFigure("R50", "PTV_High", 308 / 216, ""),
        QualityFigure("D99%", "PTV_High", 50.0, "Gy"),
        QualityFigure("D95%", "PTV_High", 70.0, "Gy"),
        QualityFigure("D99% tissue", "PTV_High", 70.0, "Gy"),
        QualityFigure("D95% tissue", "PTV_High", 70.0, "Gy"),
        QualityFigure("air", "PTV_High", 0.08, "cc"),
        QualityFigure("Paddick CI", "PTV56", 64 / 300, ""),
        QualityFigure("R50", "PTV56", 308 / 64, ""),
        QualityFigure("D99%", "PTV56", 56.0, "Gy"),
        QualityFigure("D95%", "PTV56", 56.0, "Gy"),
        QualityFigure("D99% tissue", "PTV56", 56.0, "Gy"),
        QualityFigure("D95% tissue", "PTV56", 56.0, "Gy"),
        QualityFigure("air", "PTV56", 0.0, "cc"),
        QualityFigure("Dmean", NORMAL_TISSUE, 77960 / 3816, "Gy"),
        QualityFigure("V35Gy", NORMAL_TISSUE, 0.28, "cc"),
        QualityFigure("volume > 107 %", NORMAL_TISSUE, 0.28, "cc"),
        QualityFigure("volume > 110 %", NORMAL_TISSUE, 0.18, "cc"),
        QualityFigure("Dmax", NORMAL_TISSUE, 80.0, "Gy"),
        QualityFigure("Dmax", BODY, 80.0, "Gy"),
        QualityFigure("Dmax in target", "PTV_High", 0.0, ""),
    ]
    assert [(f.name, f.structure, f.unit) for f in figures] == \
        [(f.name, f.structure, f.unit) for f in expected]
    for got, want in zip(figures, expected):
        # Sums of 0.01 cc voxels and float64 means: exact to rounding.
        assert got.value == pytest.approx(want.value, rel=1e-12, abs=1e-12), got


def test_air_lowers_d99_of_the_whole_ptv_only(protocol_file):
    """Raising the air voxels' dose from 50 to 70 Gy makes PTV70 uniform: D99 of the whole PTV
    goes from 50 to 70 Gy, D99 on tissue stays 70 Gy (it never saw the air)."""
    protocol = read_protocol(protocol_file(PROTOCOL))
    dose = _dose()
    before = quality_figures(_patient(), dose, protocol)
    dose[PTV70_AIR] = 70.0
    after = quality_figures(_patient(), dose, protocol)
    assert figure_value(before, "D99%", "PTV_High") == 50.0
    assert figure_value(after, "D99%", "PTV_High") == 70.0
    assert figure_value(before, "D99% tissue", "PTV_High") == 70.0
    assert figure_value(after, "D99% tissue", "PTV_High") == 70.0
    # A different threshold that calls nothing air: the whole PTV is its tissue.
    no_air = quality_figures(_patient(), _dose(), protocol, air_hu=-1000.0)
    assert figure_value(no_air, "D99% tissue", "PTV_High") == 50.0
    assert figure_value(no_air, "air", "PTV_High") == 0.0


def test_global_maximum_inside_the_highest_prescription_target(protocol_file):
    """One tissue voxel of PTV70 at 85 Gy: the body's maximum (85 Gy) lies in PTV70 (1), the
    normal tissue's maximum stays 80 Gy. With PTV56 at 90 Gy instead, the maximum lies in a
    target, but not in the highest-prescription one: 0."""
    protocol = read_protocol(protocol_file(PROTOCOL))
    dose = _dose()
    dose[4, 4, 4] = 85.0
    figures = quality_figures(_patient(), dose, protocol)
    assert figure_value(figures, "Dmax", BODY) == 85.0
    assert figure_value(figures, "Dmax", NORMAL_TISSUE) == 80.0
    assert figure_value(figures, "Dmax in target", "PTV_High") == 1.0
    dose = _dose()
    dose[PTV56] = 90.0
    figures = quality_figures(_patient(), dose, protocol)
    assert figure_value(figures, "Dmax", BODY) == 90.0
    assert figure_value(figures, "Dmax in target", "PTV_High") == 0.0


def test_without_a_body_every_voxel_counts(protocol_file):
    """No external contour and no possible-dose mask: the 100 Gy voxel outside the phantom's
    body is normal tissue, and the maximum; normal tissue is 8000 - 216 - 64 = 7720 voxels, its
    V35Gy 28 + 1 voxels = 0.29 cc."""
    figures = quality_figures(_patient(with_body=False), _dose(),
                              read_protocol(protocol_file(PROTOCOL)))
    assert figure_value(figures, "Dmax", BODY) == 100.0
    assert figure_value(figures, "Dmax", NORMAL_TISSUE) == 100.0
    assert figure_value(figures, "V35Gy", NORMAL_TISSUE) == pytest.approx(0.29, rel=1e-12)
    assert figure_value(figures, "Dmean", NORMAL_TISSUE) == pytest.approx(
        (3788 * 20 + 18 * 80 + 10 * 76 + 100) / 7720, rel=1e-12)


def test_possible_dose_mask_is_the_body_when_there_is_no_external_contour(protocol_file):
    """OpenKBP patients have no external contour: the possible-dose mask is the body, so the
    figures are those of the external contour (the 100 Gy voxel is left out again)."""
    patient = _patient(with_body=False)
    patient = dataclasses.replace(patient, possible_dose_mask=BODY_MASK)
    figures = quality_figures(patient, _dose(), read_protocol(protocol_file(PROTOCOL)))
    assert figure_value(figures, "Dmax", BODY) == 80.0
    assert figure_value(figures, "Dmean", NORMAL_TISSUE) == pytest.approx(77960 / 3816,
                                                                         rel=1e-12)


def test_dose_off_the_grid_is_refused_and_missing_rows_are_named(protocol_file):
    protocol = read_protocol(protocol_file(PROTOCOL))
    with pytest.raises(ValueError, match=r"dose shape \(20, 20, 10\) differs from grid"):
        quality_figures(_patient(), np.zeros((20, 20, 10)), protocol)
    figures = quality_figures(_patient(), _dose(), protocol)
    with pytest.raises(KeyError, match="no figure 'R50' on 'PTV63'"):
        figure_value(figures, "R50", "PTV63")
