"""OpenKBP import: orientation from anatomy on real patients, exact values on hand-made folders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from planner.errors import InputError
from planner.io.openkbp import (
    OPENKBP_SHAPE,
    openkbp_to_planner,
    planner_to_openkbp,
    read_openkbp_case,
    read_openkbp_dose,
    read_openkbp_grid,
    read_openkbp_patient,
    write_openkbp_dose,
)


def _centroid_mm(patient, name):
    index = np.argwhere(patient.structure(name).mask)
    return patient.grid.index_to_position_mm(index).mean(axis=0)  # (z, y, x)


def _write(folder: Path, stem: str, rows: list[str], gz: bool = False) -> None:
    text = ",data\n" + "".join(f"{r}\n" for r in rows)
    if gz:
        (folder / f"{stem}.csv.gz").write_bytes(gzip.compress(text.encode()))
    else:
        (folder / f"{stem}.csv").write_text(text)


def _flat(r: int, c: int, s: int) -> int:
    return int(np.ravel_multi_index((r, c, s), OPENKBP_SHAPE))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A hand-written patient: 3 CT voxels, a 2-voxel PTV63, a 1-voxel cord, a dose of 2 voxels."""
    folder = tmp_path / "pt_tiny"
    folder.mkdir()
    (folder / "voxel_dimensions.csv").write_text("4.0\n4.0\n2.0\n")
    _write(folder, "ct", [f"{_flat(1, 2, 3)},1124.0", f"{_flat(0, 0, 0)},5000",
                          f"{_flat(127, 127, 127)},24"], gz=True)
    _write(folder, "PTV63", [f"{_flat(1, 2, 3)},", f"{_flat(1, 2, 4)},"])
    _write(folder, "SpinalCord", [f"{_flat(5, 6, 7)},"])
    _write(folder, "possible_dose_mask", [f"{_flat(1, 2, 3)},", f"{_flat(1, 2, 4)},"])
    _write(folder, "dose", [f"{_flat(1, 2, 3)},63.5", f"{_flat(1, 2, 4)},1.25"])
    return folder


def test_tiny_folder_values_and_mapping(tiny: Path):
    """OpenKBP [r, c, s] lands at our [127 - s, r, c]; CT is HU + 1024 clipped to 0..4095."""
    p = read_openkbp_patient(tiny)
    assert p.name == "pt_tiny"
    assert p.grid.shape == (128, 128, 128)
    assert p.grid.spacing_mm == (2.0, 4.0, 4.0)  # (dz, dy, dx): the third file value is slices
    # centred on 0: the middle of the grid (index 63.5) is at 0 mm
    np.testing.assert_allclose(p.grid.index_to_position_mm([63.5, 63.5, 63.5]), 0.0, atol=1e-9)
    assert p.hu[124, 1, 2] == 100.0
    assert p.hu[127, 0, 0] == 4095.0 - 1024.0  # 5000 clipped to 4095
    assert p.hu[0, 127, 127] == 24.0 - 1024.0
    assert p.hu[60, 60, 60] == -1024.0  # unlisted = 0 = air
    assert np.count_nonzero(p.hu != -1024.0) == 3
    assert [(s.name, s.kind) for s in p.structures] == [("SpinalCord", "organ"),
                                                        ("PTV63", "target")]
    assert np.argwhere(p.structure("PTV63").mask).tolist() == [[123, 1, 2], [124, 1, 2]]
    assert np.argwhere(p.structure("SpinalCord").mask).tolist() == [[120, 5, 6]]
    assert [(rx.target, rx.dose_gy, rx.fractions)
            for rx in p.prescriptions] == [("PTV63", 63.0, 35)]
    np.testing.assert_array_equal(p.possible_dose_mask, p.structure("PTV63").mask)
    assert p.density[124, 1, 2] > 1.0 and p.density[60, 60, 60] < 0.01
    dose = read_openkbp_dose(tiny)
    assert dose.dtype == np.float32 and dose[124, 1, 2] == 63.5 and dose[123, 1, 2] == 1.25
    assert np.count_nonzero(dose) == 2


def test_array_reorientation_round_trip():
    a = np.random.default_rng(0).random(OPENKBP_SHAPE).astype(np.float32)
    b = openkbp_to_planner(a)
    assert b[127 - 3, 1, 2] == a[1, 2, 3]
    np.testing.assert_array_equal(planner_to_openkbp(b), a)


def test_dose_write_read_round_trip(tiny: Path, tmp_path: Path):
    dose = read_openkbp_dose(tiny)
    for name in ("out.csv", "out.csv.gz"):
        path = write_openkbp_dose(tmp_path / name, dose)
        np.testing.assert_array_equal(read_openkbp_dose(path), dose)
    with pytest.raises(InputError, match="already exists"):
        write_openkbp_dose(tmp_path / "out.csv", dose)


def test_empty_roi_file_is_absent(tiny: Path):
    _write(tiny, "PTV70", [])
    p = read_openkbp_patient(tiny)
    assert "PTV70" not in [s.name for s in p.structures]
    assert [rx.target for rx in p.prescriptions] == ["PTV63"]


