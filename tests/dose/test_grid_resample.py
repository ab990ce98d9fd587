"""dose.grid.resample: trilinear resampling between axis-aligned grids."""

import numpy as np
import pytest

from dose.grid import Grid, resample


def _linear(grid: Grid) -> np.ndarray:
    z, y, x = np.meshgrid(*grid.axes_mm(), indexing="ij")
    return (0.5 * z - 0.25 * y + 0.125 * x + 3.0).astype(np.float32)


def test_resample_is_exact_for_linear_functions():
    """Trilinear interpolation reproduces a linear function exactly inside the source's voxel
    centres; beyond half a voxel outside the source it gives the fill value."""
    source = Grid((-20.0, -30.0, -40.0), (2.5, 3.0, 4.0), (17, 21, 21))
    target = Grid((-15.3, -24.1, -33.7), (1.7, 2.2, 3.1), (16, 20, 20))
    out = resample(_linear(source), source, target, fill=-7.0)
    np.testing.assert_allclose(out, _linear(target), rtol=0, atol=1e-4)  # float32 round-off
    edge = Grid((-22.0, -30.0, -40.0), (1.0, 3.0, 4.0), (3, 21, 21))  # z -22, -21, -20 mm
    out = resample(_linear(source), source, edge, fill=-7.0)
    assert np.all(out[0] == -7.0)  # -22 mm lies beyond -21.25 mm, the source's outer edge
    # -21 mm is within the first voxel: it takes that voxel's value (the value at -20 mm)
    np.testing.assert_allclose(out[1], _linear(edge)[2], atol=1e-4)
    np.testing.assert_allclose(out[2], _linear(edge)[2], atol=1e-4)
    same = resample(_linear(source), source, source)
    np.testing.assert_array_equal(same, _linear(source))


def test_resample_on_cupy_equals_numpy():
    """The same interpolation on a cupy array, staying on the device."""
    cupy = pytest.importorskip("cupy")
    source = Grid((-20.0, -30.0, -40.0), (2.5, 3.0, 4.0), (17, 21, 21))
    target = Grid((-15.3, -24.1, -33.7), (1.7, 2.2, 3.1), (16, 20, 20))
    out = resample(cupy.asarray(_linear(source)), source, target, fill=-7.0)
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(out), resample(_linear(source), source, target,
                                                           fill=-7.0), rtol=0, atol=1e-5)
