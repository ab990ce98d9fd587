"""Physics: 6 MV photon beam model, geometry, ray tracing, beamlet and segment dose (numpy or cupy)."""

from dose.grid import Grid

__all__ = ["Grid"]
