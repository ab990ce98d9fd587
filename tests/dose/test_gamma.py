"""Gamma index against analytic cases.

A dose ramp ``D(x) = c + g x`` shifted by ``a`` along one axis has, away from the grid's edges,
the gamma ``|a| / sqrt(dta^2 + (delta / g)^2)`` (the minimum over offsets ``s`` along the ramp of
``s^2 / dta^2 + g^2 (s - a)^2 / delta^2``, at ``s = a g^2 dta^2 / (delta^2 + g^2 dta^2)``;
offsets across the ramp only add distance). Trilinear interpolation of a ramp is exact, so the
only approximation is the search lattice, avoided here by choosing ``delta / g = dta`` which puts
the minimum at ``s = a / 2``, a lattice point for the shifts used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dose.gamma import gamma_index, gamma_pass_rate, gamma_statistics

NORM_GY = 100.0  # 3 % of it is a delta of 3 Gy
DTA_MM = 2.0
GRADIENT_GY_PER_MM = 1.5  # delta / g = 2 mm = dta: the minimum lies at half the shift


def to_numpy(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def ramp(xp, axis, shift_mm, spacing_mm):
    """Reference ramp along ``axis`` and the same ramp moved by ``shift_mm`` (values 10..100 Gy
    over 60 mm), and a mask of the voxels at least 4 mm from the ramp's ends."""
    shape = [6, 6, 6]
    shape[axis] = int(round(60.0 / spacing_mm[axis])) + 1
    position = np.arange(shape[axis]) * spacing_mm[axis]
    view = [1, 1, 1]
    view[axis] = -1
    x = np.broadcast_to(position.reshape(view), shape)
    reference = 10.0 + GRADIENT_GY_PER_MM * x
    evaluated = 10.0 + GRADIENT_GY_PER_MM * (x - shift_mm)
    interior = (x >= 4.0) & (x <= 56.0)
    return xp.asarray(reference), xp.asarray(evaluated), interior


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize(("shift_mm", "step_mm"), [(1.0, 0.5), (2.5, 0.25), (3.0, 0.5),
                                                    (-2.0, 0.5)])
def test_shifted_ramp_has_the_analytic_gamma(xp, axis, shift_mm, step_mm):
    """Each axis in turn, anisotropic voxels; 3 mm shifts fail (gamma 1.06), 2.5 mm pass (0.88)."""
    spacing = (2.5, 3.0, 2.0)
    reference, evaluated, interior = ramp(xp, axis, shift_mm, spacing)
    gamma = to_numpy(gamma_index(reference, evaluated, spacing, dta_mm=DTA_MM,
                                 normalisation_gy=NORM_GY, step_mm=step_mm))
    delta = 0.03 * NORM_GY
    expected = abs(shift_mm) / math.hypot(DTA_MM, delta / GRADIENT_GY_PER_MM)
    # float32 doses of up to 100 Gy: 1e-5 relative.
    np.testing.assert_allclose(gamma[interior], expected, rtol=1e-4)
    passed = (gamma[interior] <= 1.0).all()
    assert passed == (expected <= 1.0)


def test_uniform_dose_difference(xp):
    """Flat 50 Gy against 51 Gy: gamma = 1 Gy / 1.5 Gy everywhere, edges included (no
    distance helps on a flat dose)."""
    gamma = to_numpy(gamma_index(xp.full((4, 5, 6), 50.0), xp.full((4, 5, 6), 51.0),
                                 (2.0, 2.0, 2.0)))
    np.testing.assert_allclose(gamma, 1.0 / 1.5, rtol=1e-5)


def test_threshold_and_pass_rate(xp):
    """Voxels below 10 % of the maximum get no gamma; the pass rate counts the others only.

    Reference: 5 Gy in columns 0-2, 100 Gy in columns 3-9 (3 x 10 x 7 = 210 voxels above the
    threshold), 8 mm voxels. Evaluated: 5 Gy more in the low-dose columns (not counted) and 6 Gy
    more in columns 6-9. Columns 7-9 have gamma 6/3 = 2 (their neighbours carry the same error);
    column 6 fails too (its best point lies 1.6 mm towards column 5: gamma^2 = 0.8^2 + 1.6^2);
    columns 3-5 pass: 90 of 210.
    """
    reference = np.full((3, 10, 10), 100.0)
    reference[:, :, :3] = 5.0
    evaluated = reference.copy()
    evaluated[:, :, :3] += 5.0
    evaluated[:, :, 6:] += 6.0
    spacing = (8.0, 8.0, 8.0)
    gamma = to_numpy(gamma_index(xp.asarray(reference), xp.asarray(evaluated), spacing))
    assert np.isnan(gamma[:, :, :3]).all()
    np.testing.assert_allclose(gamma[:, :, 7:], 2.0, rtol=1e-5)
    # The exact minimum (1.6 mm) is off the 0.5 mm lattice; 1.5 mm gives 1.7897 against 1.7889.
    np.testing.assert_allclose(gamma[:, :, 6], math.hypot(0.8, 1.6), rtol=1e-3)
    np.testing.assert_allclose(gamma[:, :, 3:6], 0.0, atol=1e-6)
    rate, count = gamma_statistics(gamma)
    assert count == 210 and rate == pytest.approx(90 / 210)
    assert gamma_pass_rate(xp.asarray(reference), xp.asarray(evaluated), spacing) == rate


def test_identical_doses_pass_and_empty_is_nan():
    dose = np.random.default_rng(1).random((5, 6, 7)) * 60.0
    assert gamma_pass_rate(dose, dose, (3.0, 3.0, 3.0)) == 1.0
    assert np.nanmax(gamma_index(dose, dose, (3.0, 3.0, 3.0))) == 0.0
    assert math.isnan(gamma_pass_rate(np.zeros((3, 3, 3)), np.ones((3, 3, 3)), (1.0, 1.0, 1.0)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="one shape"):
        gamma_index(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        gamma_index(np.ones((3, 3, 3)), np.ones((3, 3, 3)), (1.0, 1.0, 1.0), dta_mm=0.0)
