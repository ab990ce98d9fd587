"""CT series reading and writing (planner.io.ct).

The series are written by tests/planner/io/dicom_factory.py with pydicom directly; slice k (in z
order) of the default 6-slice series is the file CT.<5 - k>.dcm.
"""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from dicom_factory import edit, write_ct_folder
from pydicom.data import get_testdata_file

from dose.grid import Grid
from planner.errors import InputError
from planner.io.ct import read_ct_series, write_ct_series
from planner.patient import DicomReferences


def _slice_paths(folder):
    return sorted(folder.glob("CT.*.dcm"))


def test_reads_grid_hu_and_references_in_z_order(tmp_path):
    ct = write_ct_folder(tmp_path / "ct", origin_zyx=(-10.0, -5.5, -8.0),
                         spacing_zyx=(2.5, 1.0, 0.5), shape=(6, 12, 16))
    series = read_ct_series(_slice_paths(tmp_path / "ct"))
    assert series.grid == Grid((-10.0, -5.5, -8.0), (2.5, 1.0, 0.5), (6, 12, 16))
    # The factory's HU are integers stored exactly through slope 1 / intercept -1024.
    np.testing.assert_array_equal(series.hu, ct.hu)
    assert series.hu.dtype == np.float32
    assert series.paths == ct.paths  # sorted by z, not by file name or instance number
    assert series.references.ct_sop_instance_uids == ct.sop_uids
    assert series.references.frame_of_reference_uid == ct.frame_uid
    assert series.references.study_instance_uid == ct.study_uid
    assert series.references.ct_series_instance_uid == ct.series_uid
    assert series.references.patient_id == "FACTORY-1"
    assert series.references.patient_position == "HFS"


def test_rescale_slope_and_intercept_applied_per_slice(tmp_path):
    # Each slice its own (slope, intercept): HU = stored * slope + intercept, slice by slice.
    rescale = [(1.0, -1024.0), (0.5, -1000.0), (0.5, -1500.0), (1.0, -1000.0), (0.25, -1000.0),
               (1.0, -2000.0)]
    ct = write_ct_folder(tmp_path / "ct", rescale=rescale)
    series = read_ct_series(_slice_paths(tmp_path / "ct"))
    np.testing.assert_array_equal(series.hu, ct.hu)


def test_single_slice_takes_its_thickness_as_spacing(tmp_path):
    ct = write_ct_folder(tmp_path / "ct", shape=(1, 4, 5), spacing_zyx=(3.0, 1.0, 1.0))
    series = read_ct_series(list(ct.paths))
    assert series.grid.spacing_mm == (3.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"ImageOrientationPatient": [0, 1, 0, 0, 0, -1]}, r"CT\.3\.dcm: ImageOrientationPatient"),
        ({"ImageOrientationPatient": [-1, 0, 0, 0, 1, 0]}, r"CT\.3\.dcm: .*not axial head-first"),
        ({"GantryDetectorTilt": 12.0}, r"CT\.3\.dcm: gantry tilt 12 degrees"),
        ({"PatientPosition": "FFS"}, r"CT\.3\.dcm: patient position FFS is not head-first"),
        ({"PixelSpacing": [1.0, 0.6]}, r"CT\.3\.dcm: pixel spacing \[1, 0\.6\] mm differs"),
        ({"Rows": 10}, r"CT\.3\.dcm: image size 10 x 16 differs from 12 x 16"),
        ({"SeriesInstanceUID": "1.2.3.4"}, r"CT\.3\.dcm: SeriesInstanceUID 1\.2\.3\.4 differs"),
        ({"FrameOfReferenceUID": "1.2.3.4"}, r"CT\.3\.dcm: FrameOfReferenceUID 1\.2\.3\.4"),
        ({"ImagePositionPatient": [-8.0, -5.0, -5.0]}, r"CT\.3\.dcm: slice position .* not along "
                                                       r"the slice normal"),
        ({"ImagePositionPatient": None}, r"CT\.3\.dcm: missing ImagePositionPatient"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"}, r"CT\.3\.dcm: not a CT image"),
    ],
    ids=["sagittal", "feet-first-orientation", "tilt", "feet-first-position", "pixel-spacing",
         "image-size", "series", "frame", "off-normal", "no-position", "not-ct"],
)
def test_broken_slice_is_named(tmp_path, attributes, message):
    write_ct_folder(tmp_path / "ct")
    edit(tmp_path / "ct" / "CT.3.dcm", **attributes)  # slice k = 2, z = -5 mm
    with pytest.raises(InputError, match=message):
        read_ct_series(_slice_paths(tmp_path / "ct"))


