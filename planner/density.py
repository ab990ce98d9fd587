"""CT number to mass density, from the calibration table in ``data/hu_density.csv``."""

from __future__ import annotations

from functools import lru_cache
import numpy as np

from dose._data import DATA_DIR

AIR_DENSITY_G_CM3 = 0.0012  # dry air at 20 C, 101.3 kPa (NIST)


@lru_cache(maxsize=1)
def hu_density_table() -> tuple[np.ndarray, np.ndarray]:
    """The calibration points ``(hu, density_g_cm3)``, sorted by HU."""
    lines = (DATA_DIR / "hu_density.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines if line and not line.startswith(("#", "hu,"))]
    table = np.array(rows, dtype=float)
    return table[:, 0], table[:, 1]


def hu_to_density(hu: np.ndarray) -> np.ndarray:
    """Mass density (g/cm^3, float32) of CT numbers ``hu`` (any shape, HU).

    Piecewise-linear through the Gammex 467 points, extrapolated above the last point with the
    last slope, floored at the density of air.
    """
    points_hu, points_rho = hu_density_table()
    hu = np.asarray(hu, dtype=np.float32)
    density = np.interp(hu, points_hu, points_rho)
    slope = (points_rho[-1] - points_rho[-2]) / (points_hu[-1] - points_hu[-2])
    above = hu > points_hu[-1]
    density[above] = points_rho[-1] + slope * (hu[above] - points_hu[-1])
    return np.maximum(density, AIR_DENSITY_G_CM3).astype(np.float32)
