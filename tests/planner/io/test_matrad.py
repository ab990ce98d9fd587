"""matRad/CORT .mat import: TG119.mat against its own raw arrays and the TG-119 geometry, and
small files written with scipy.io.savemat whose every voxel is known."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from planner.errors import InputError
from planner.io.matrad import read_matrad_mat

# A 4 (y) x 5 (x) x 3 (z) cube whose HU encode the MATLAB subscripts: 100 y + 10 x + z (1-based).
NY, NX, NZ = 4, 5, 3


def _hu_cube() -> np.ndarray:
    y, x, z = np.meshgrid(np.arange(1, NY + 1), np.arange(1, NX + 1), np.arange(1, NZ + 1),
                          indexing="ij")
    return (100 * y + 10 * x + z).astype(float)


def _cst(rows) -> np.ndarray:
    cst = np.empty((len(rows), 6), dtype=object)
    for i, (name, kind, indices, objective) in enumerate(rows):
        cst[i, :] = [i, name, kind, np.asarray(indices, dtype=float), {"Priority": 1.0},
                     objective or {"className": "none", "parameters": 0.0}]
    return cst


def _save(path, ct=None, cst=None, **extra):
    variables = dict(extra)
    if ct is not None:
        variables["ct"] = ct
    if cst is not None:
        variables["cst"] = cst
    scipy.io.savemat(path, variables)
    return path


def _ct(**fields):
    ct = {"cubeHU": _hu_cube(), "resolution": {"x": 2.0, "y": 3.0, "z": 4.0},
          "x": 10.0 + 2.0 * np.arange(NX), "y": -20.0 + 3.0 * np.arange(NY),
          "z": 5.0 + 4.0 * np.arange(NZ)}
    ct.update(fields)
    return {k: v for k, v in ct.items() if v is not None}


def _linear(row, col, page):
    """MATLAB 1-based column-major linear index of 1-based (row, col, page) = (y, x, z)."""
    return row + (col - 1) * NY + (page - 1) * NY * NX


SQUARED_DEVIATION_60 = {"className": "DoseObjectives.matRad_SquaredDeviation",
                        "parameters": 60.0, "penalty": 1000.0}


def test_axes_indices_and_coordinates_of_a_known_cube(tmp_path):
    cst = _cst([("Tumour", "TARGET", [_linear(2, 3, 1), _linear(4, 5, 3)], SQUARED_DEVIATION_60),
                ("Body", "OAR", np.arange(1, NY * NX * NZ + 1), None),
                ("Cord", "OAR", [_linear(1, 1, 2)], None)])
    path = _save(tmp_path / "box.mat", _ct(), cst, pln={"numOfFractions": 30.0})
    patient = read_matrad_mat(path)
    assert patient.grid.shape == (NZ, NY, NX)
    assert patient.grid.origin_mm == (5.0, -20.0, 10.0)
    assert patient.grid.spacing_mm == (4.0, 3.0, 2.0)
    # HU at [z, y, x] (0-based) is 100 (y+1) + 10 (x+1) + (z+1).
    k, j, i = np.meshgrid(np.arange(NZ), np.arange(NY), np.arange(NX), indexing="ij")
    np.testing.assert_array_equal(patient.hu, 100 * (j + 1) + 10 * (i + 1) + (k + 1))
    assert patient.hu.dtype == np.float32 and patient.hu.flags.c_contiguous
    tumour = patient.structure("Tumour")
    assert tumour.kind == "target"
    assert sorted(zip(*np.nonzero(tumour.mask))) == [(0, 1, 2), (2, 3, 4)]
    assert patient.structure("Body").kind == "external" and patient.structure("Body").mask.all()
    assert patient.structure("Cord").kind == "organ"
    assert list(zip(*np.nonzero(patient.structure("Cord").mask))) == [(1, 0, 0)]
    # Rx from the target's squared-deviation objective, fractions from pln.
    rx = patient.prescriptions
    assert [(p.target, p.dose_gy, p.fractions) for p in rx] == [("Tumour", 60.0, 30)]
    assert read_matrad_mat(path, fractions=5).prescriptions[0].fractions == 5


def test_coordinates_default_like_matrad_get_world_axes(tmp_path):
    """Without ct.x/y/z matRad starts at -(n/2) * resolution, or at ImagePositionPatient."""
    cst = _cst([("A", "OAR", [1], None)])
    path = _save(tmp_path / "noaxes.mat", _ct(x=None, y=None, z=None), cst)
    patient = read_matrad_mat(path)
    assert patient.grid.origin_mm == (-NZ / 2 * 4.0, -NY / 2 * 3.0, -NX / 2 * 2.0)
    assert patient.prescriptions == ()  # no target, no prescription
    ct = _ct(x=None, y=None, z=None, dicomInfo={"ImagePositionPatient": [-7.0, 8.0, 9.0]})
    patient = read_matrad_mat(_save(tmp_path / "ipp.mat", ct, cst))
    assert patient.grid.origin_mm == (9.0, 8.0, -7.0)


def test_decreasing_coordinates_are_flipped(tmp_path):
    cst = _cst([("A", "OAR", [_linear(1, 1, 1)], None)])
    ct = _ct(y=-20.0 + 3.0 * np.arange(NY)[::-1])
    patient = read_matrad_mat(_save(tmp_path / "flip.mat", ct, cst))
    assert patient.grid.origin_mm[1] == -20.0 and patient.grid.spacing_mm[1] == 3.0
    # MATLAB row 1 (y = -11 mm) is now the last row.
    assert list(zip(*np.nonzero(patient.structure("A").mask))) == [(0, NY - 1, 0)]
    assert patient.hu[0, NY - 1, 0] == 100 * 1 + 10 * 1 + 1


@pytest.mark.parametrize("variables, message", [
    ({"cst": "c"}, "no variable 'ct'"),
    ({"ct": "c"}, "no variable 'cst'"),
])
def test_missing_variables(tmp_path, variables, message):
    ct = _ct() if "ct" in variables else None
    cst = _cst([("A", "OAR", [1], None)]) if "cst" in variables else None
    path = _save(tmp_path / "bad.mat", ct, cst, other=1.0)
    with pytest.raises(InputError, match=f"bad.mat: not a matRad phantom, {message}"):
        read_matrad_mat(path)


def test_bad_shapes_and_indices(tmp_path):
    cst = _cst([("A", "OAR", [1], None)])
    path = _save(tmp_path / "xlen.mat", _ct(x=np.arange(NX + 2.0)), cst)
    with pytest.raises(InputError, match=r"xlen.mat: ct.x has 7 values but the cube has 5"):
        read_matrad_mat(path)
    path = _save(tmp_path / "res.mat", _ct(resolution={"x": 2.5, "y": 3.0, "z": 4.0}), cst)
    with pytest.raises(InputError, match=r"res.mat: ct.x steps 2 mm but ct.resolution.x is 2.5"):
        read_matrad_mat(path)
    path = _save(tmp_path / "cube.mat", _ct(cubeHU=np.zeros((2, 2, 2, 2))), cst)
    with pytest.raises(InputError, match=r"cube.mat: ct.cubeHU must be a 3D array"):
        read_matrad_mat(path)
    path = _save(tmp_path / "nohu.mat", _ct(cubeHU=None, cube=_hu_cube()), cst)
    with pytest.raises(InputError, match=r"nohu.mat: ct has no cubeHU"):
        read_matrad_mat(path)
    bad = _cst([("Far", "OAR", [NX * NY * NZ + 1], None)])
    with pytest.raises(InputError, match=r"idx.mat: cst structure 'Far': voxel indices must be"):
        read_matrad_mat(_save(tmp_path / "idx.mat", _ct(), bad))


def test_unreadable_files(tmp_path):
    text = tmp_path / "notes.mat"
    text.write_text("not a MATLAB file\n" * 20)
    with pytest.raises(InputError, match="notes.mat: not a readable MATLAB file"):
        read_matrad_mat(text)
    with pytest.raises(InputError, match="missing.mat: no such file"):
        read_matrad_mat(tmp_path / "missing.mat")


def test_tg119_matches_its_raw_arrays_and_the_tg119_geometry(tg119_mat):
    raw = scipy.io.loadmat(tg119_mat, simplify_cells=True)
    patient = read_matrad_mat(tg119_mat)
    grid = patient.grid
    assert grid.shape == (129, 167, 167)
    assert grid.spacing_mm == (2.5, 3.0, 3.0)
    assert grid.origin_mm == (-160.0, -250.0, -250.0)  # ct.z[0], ct.y[0], ct.x[0]
    # Our [z, y, x] is MATLAB's (y, x, z) transposed: compare on a sample of voxels.
    rng = np.random.default_rng(0)
    k, j, i = (rng.integers(0, n, 500) for n in grid.shape)
    np.testing.assert_array_equal(patient.hu[k, j, i],
                                  raw["ct"]["cubeHU"][j, i, k].astype(np.float32))
    # Voxel lists kept whole: 1320 / 7458 / 601736 voxels (2.5 x 3 x 3 mm = 0.0225 cc each).
    volumes = {s.name: patient.volume_cc(s.name) for s in patient.structures}
    assert volumes == pytest.approx({"Core": 29.70, "OuterTarget": 167.805, "BODY": 13539.06},
                                    rel=1e-9)
    kinds = {s.name: s.kind for s in patient.structures}
    assert kinds == {"Core": "organ", "OuterTarget": "target", "BODY": "external"}
    # Index order is right only if BODY covers the water of the CT and not its air: a
    # row-major reading of the same list scatters it over air.
    body = patient.structure("BODY").mask
    assert np.mean(patient.hu[body] > -300) > 0.99
    assert np.mean(patient.hu[~body] < -800) > 0.95  # outside: air, and the couch (~-950 HU)
    # +y is posterior (LPS): the couch (about -960 HU) lies under the supine phantom, at larger
    # y than BODY; anterior of BODY is open air. Measured: 99 % / 2 % of voxels above -990 HU.
    z, y, x = grid.axes_mm()
    _, jj, _ = np.nonzero(body)
    central = np.abs(x) < 100.0
    under = patient.hu[:, (y > y[jj].max() + 5) & (y < y[jj].max() + 40)][:, :, central]
    above = patient.hu[:, (y < y[jj].min() - 5) & (y > y[jj].min() - 40)][:, :, central]
    assert np.mean(under > -990) > 0.9 and np.mean(above > -990) < 0.1
    # TG-119 (Ezzell et al. 2009): core radius 1 cm, target 1.5-3.7 cm from the core axis,
    # centred on the origin; the target lies anterior (-y) and opens posteriorly.
    kk, jj, ii = np.nonzero(patient.structure("Core").mask)
    axis_y, axis_x = y[jj].mean(), x[ii].mean()
    assert abs(axis_y) < 3.0 and abs(axis_x) < 3.0
    assert np.hypot(y[jj] - axis_y, x[ii] - axis_x).max() < 11.0
    kk, jj, ii = np.nonzero(patient.structure("OuterTarget").mask)
    radius = np.hypot(y[jj] - axis_y, x[ii] - axis_x)
    assert radius.min() > 14.0 and radius.max() < 40.0
    assert y[jj].mean() < axis_y - 10.0
    rx = patient.prescriptions
    assert [(p.target, p.dose_gy, p.fractions) for p in rx] == [("OuterTarget", 50.0, 25)]
    assert patient.name == "TG119" and patient.source == str(tg119_mat)