def test_no_dose_gives_none(tiny: Path):
    (tiny / "dose.csv").unlink()
    assert read_openkbp_dose(tiny) is None


def test_case_needs_dose_and_possible_dose_mask(tiny: Path):
    patient, dose = read_openkbp_case(tiny, needed_for="scoring")
    np.testing.assert_array_equal(dose, read_openkbp_dose(tiny))
    assert patient.possible_dose_mask is not None and patient.possible_dose_mask.sum() == 2
    (tiny / "possible_dose_mask.csv").unlink()
    with pytest.raises(InputError, match=r"pt_tiny/possible_dose_mask\.csv: missing$"):
        read_openkbp_case(tiny, needed_for="scoring")
    (tiny / "dose.csv").unlink()
    with pytest.raises(InputError, match=r"pt_tiny/dose\.csv: missing \(scoring\)"):
        read_openkbp_case(tiny, needed_for="scoring")


@pytest.mark.parametrize("missing", ["ct.csv.gz", "voxel_dimensions.csv"])
def test_missing_required_file(tiny: Path, missing: str):
    (tiny / missing).unlink()
    stem = missing.split(".")[0]
    with pytest.raises(InputError, match=rf"pt_tiny/{stem}\.csv: missing"):
        read_openkbp_patient(tiny)


@pytest.mark.parametrize(
    ("stem", "rows", "message"),
    [
        ("SpinalCord", ["12,", "abc,"], r"SpinalCord\.csv: malformed CSV"),
        ("dose", ["12,1.0", "13,"], r"dose\.csv: malformed CSV"),
        ("SpinalCord", ["2097152,"], r"SpinalCord\.csv: voxel index 2097152 out of range"),
        ("SpinalCord", ["-1,"], r"SpinalCord\.csv: voxel index -1 out of range"),
        ("SpinalCord", ["1.5,"], r"SpinalCord\.csv: malformed CSV \(non-integer"),
    ],
)
def test_bad_csv_names_file(tiny: Path, stem: str, rows: list[str], message: str):
    _write(tiny, stem, rows)
    with pytest.raises(InputError, match=message):
        read_openkbp_patient(tiny) if stem != "dose" else read_openkbp_dose(tiny)


def test_bad_header_and_voxel_dimensions(tiny: Path):
    (tiny / "SpinalCord.csv").write_text("index,value\n1,\n")
    with pytest.raises(InputError, match=r"SpinalCord\.csv: malformed CSV \(header"):
        read_openkbp_patient(tiny)
    (tiny / "voxel_dimensions.csv").write_text("4.0\n-4.0\n2.0\n")
    with pytest.raises(InputError, match=r"voxel_dimensions\.csv: expected 3 positive"):
        read_openkbp_grid(tiny)


@pytest.mark.parametrize("split_patient", [("train-pats", "pt_1"), ("train-pats", "pt_10"),
                                           ("validation-pats", None), ("test-pats", None)])
def test_real_patient_orientation_from_anatomy(openkbp_dir: Path, split_patient):
    """Anatomy fixes the axes: cord posterior of mandible/larynx, brainstem superior of the cord,
    left parotid at +x; the cord runs along z; the slice spacing is voxel_dimensions' third
    value."""
    split, name = split_patient
    folder = (openkbp_dir / split / name) if name else sorted((openkbp_dir / split).iterdir())[0]
    p = read_openkbp_patient(folder)
    dims = np.loadtxt(gzip.open(folder / "voxel_dimensions.csv.gz"))
    assert p.grid.spacing_mm == (dims[2], dims[0], dims[1])
    names = {s.name for s in p.structures}
    cord = _centroid_mm(p, "SpinalCord")
    for anterior in {"Mandible", "Larynx"} & names:
        assert _centroid_mm(p, anterior)[1] < cord[1] - 20  # y grows posterior; >= 2 cm apart
    if "Brainstem" in names:
        assert _centroid_mm(p, "Brainstem")[0] > cord[0]  # z grows superior
    if {"LeftParotid", "RightParotid"} <= names:
        assert _centroid_mm(p, "LeftParotid")[2] > _centroid_mm(p, "RightParotid")[2] + 40
    extent = np.ptp(np.argwhere(p.structure("SpinalCord").mask) * p.grid.spacing_mm, axis=0)
    assert extent[0] == extent.max()  # the cord is longest in z
    dose = read_openkbp_dose(folder)
    assert dose.max() > 60 and np.all(dose[~p.possible_dose_mask] == 0)
    assert [rx.dose_gy for rx in p.prescriptions] == [
        {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}[s.name] for s in p.targets()]
    ptv70 = p.structure("PTV70").mask
    assert abs(np.median(dose[ptv70]) - 70.0) < 3.5  # plans are normalised to the PTV70 Rx (5 %)


def test_real_dose_write_read_round_trip(openkbp_dir: Path, tmp_path: Path):
    folder = openkbp_dir / "train-pats" / "pt_1"
    dose = read_openkbp_dose(folder)
    path = write_openkbp_dose(tmp_path / "pt_1.csv", dose)
    # values in the file have <= 4 decimals; %.6g keeps them to float32 rounding
    np.testing.assert_allclose(read_openkbp_dose(path), dose, rtol=1e-6, atol=0)
