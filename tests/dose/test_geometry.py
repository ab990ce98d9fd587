"""IEC 61217 geometry against hand-worked cases for a head-first supine patient."""

import numpy as np
import pytest

from dose.beams import Beam, beamlets_covering, equispaced_beams
from dose.geometry import patient_to_beam_matrix, project_to_beam, source_position_xyz_mm
from dose.grid import Grid

ISO = (10.0, -20.0, 30.0)


@pytest.mark.parametrize(("gantry", "couch", "direction"), [
    (0.0, 0.0, (0, -1, 0)),     # gantry 0: source above a supine patient, anterior is -y (LPS)
    (90.0, 0.0, (1, 0, 0)),     # clockwise seen from the foot: source on the patient's left (+x)
    (180.0, 0.0, (0, 1, 0)),    # posterior beam
    (270.0, 0.0, (-1, 0, 0)),   # patient's right
    (90.0, 90.0, (0, 0, -1)),   # couch turned 90 deg anticlockwise seen from above: feet to +X_f
])
def test_source_position(gantry, couch, direction):
    source = source_position_xyz_mm(gantry, 0.0, couch, ISO, 1000.0)
    np.testing.assert_allclose(source, np.add(ISO, 1000.0 * np.array(direction)), atol=1e-9)


def test_rotation_is_proper():
    rotation = patient_to_beam_matrix(37.0, 12.0, 301.0)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_collimator_turns_the_field():
    """Collimator 90 turns the X_b axis onto the former Y_b (right-handed about the beam axis,
    which points to the source): a point on +Y_b at collimator 0 lies on +X_b at collimator 90."""
    point = np.array([[ISO[0], ISO[1], ISO[2] + 50.0]])  # superior = +Y_f = +Y_b at gantry 0
    u0, v0, _ = project_to_beam(point, patient_to_beam_matrix(0, 0, 0), np.array(ISO), 1000.0)
    u90, v90, _ = project_to_beam(point, patient_to_beam_matrix(0, 90, 0), np.array(ISO), 1000.0)
    np.testing.assert_allclose([u0[0], v0[0]], [0.0, 50.0], atol=1e-9)
    np.testing.assert_allclose([u90[0], v90[0]], [50.0, 0.0], atol=1e-9)


def test_divergent_projection():
    """A point 100 mm beyond the isocentre projects back by SAD / (SAD + 100) (similar triangles)"""
    point = np.array([[ISO[0] + 30.0, ISO[1] + 100.0, ISO[2]]])  # gantry 0: +y is downstream
    u, v, t = project_to_beam(point, patient_to_beam_matrix(0, 0, 0), np.array(ISO), 1000.0)
    np.testing.assert_allclose([u[0], v[0], t[0]], [30.0 * 1000 / 1100, 0.0, 1100.0], atol=1e-9)


def test_beamlets_cover_target_projection():
    grid = Grid((0.0, 0.0, 0.0), (3.0, 3.0, 3.0), (21, 21, 21))
    mask = np.zeros(grid.shape, bool)
    mask[10, 10, 5:16] = True  # a line along x through the isocentre, 30 mm long (x = 15..45)
    beams = equispaced_beams(4, (30.0, 30.0, 30.0))
    beamset = beamlets_covering(beams, mask, grid, beamlet_size_mm=5.0, margin_mm=0.0)
    # gantry 0 sees the line along u: x from 15 to 45 grown by half a voxel, 28.5 mm -> 14 to 46.5
    first = beamset.beamlets_of(0)
    assert sorted(set(beamset.v_mm[first])) == [-2.5, 2.5]
    assert beamset.u_mm[first].min() == -17.5 and beamset.u_mm[first].max() == 17.5
    # gantry 90 looks along the line: it projects near the axis
    side = beamset.beamlets_of(1)
    assert np.all(np.abs(beamset.u_mm[side]) <= 7.5)
    assert beamset.n_beamlets == sum(beamset.beamlets_of(b).size for b in range(4))
    assert isinstance(beams[0], Beam)
