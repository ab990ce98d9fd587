"""Synthetic phantoms against analytic geometry, the Gammex table and the CORT TG-119 file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io

from planner.phantoms import cshape_phantom, density_to_hu, slab_phantom, water_box


def test_water_box_is_water_in_air_with_exact_volumes():
    """200 mm cube, 2.5 mm voxels: faces on voxel edges, so the volumes are exact (8000 cc)."""
    patient = water_box(size_mm=200.0, target_size_mm=40.0, voxel_mm=2.5, margin_mm=20.0)
    body = patient.structure("BODY")
    assert body.kind == "external"
    assert patient.volume_cc("BODY") == pytest.approx(8000.0, rel=1e-12)
    assert patient.volume_cc("PTV") == pytest.approx(64.0, rel=1e-12)
    # Gammex 467 points (DESIGN.md): 0 HU is 1.00 g/cm^3; air floored at 0.0012 g/cm^3 (NIST).
    np.testing.assert_array_equal(patient.hu[body.mask], 0.0)
    np.testing.assert_array_equal(patient.hu[~body.mask], -1000.0)
    np.testing.assert_allclose(patient.density[body.mask], 1.0, rtol=1e-6)  # float32
    np.testing.assert_allclose(patient.density[~body.mask], 0.0012, rtol=1e-6)
    # The cube is centred on the origin: mean voxel-centre position of BODY and PTV is 0.
    z, y, x = patient.grid.axes_mm()
    for name in ("BODY", "PTV"):
        kk, jj, ii = np.nonzero(patient.structure(name).mask)
        np.testing.assert_allclose([z[kk].mean(), y[jj].mean(), x[ii].mean()], 0.0, atol=1e-9)
    # At least the margin of air on each side.
    low, high = patient.grid.extent_mm()
    assert np.all(low <= -120.0) and np.all(high >= 120.0)
    assert (patient.prescriptions[0].target, patient.prescriptions[0].dose_gy,
            patient.prescriptions[0].fractions) == ("PTV", 50.0, 25)


def test_lung_hu_comes_from_the_gammex_table():
    """0.26 g/cm^3 lies between the Gammex points (-970 HU, 0.00) and (-713 HU, 0.29)."""
    expected = -970.0 + (0.26 - 0.00) / (0.29 - 0.00) * (-713.0 - -970.0)
    assert density_to_hu(0.26) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="outside the calibration table"):
        density_to_hu(5.0)


@pytest.mark.parametrize("voxel_mm", [2.5, (2.0, 5.0, 4.0)])
def test_slab_phantom_meets_water_lung_water_along_gantry_0(voxel_mm):
    """A gantry-0 beam travels along +y (IEC 61217, supine head first): water 5 cm, lung 10 cm,
    water to 30 cm depth, with the anterior surface at y = -150 mm."""
    patient = slab_phantom(voxel_mm=voxel_mm)
    grid = patient.grid
    z, y, x = grid.axes_mm()
    k, i = int(np.argmin(np.abs(z))), int(np.argmin(np.abs(x)))
    depth = y + 150.0
    column = patient.density[k, :, i]
    lung_density = column[(depth > 50) & (depth < 150)]
    np.testing.assert_allclose(lung_density, 0.26, rtol=1e-5)  # float32 round trip of the HU
    np.testing.assert_allclose(column[(depth > 0) & (depth < 50)], 1.0, rtol=1e-6)
    np.testing.assert_allclose(column[(depth > 150) & (depth < 300)], 1.0, rtol=1e-6)
    np.testing.assert_allclose(column[(depth < 0) | (depth > 300)], 0.0012, rtol=1e-6)
    # Slab thicknesses from voxel counts: exact where the voxel divides 50 mm, else within a voxel.
    dy = grid.spacing_mm[1]
    lung_mm = patient.structure("Lung").mask[k, :, i].sum() * dy
    body_mm = patient.structure("BODY").mask[k, :, i].sum() * dy
    assert abs(lung_mm - 100.0) <= dy and abs(body_mm - 300.0) <= dy
    # Laterally 30 x 30 cm.
    assert abs(patient.structure("BODY").mask[:, grid.shape[1] // 2, i].sum()
               * grid.spacing_mm[0] - 300.0) <= grid.spacing_mm[0]
    # The target sits in the distal water, beyond the lung.
    _, jj, _ = np.nonzero(patient.structure("PTV").mask)
    assert depth[jj].min() > 150.0 and patient.prescriptions[0].target == "PTV"
    assert patient.structure("Lung").kind == "organ"


def _segment_area_mm2(radius, y_cut):
    """Area of the disc of ``radius`` with y <= ``y_cut`` (circular segment formula)."""
    return (math.pi * radius**2 - radius**2 * math.acos(y_cut / radius)
            + y_cut * math.sqrt(radius**2 - y_cut**2))


def test_cshape_volumes_match_the_analytic_tg119_geometry():
    """Core: cylinder r 10 mm, 100 mm long; PTV: annulus 15-37 mm, y <= 5 mm, 80 mm long.

    At 1 mm voxels the voxel-centre volumes are within 2 % of the analytic ones (the boundary
    layer of a 10 mm radius is about 1 voxel; measured differences are below 1 %).
    """
    patient = cshape_phantom(voxel_mm=1.0, body_size_mm=(110.0, 90.0, 90.0), margin_mm=2.0)
    core_cc = math.pi * 10.0**2 * 100.0 / 1000.0
    ptv_cc = (_segment_area_mm2(37.0, 5.0) - _segment_area_mm2(15.0, 5.0)) * 80.0 / 1000.0
    assert patient.volume_cc("Core") == pytest.approx(core_cc, rel=0.02)
    assert patient.volume_cc("PTV") == pytest.approx(ptv_cc, rel=0.02)


def test_cshape_target_wraps_the_core_with_a_gap_and_opens_posteriorly():
    patient = cshape_phantom()
    assert [(s.name, s.kind) for s in patient.structures] == [
        ("PTV", "target"), ("Core", "organ"), ("BODY", "external")]
    rx = patient.prescriptions[0]
    assert (rx.target, rx.dose_gy, rx.fractions) == ("PTV", 50.0, 25)
    z, y, x = patient.grid.axes_mm()
    ptv, core, body = (patient.structure(n).mask for n in ("PTV", "Core", "BODY"))
    kk, jj, ii = np.nonzero(ptv)
    radius = np.hypot(y[jj], x[ii])
    assert radius.min() >= 15.0 and radius.max() <= 37.0
    assert y[jj].max() <= 5.0 and y[jj].mean() < -10.0  # the anterior part is kept
    kk, jj, ii = np.nonzero(core)
    assert np.hypot(y[jj], x[ii]).max() <= 10.0
    assert not np.any(ptv & core)
    assert np.all(body[ptv]) and np.all(body[core])
    np.testing.assert_array_equal(patient.hu[body], 0.0)
    # The C wraps the core: every core slice inside the PTV's length has PTV voxels on the
    # left, right and anterior side of the core, none posterior of y = 5 mm.
    k = int(np.argmin(np.abs(z)))
    rows = ptv[k]
    assert rows[:, x < -15].any() and rows[:, x > 15].any() and rows[y < -15, :].any()


def test_cshape_reproduces_the_cort_tg119_volumes(tg119_mat):
    """CORT digitisation of TG-119 (TG119.mat, same 2.5 x 3 x 3 mm grid): Core 1320 voxels
    (29.7 cc), OuterTarget 7458 voxels (167.8 cc). Ours agree within 6 %: CORT's contours were
    drawn by hand-sized polygons and voxelised by another program."""
    cort = scipy.io.loadmat(tg119_mat, simplify_cells=True)["cst"]
    voxel_cc = 2.5 * 3.0 * 3.0 / 1000.0
    cort_cc = {str(row[1]): np.asarray(row[3]).size * voxel_cc for row in cort}
    patient = cshape_phantom()
    assert patient.volume_cc("Core") == pytest.approx(cort_cc["Core"], rel=0.06)
    assert patient.volume_cc("PTV") == pytest.approx(cort_cc["OuterTarget"], rel=0.06)


def test_voxel_size_is_checked():
    with pytest.raises(ValueError, match="voxel_mm"):
        water_box(voxel_mm=(1.0, 2.0))
    with pytest.raises(ValueError, match="do not fit"):
        slab_phantom(water_before_mm=250.0, lung_mm=100.0)
