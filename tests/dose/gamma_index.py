"""Gamma index (Low et al., Med Phys 25:656, 1998) for tests: global dose difference, distance to
agreement searched on sub-voxel offsets with trilinear interpolation of the evaluated dose."""

import numpy as np
from scipy import ndimage


def gamma_pass_rate(reference: np.ndarray, evaluated: np.ndarray, spacing_mm: tuple, *,
                    dose_percent: float = 3.0, dta_mm: float = 2.0, threshold: float = 0.10,
                    step_mm: float = 0.5) -> float:
    """Share of reference voxels above ``threshold`` x max with gamma <= 1."""
    delta = dose_percent / 100 * reference.max()
    steps = np.arange(-dta_mm, dta_mm + step_mm / 2, step_mm)
    best = np.full(reference.shape, np.inf)
    index = np.indices(reference.shape).astype(float)
    for dz in steps:
        for dy in steps:
            for dx in steps:
                distance2 = dz * dz + dy * dy + dx * dx
                if distance2 > dta_mm**2 + 1e-9:
                    continue
                shift = np.array([dz, dy, dx]) / np.asarray(spacing_mm)
                coords = index + shift[:, None, None, None]
                moved = ndimage.map_coordinates(evaluated, coords, order=1, mode="nearest")
                gamma2 = distance2 / dta_mm**2 + ((moved - reference) / delta) ** 2
                np.minimum(best, gamma2, out=best)
    mask = reference > threshold * reference.max()
    return float(np.mean(best[mask] <= 1.0))
