"""RT Structure Sets: reading, rasterising contours, tracing masks (planner.io.rtstruct)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from dicom_factory import rectangle, write_structure_set
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays
from pydicom.data import get_testdata_file

from dose.grid import Grid
from planner.errors import InputError
from planner.io.rtstruct import (
    rasterise_contours,
    read_structure_set,
    structure_kind,
    structure_set_dataset,
    trace_mask,
)
from planner.patient import DicomReferences, Structure

# Voxel centres x = -10 + 0.8 i (i < 30), y = -4 + 1.1 j (j < 12), z = -3 + 1.5 k (k < 5): no
# rectangle edge below passes through a voxel centre, so inside/outside is unambiguous.
GRID = Grid((-3.0, -4.0, -10.0), (1.5, 1.1, 0.8), (5, 12, 30))


def _box(x_range, y_range, k):
    """Mask of the voxels of GRID whose centres lie strictly inside a rectangle on slice k."""
    z, y, x = np.meshgrid(*GRID.axes_mm(), indexing="ij")
    inside = (x > x_range[0]) & (x < x_range[1]) & (y > y_range[0]) & (y < y_range[1])
    return inside & (np.arange(GRID.shape[0])[:, None, None] == k)


def test_rectangle_rasterises_to_the_voxel_centres_inside():
    z1 = GRID.origin_mm[0] + GRID.spacing_mm[0]
    mask = rasterise_contours([rectangle((-7.3, 5.5), (-2.0, 6.3), z1)], GRID, label="t")
    np.testing.assert_array_equal(mask, _box((-7.3, 5.5), (-2.0, 6.3), 1))
    assert mask.sum() == 16 * 8  # x centres -6.8 .. 5.2, y centres -1.8 .. 5.9


def test_contour_inside_contour_is_a_hole():
    z = GRID.origin_mm[0] + 2 * GRID.spacing_mm[0]
    outer, inner = rectangle((-9.0, 9.0), (-3.0, 6.5), z), rectangle((-3.1, 2.9), (0.1, 3.9), z)
    mask = rasterise_contours([outer, inner[::-1]], GRID, label="t")
    np.testing.assert_array_equal(mask, _box((-9.0, 9.0), (-3.0, 6.5), 2)
                                  & ~_box((-3.1, 2.9), (0.1, 3.9), 2))


def test_overlapping_contours_combine_by_even_odd_rule():
    z = GRID.origin_mm[0]
    a, b = rectangle((-9.0, 1.0), (-3.0, 3.0), z), rectangle((-3.0, 7.0), (0.0, 6.0), z)
    mask = rasterise_contours([a, b], GRID, label="t")
    np.testing.assert_array_equal(mask, _box((-9.0, 1.0), (-3.0, 3.0), 0)
                                  ^ _box((-3.0, 7.0), (0.0, 6.0), 0))


def test_circle_contains_centres_inside_the_circle():
    # A 720-gon deviates from its circle by r (1 - cos(pi/720)) < 1e-4 mm, so centres further
    # than 1e-3 mm from the circle are classified as by the circle itself.
    grid = Grid((0.0, -20.0, -20.0), (2.0, 0.7, 0.6), (1, 58, 68))
    angle = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radius = 13.3
    circle = np.column_stack([1.5 + radius * np.cos(angle), -0.4 + radius * np.sin(angle),
                              np.zeros_like(angle)])
    mask = rasterise_contours([circle], grid, label="t")[0]
    _, y, x = grid.axes_mm()
    distance = np.hypot(x[None, :] - 1.5, y[:, None] + 0.4)
    assert np.all(mask[distance < radius - 1e-3])
    assert not np.any(mask[distance > radius + 1e-3])


def test_agrees_with_matplotlib_point_in_polygon():
    # Independent reference: matplotlib's Path.contains_points on every voxel centre, the
    # contours of a slice combined by XOR. Random star-shaped polygons (some overlapping, some
    # past the image edge) with random real-valued vertices: no centre lies on an edge.
    from matplotlib.path import Path as PolygonPath

    rng = np.random.default_rng(3)
    grid = Grid((-2.0, -15.0, -20.0), (2.0, 0.8, 0.7), (2, 40, 55))
    _, y, x = grid.axes_mm()
    centres = np.column_stack([np.tile(x, len(y)), np.repeat(y, len(x))])
    contours, expected = [], np.zeros(grid.shape, bool)
    for k, z in enumerate(grid.axes_mm()[0]):
        for _ in range(4):
            angle = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 40)))
            radius = rng.uniform(2.0, 14.0, angle.size)
            centre = rng.uniform([-22.0, -16.0], [22.0, 16.0])
            xy = centre + np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
            contours.append(np.column_stack([xy, np.full(len(xy), z)]))
            inside = PolygonPath(xy).contains_points(centres).reshape(len(y), len(x))
            expected[k] ^= inside
    mask = rasterise_contours(contours, grid, label="t")
    assert expected.sum() > 500  # the comparison covers real areas
    np.testing.assert_array_equal(mask, expected)


def test_contour_within_tolerance_of_a_slice_is_matched():
    z = GRID.origin_mm[0] + 3 * GRID.spacing_mm[0] + 0.09 * GRID.spacing_mm[0]  # 6 % off
    mask = rasterise_contours([rectangle((-7.3, 5.5), (-2.0, 6.3), z)], GRID, label="t")
    np.testing.assert_array_equal(mask, _box((-7.3, 5.5), (-2.0, 6.3), 3))


@pytest.mark.parametrize("z", [-2.25, 4.5, -4.5], ids=["between-slices", "above", "below"])
def test_contour_on_no_slice_is_an_error(z):
    # Slices at z = -3, -1.5, 0, 1.5, 3 mm.
    with pytest.raises(InputError, match=rf"RS\.dcm: ROI 'PTV': contour at z = {z:g} mm lies on "
                                         r"no CT slice \(slices every 1\.5 mm from -3 to 3 mm\)"):
        rasterise_contours([rectangle((-7.3, 5.5), (-2.0, 6.3), z)], GRID,
                           label="RS.dcm: ROI 'PTV'")


def test_non_axial_contour_is_an_error():
    points = rectangle((-7.3, 5.5), (-2.0, 6.3), 0.0)
    points[2, 2] = 1.5
    with pytest.raises(InputError, match=r"X: contour not in an axial plane \(z from 0 to 1\.5"):
        rasterise_contours([points], GRID, label="X")


def test_contour_beyond_the_field_of_view_is_cut_at_the_edge():
    mask = rasterise_contours([rectangle((-50.0, -5.0), (-50.0, 50.0), 0.0)], GRID, label="t")
    np.testing.assert_array_equal(mask, _box((-50.0, -5.0), (-50.0, 50.0), 2))


@settings(max_examples=60, deadline=None)
@given(arrays(bool, (3, 7, 9)))
def test_traced_mask_rasterises_back_exactly(mask):
    # Any mask, including diagonal-only neighbours (marching-squares saddles), holes and voxels
    # on the image edge: level-0.5 lines separate every inside centre from every outside one.
    grid = Grid((5.0, -3.3, 12.1), (2.5, 0.9, 1.3), mask.shape)
    contours = trace_mask(mask, grid)
    np.testing.assert_array_equal(rasterise_contours(contours, grid, label="t"), mask)
    for points in contours:
        assert not np.array_equal(points[0], points[-1])  # closing point not repeated


def test_traced_ring_has_outline_and_hole():
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 9, 9))
    mask = np.zeros(grid.shape, bool)
    mask[0, 1:8, 1:8] = True
    mask[0, 3:6, 3:6] = False
    contours = trace_mask(mask, grid)
    assert len(contours) == 2
    extents = sorted(np.ptp(c[:, 0]) for c in contours)
    # Level 0.5 lies halfway between voxel centres: the hole spans 3 voxels (centres 3..5, edges
    # 2.5..5.5 at mid-edge, diagonals cut corners), the outline 7.
    assert extents == [3.0, 7.0]


@pytest.mark.parametrize(
    ("interpreted_type", "name", "kind"),
    [("PTV", "anything", "target"), ("ctv", "x", "target"), ("GTV", "x", "target"),
     ("EXTERNAL", "x", "external"), ("ORGAN", "BODY", "organ"), ("AVOIDANCE", "PTV", "organ"),
     ("", "BODY", "external"), ("", "External", "external"), ("", "Skin", "external"),
     ("", "PTV_70", "target"), ("", "Parotid_L", "organ"), ("", "Patient", "external")],
)
def test_structure_kind(interpreted_type, name, kind):
    assert structure_kind(interpreted_type, name) == kind


def test_reads_pydicoms_structure_set():
    # pydicom's rtstruct.dcm (no preamble): ROI 1 "patient" EXTERNAL with three 400 x 300 mm
    # rectangles at z = -200, -190, -180; ROIs 2, 3 isocentres as POINT contours (not volumes).
    structure_set = read_structure_set(get_testdata_file("rtstruct.dcm"))
    assert [(r.number, r.name, r.interpreted_type) for r in structure_set.rois] == [
        (1, "patient", "EXTERNAL"), (2, "Isocenter 1", "ISOCENTER"),
        (3, "Isocenter 2", "ISOCENTER")]
    assert structure_set.frame_of_reference_uids == ("1.2.826.0.1.3680043.8.498.2010020400001.2",)
    assert structure_set.patient_id == "tPhantom30sep"
    patient = structure_set.rois[0]
    assert [c[0, 2] for c in patient.contours] == [-200.0, -190.0, -180.0]
    assert structure_set.rois[1].contours == ()
    # On a 5 mm grid whose centres avoid the rectangle edges: 80 x 60 centres inside per slice.
    grid = Grid((-200.0, -197.5, -247.5), (10.0, 5.0, 5.0), (3, 80, 100))
    mask = rasterise_contours(patient.contours, grid, label="rtstruct.dcm")
    assert mask.sum() == 3 * 80 * 60
    assert mask.sum() * grid.voxel_volume_cc == pytest.approx(3 * 400 * 300 * 10 / 1000)


def test_duplicate_roi_name_is_an_error(tmp_path):
    from dicom_factory import write_ct_folder

    ct = write_ct_folder(tmp_path / "ct")
    path = write_structure_set(tmp_path / "RS.dcm", ct, [("A", "ORGAN", []), ("A", "PTV", [])])
    with pytest.raises(InputError, match=r"RS\.dcm: ROI name 'A' appears twice"):
        read_structure_set(path)


def test_not_a_structure_set_is_an_error():
    with pytest.raises(InputError, match=r"CT_small\.dcm: not an RT Structure Set"):
        read_structure_set(get_testdata_file("CT_small.dcm"))


def test_dataset_references_frame_and_slices():
    grid = Grid((-3.0, -4.0, -10.0), (1.5, 1.1, 0.8), (5, 12, 30))
    references = DicomReferences("P", "P^Q", "1.1", "1.2", "1.3",
                                 tuple(f"1.4.{k}" for k in range(5)), "1.5")
    mask = np.zeros(grid.shape, bool)
    mask[1:4, 2:6, 3:9] = True
    structures = [Structure("PTV_60", "target", mask), Structure("Cord", "organ", mask),
                  Structure("Body", "external", mask), Structure("Boost", "target", mask),
                  Structure("Empty", "organ", np.zeros(grid.shape, bool))]
    ds = structure_set_dataset(structures, grid, references, created=datetime(2026, 1, 2, 3, 4))
    assert ds.FrameOfReferenceUID == "1.2"
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == "1.2"
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == "1.3"
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == \
        list(references.ct_sop_instance_uids)
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == \
        ["PTV", "ORGAN", "EXTERNAL", "PTV", "ORGAN"]
    contours = ds.ROIContourSequence[0].ContourSequence
    assert len(contours) == 3  # one box outline per slice 1..3
    for contour in contours:
        k = round((float(contour.ContourData[2]) - grid.origin_mm[0]) / grid.spacing_mm[0])
        assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID == f"1.4.{k}"
        assert contour.NumberOfContourPoints * 3 == len(contour.ContourData)
    assert "ContourSequence" not in ds.ROIContourSequence[4]
    assert ds.StructureSetDate == "20260102"
