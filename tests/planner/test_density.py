"""HU to mass density against the Gammex 467 calibration points listed in DESIGN.md."""

import numpy as np

from planner.density import AIR_DENSITY_G_CM3, hu_to_density

# DESIGN.md "Physics facts": Gammex 467 calibration (HU, g/cm^3), typed here independently of data/.
GAMMEX_467 = [(-713, 0.29), (-537, 0.45), (-96, 0.94), (0, 1.00), (66, 1.09), (208, 1.15),
              (430, 1.34), (775, 1.56), (1174, 1.82)]


def test_calibration_points_reproduced():
    hu, rho = np.array(GAMMEX_467).T
    np.testing.assert_allclose(hu_to_density(hu), rho, rtol=0, atol=1e-6)


def test_linear_between_points_and_monotone():
    # midway between water (0, 1.00) and 66 HU (1.09)
    np.testing.assert_allclose(hu_to_density(np.array([33.0])), [1.045], atol=1e-6)
    hu = np.linspace(-1024, 3000, 500)
    assert np.all(np.diff(hu_to_density(hu)) >= 0)


def test_air_floor_and_extrapolation():
    rho = hu_to_density(np.array([-1024.0, -970.0, 1574.0]))
    assert rho[0] == np.float32(AIR_DENSITY_G_CM3) and rho[1] == np.float32(AIR_DENSITY_G_CM3)
    slope = (1.82 - 1.56) / (1174 - 775)
    np.testing.assert_allclose(rho[2], 1.82 + slope * 400, rtol=1e-5)