def test_missing_slice_is_a_gap(tmp_path):
    write_ct_folder(tmp_path / "ct")  # z = -10, -7.5, -5, -2.5, 0, 2.5
    (tmp_path / "ct" / "CT.3.dcm").unlink()  # z = -5
    with pytest.raises(InputError, match=r"CT\.2\.dcm: 1 missing slice\(s\) before it: gap of "
                                         r"5 mm from z = -7\.5 mm, slices are 2\.5 mm apart"):
        read_ct_series(_slice_paths(tmp_path / "ct"))


def test_uneven_spacing_names_the_slice(tmp_path):
    write_ct_folder(tmp_path / "ct")
    edit(tmp_path / "ct" / "CT.0.dcm", ImagePositionPatient=[-8.0, -5.5, 3.0])  # last slice, 2.5
    with pytest.raises(InputError, match=r"CT\.0\.dcm: slice spacing 3 mm differs from 2\.5 mm"):
        read_ct_series(_slice_paths(tmp_path / "ct"))


def test_duplicate_position_is_named(tmp_path):
    write_ct_folder(tmp_path / "ct")
    shutil.copy(tmp_path / "ct" / "CT.3.dcm", tmp_path / "ct" / "CT.3b.dcm")
    with pytest.raises(InputError, match=r"CT\.3b?\.dcm: same slice position z = -5 mm"):
        read_ct_series(_slice_paths(tmp_path / "ct"))


def test_truncated_pixel_data_is_named(tmp_path):
    write_ct_folder(tmp_path / "ct")
    path = tmp_path / "ct" / "CT.3.dcm"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"CT\.3\.dcm: "):
        read_ct_series(_slice_paths(tmp_path / "ct"))


def test_third_party_feet_first_image_is_refused():
    # pydicom's CT_small.dcm: PatientPosition FFS (feet first), which planner does not support.
    path = get_testdata_file("CT_small.dcm")
    with pytest.raises(InputError, match=r"CT_small\.dcm: patient position FFS"):
        read_ct_series([path])


def test_third_party_image_hu_and_geometry(tmp_path):
    # pydicom's CT_small.dcm made head-first: HU and position as pydicom itself decodes them.
    path = tmp_path / "CT_small.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    edit(path, PatientPosition="HFS")
    reference = pydicom.dcmread(path)
    series = read_ct_series([path])
    x, y, z = (float(v) for v in reference.ImagePositionPatient)
    assert series.grid.origin_mm == (z, y, x)
    assert series.grid.spacing_mm == (5.0, 0.661468, 0.661468)  # SliceThickness, PixelSpacing
    expected = reference.pixel_array * float(reference.RescaleSlope) \
        + float(reference.RescaleIntercept)
    np.testing.assert_array_equal(series.hu[0], expected)


def _references(n):
    return DicomReferences("P1", "Test^Patient", "1.2.3", "1.2.4", "1.2.5",
                           tuple(f"1.2.6.{k}" for k in range(n)))


def test_written_series_reads_back_with_hu_rounded(tmp_path):
    grid = Grid((-12.25, 30.5, -40.125), (2.0, 0.75, 1.25), (4, 5, 7))
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1024, 3000, grid.shape).astype(np.float32)
    paths = write_ct_series(tmp_path, grid, hu, _references(4))
    series = read_ct_series(paths[::-1])
    assert series.grid == grid
    # Stored as int16 with slope 1: HU come back rounded to the nearest integer.
    np.testing.assert_array_equal(series.hu, np.rint(hu))
    assert series.references.ct_sop_instance_uids == _references(4).ct_sop_instance_uids
    assert series.paths == paths


def test_write_refuses_hu_beyond_int16(tmp_path):
    grid = Grid((0, 0, 0), (1, 1, 1), (1, 2, 2))
    with pytest.raises(ValueError, match="do not fit int16"):
        write_ct_series(tmp_path, grid, np.full(grid.shape, 40000.0), _references(1))
