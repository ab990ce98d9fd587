"""The treatment machine: a generic 6 MV linac with a 120-leaf Millennium-type MLC."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dose._data import DATA_DIR

DEFAULT_MACHINE = DATA_DIR / "machines" / "generic_6mv.toml"


@dataclass(frozen=True)
class Machine:
    """Geometry and limits of a linac and its MLC; every length in mm at the isocentre plane.

    Parameters
    ----------
    name : str
    nominal_energy_mv : float
        Nominal beam energy, MV (DICOM NominalBeamEnergy).
    sad_mm : float
        Source-axis distance, mm.
    dose_rate_mu_per_min : float
        Nominal dose rate, MU/min (DICOM DoseRateSet).
    leaf_boundaries_mm : (n_pairs + 1,) float array, mm
        Leaf-pair boundaries along IEC beam-limiting-device Y, increasing (DICOM
        LeafPositionBoundaries); pair ``i`` spans ``leaf_boundaries_mm[i]`` to
        ``leaf_boundaries_mm[i + 1]``.
    leaf_position_min_mm, leaf_position_max_mm : float, mm
        Range of a leaf tip along X (both banks).
    max_leaf_span_mm : float, mm
        Largest distance between the tips of one bank.
    min_leaf_gap_mm : float, mm
        Smallest gap between the two tips of one pair.
    interdigitation : bool
        Whether a leaf may pass the opposing bank's neighbouring leaves.
    leaf_transmission : float
        Fraction of the open fluence passing through a closed leaf.
    jaw_x_mm, jaw_y_mm : (2,) tuple of float, mm
        Outer limits of the X (ASYMX) and Y (ASYMY) jaws.
    jaw_x_overtravel_mm, jaw_y_overtravel_mm : float, mm
        How far a jaw may cross the central axis.
    """

    name: str
    nominal_energy_mv: float
    sad_mm: float
    dose_rate_mu_per_min: float
    leaf_boundaries_mm: np.ndarray = field(repr=False)
    leaf_position_min_mm: float
    leaf_position_max_mm: float
    max_leaf_span_mm: float
    min_leaf_gap_mm: float
    interdigitation: bool
    leaf_transmission: float
    jaw_x_mm: tuple[float, float]
    jaw_y_mm: tuple[float, float]
    jaw_x_overtravel_mm: float
    jaw_y_overtravel_mm: float

    def __post_init__(self) -> None:
        bounds = np.asarray(self.leaf_boundaries_mm, dtype=float)
        if bounds.ndim != 1 or bounds.size < 2 or np.any(np.diff(bounds) <= 0):
            raise ValueError(f"machine {self.name!r}: leaf boundaries must increase, got {bounds}")
        bounds.setflags(write=False)
        object.__setattr__(self, "leaf_boundaries_mm", bounds)

    @property
    def n_leaf_pairs(self) -> int:
        """Number of MLC leaf pairs."""
        return int(self.leaf_boundaries_mm.size - 1)

    @property
    def leaf_widths_mm(self) -> np.ndarray:
        """Width of each leaf pair along Y, mm at the isocentre, ``(n_pairs,)``."""
        return np.diff(self.leaf_boundaries_mm)


def load_machine(path: str | Path = DEFAULT_MACHINE) -> Machine:
    """Read a machine description (TOML, see ``data/machines/generic_6mv.toml``).

    Parameters
    ----------
    path : str or Path
        The TOML file; the generic 6 MV machine by default.

    Returns
    -------
    Machine

    Raises
    ------
    ValueError
        If a field is missing or inconsistent (the message names the file).
    """
    path = Path(path)
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    try:
        mlc, jaws = data["mlc"], data["jaws"]
        widths = np.asarray(mlc["leaf_widths_mm"], dtype=float)
        boundaries = np.concatenate([[0.0], np.cumsum(widths)]) - widths.sum() / 2
        return Machine(
            name=str(data["name"]),
            nominal_energy_mv=float(data["nominal_energy_mv"]),
            sad_mm=float(data["sad_mm"]),
            dose_rate_mu_per_min=float(data["dose_rate_mu_per_min"]),
            leaf_boundaries_mm=boundaries,
            leaf_position_min_mm=float(mlc["leaf_position_min_mm"]),
            leaf_position_max_mm=float(mlc["leaf_position_max_mm"]),
            max_leaf_span_mm=float(mlc["max_leaf_span_mm"]),
            min_leaf_gap_mm=float(mlc["min_leaf_gap_mm"]),
            interdigitation=bool(mlc["interdigitation"]),
            leaf_transmission=float(mlc["transmission"]),
            jaw_x_mm=(float(jaws["x_min_mm"]), float(jaws["x_max_mm"])),
            jaw_y_mm=(float(jaws["y_min_mm"]), float(jaws["y_max_mm"])),
            jaw_x_overtravel_mm=float(jaws["x_overtravel_mm"]),
            jaw_y_overtravel_mm=float(jaws["y_overtravel_mm"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: invalid machine description ({error})") from error
