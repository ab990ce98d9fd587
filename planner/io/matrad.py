"""Read matRad / CORT phantoms saved as MATLAB files (``ct`` and ``cst`` variables).

matRad keeps a CT as ``ct.cubeHU``, a MATLAB array indexed ``(row, column, slice)`` = ``(y, x, z)``,
with voxel sizes in ``ct.resolution`` and voxel-centre coordinates in ``ct.x``, ``ct.y``, ``ct.z``
(mm). matRad's world coordinates are DICOM patient coordinates, LPS (matRad documentation, "The
matRad Coordinate System": x towards the patient's left, y posterior, z superior); the vectors
start at the DICOM ImagePositionPatient (in ``TG119.mat`` ``ct.x(1) = ct.y(1) = -250`` mm, its
``ct.dicomInfo.ImagePositionPatient``), so rows grow towards posterior as in an axial DICOM image
(checked on ``TG119.mat``: the couch under the supine phantom lies at larger y than its BODY).
Where a file has no coordinate vectors, matRad (``matRad_getWorldAxes``) starts them at
``ct.dicomInfo.ImagePositionPatient`` when present, else at ``-(n / 2) * resolution`` on each
axis; this reader does the same.

``cst`` has one row per structure: index, name, type (``TARGET`` or ``OAR``), voxel list (MATLAB
1-based linear indices into the cube, column-major), properties, objectives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from dose.grid import Grid
from planner.density import hu_to_density
from planner.errors import InputError
from planner.patient import Patient, Prescription, Structure

#: Structure names (upper case) that mark the patient outline.
EXTERNAL_NAMES = ("BODY", "EXTERNAL")
#: Number of fractions when the file holds no ``pln.numOfFractions``: TG-119 prescribes 50 Gy in
#: 2 Gy fractions (Ezzell et al., Med Phys 36:5359, 2009).
DEFAULT_FRACTIONS = 25
#: Objectives whose dose parameter is the dose a target should receive (matRad
#: ``DoseObjectives`` class names, and the ``type`` strings of matRad < 2.10 files).
_PRESCRIBING_OBJECTIVES = ("matRad_SquaredDeviation", "matRad_SquaredUnderdosing",
                           "square deviation", "square underdosing")
# Coordinate vectors must match the resolution to this (mm): int16 vectors such as TG119.mat's
# are exact, resampled float vectors carry rounding of order 1e-6 mm.
_SPACING_TOLERANCE_MM = 1e-3


def read_matrad_mat(path: Path, *, fractions: int | None = None) -> Patient:
    """Read a matRad/CORT phantom (such as ``TG119.mat``) into a Patient.

    Parameters
    ----------
    path : Path
        MATLAB v5/v7 ``.mat`` file with the matRad variables ``ct`` and ``cst`` (and optionally
        ``pln``).
    fractions : int, optional
        Number of fractions of the prescriptions. Default: ``pln.numOfFractions`` when the file
        has a ``pln``, else 25 (TG-119's 2 Gy fractions).

    Returns
    -------
    Patient
        HU from ``ct.cubeHU`` (float32, first CT scenario where there are several), density by
        ``planner.density.hu_to_density``, the grid from ``ct.x/y/z`` (arrays ``[z, y, x]``).
        Structures in ``cst`` order: type ``TARGET`` is a target, the names BODY and EXTERNAL
        (any case) are the external outline, everything else an organ. One prescription per
        target that has a squared-deviation or squared-underdosing objective: its dose
        parameter is the total prescribed dose (matRad objectives are in total dose and are
        divided by the number of fractions at optimisation). For ``TG119.mat`` this gives the
        TG-119 prescription, 50 Gy to OuterTarget in 25 fractions.

    Raises
    ------
    InputError
        Unreadable file, no ``ct`` or ``cst``, no ``ct.cubeHU``, a cube, coordinate vector or
        voxel list that does not fit the cube; the message starts with the path.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        mat = scipy.io.loadmat(path, simplify_cells=True)
    except NotImplementedError as error:  # MATLAB v7.3 files are HDF5
        raise InputError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with "
                         f"-v7") from error
    except (ValueError, TypeError, OSError) as error:
        raise InputError(f"{path}: not a readable MATLAB file ({error})") from error
    for variable in ("ct", "cst"):
        if variable not in mat:
            raise InputError(f"{path}: not a matRad phantom, no variable {variable!r} "
                             f"(found {sorted(k for k in mat if not k.startswith('__'))})")
    ct = mat["ct"]
    if not isinstance(ct, dict):
        raise InputError(f"{path}: 'ct' is not a struct")
    if "cubeHU" not in ct:
        raise InputError(f"{path}: ct has no cubeHU (Hounsfield units); fields: {sorted(ct)}")
    cube = _first_scenario(ct["cubeHU"])
    if cube.ndim == 2:  # MATLAB drops the trailing singleton dimension of a one-slice cube
        cube = cube[:, :, None]
    if cube.ndim != 3 or cube.size == 0:
        raise InputError(f"{path}: ct.cubeHU must be a 3D array, got shape {cube.shape}")
    ny, nx, nz = cube.shape
    axes = _world_axes(path, ct, (ny, nx, nz))
    # [z, y, x] with each axis increasing; flips[i] says whether axis i (z, y, x) was reversed.
    flips = tuple(bool(a.size > 1 and a[1] < a[0]) for a in axes)
    hu = _to_zyx(np.asarray(cube, dtype=np.float32), flips)
    increasing = [a[::-1] if f else a for a, f in zip(axes, flips)]
    spacing = _spacing(path, ct, increasing)
    grid = Grid(tuple(float(a[0]) for a in increasing), spacing, hu.shape)

    structures, prescribed = _structures(path, mat["cst"], (ny, nx, nz), flips)
    n_fractions = fractions if fractions is not None else _fractions(mat)
    try:
        prescriptions = tuple(Prescription(name, dose, n_fractions) for name, dose in prescribed)
        return Patient(name=path.stem, grid=grid, hu=hu, density=hu_to_density(hu),
                       structures=tuple(structures), prescriptions=prescriptions,
                       source=str(path))
    except ValueError as error:  # duplicate names, a zero dose: the file's problem
        raise InputError(f"{path}: {error}") from error


def _first_scenario(value: Any) -> np.ndarray:
    """The first entry of a cell array of CT scenarios, or the array itself."""
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray)
                                            and value.dtype == object):
        return np.asarray(value[0], dtype=float) if len(value) else np.zeros(0)
    return np.asarray(value, dtype=float)


def _to_zyx(cube_yxz: np.ndarray, flips: tuple[bool, bool, bool]) -> np.ndarray:
    """MATLAB ``(y, x, z)`` cube to a C-contiguous ``[z, y, x]`` array, axes flipped as asked."""
    zyx = cube_yxz.transpose(2, 0, 1)
    flip_axes = tuple(i for i, f in enumerate(flips) if f)
    if flip_axes:
        zyx = np.flip(zyx, axis=flip_axes)
    return np.ascontiguousarray(zyx)


def _world_axes(path: Path, ct: dict, shape_yxz: tuple[int, int, int]) -> list[np.ndarray]:
    """Voxel-centre coordinates ``[z, y, x]`` (mm, float64) as matRad defines them."""
    ny, nx, nz = shape_yxz
    counts = {"x": nx, "y": ny, "z": nz}
    if all(np.size(ct.get(axis, [])) > 0 for axis in "xyz"):
        axes = {axis: np.atleast_1d(np.asarray(ct[axis], dtype=float)).ravel() for axis in "xyz"}
    else:
        resolution = _resolution(path, ct)
        position = (ct.get("dicomInfo") or {}).get("ImagePositionPatient")
        if position is not None and np.size(position) == 3:
            first = dict(zip("xyz", np.asarray(position, dtype=float).ravel()))
        else:
            first = {axis: -counts[axis] / 2 * resolution[axis] for axis in "xyz"}
        axes = {axis: first[axis] + resolution[axis] * np.arange(counts[axis]) for axis in "xyz"}
    for axis in "xyz":
        if axes[axis].size != counts[axis]:
            raise InputError(f"{path}: ct.{axis} has {axes[axis].size} values but the cube has "
                             f"{counts[axis]} voxels along {axis} (cube shape {shape_yxz}, "
                             f"MATLAB order y, x, z)")
    return [axes["z"], axes["y"], axes["x"]]


def _resolution(path: Path, ct: dict) -> dict[str, float]:
    resolution = ct.get("resolution")
    if not isinstance(resolution, dict) or not all(axis in resolution for axis in "xyz"):
        raise InputError(f"{path}: ct.resolution must be a struct with fields x, y, z")
    return {axis: float(resolution[axis]) for axis in "xyz"}


def _spacing(path: Path, ct: dict, axes_zyx: list[np.ndarray]) -> tuple[float, float, float]:
    """Uniform spacing ``(dz, dy, dx)`` of the coordinate vectors, checked against ct.resolution."""
    resolution = _resolution(path, ct) if "resolution" in ct else None
    spacing = []
    for axis, values in zip("zyx", axes_zyx):
        if values.size > 1:
            steps = np.diff(values)
            step = float(steps.mean())
            if step <= 0 or np.ptp(steps) > _SPACING_TOLERANCE_MM:
                raise InputError(f"{path}: ct.{axis} is not evenly spaced (steps "
                                 f"{steps.min():g} to {steps.max():g} mm)")
            if resolution and abs(step - resolution[axis]) > _SPACING_TOLERANCE_MM:
                raise InputError(f"{path}: ct.{axis} steps {step:g} mm but ct.resolution.{axis} "
                                 f"is {resolution[axis]:g} mm")
        elif resolution:
            step = resolution[axis]
        else:
            raise InputError(f"{path}: one voxel along {axis} and no ct.resolution")
        spacing.append(step)
    return tuple(spacing)  # type: ignore[return-value]


def _cst_rows(path: Path, cst: Any) -> list[Any]:
    rows = np.asarray(cst, dtype=object)
    if rows.ndim == 1 and rows.size >= 4 and isinstance(rows[1], str):  # one structure
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[1] < 4:
        raise InputError(f"{path}: cst must have one row per structure with at least 4 columns "
                         f"(index, name, type, voxels), got shape {rows.shape}")
    return list(rows)


def _structures(path: Path, cst: Any, shape_yxz: tuple[int, int, int],
                flips: tuple[bool, bool, bool]) -> tuple[list[Structure], list[tuple[str, float]]]:
    """Structures and ``(target name, total dose Gy)`` pairs from the cst rows."""
    n_voxels = int(np.prod(shape_yxz))
    structures, prescribed = [], []
    for row in _cst_rows(path, cst):
        name, kind_code = str(row[1]), str(row[2]).upper()
        indices = np.asarray(_first_scenario(row[3]), dtype=np.float64).ravel()
        if indices.size and (indices.min() < 1 or indices.max() > n_voxels
                             or np.any(indices != np.round(indices))):
            raise InputError(f"{path}: cst structure {name!r}: voxel indices must be integers in "
                             f"1..{n_voxels} (cube shape {shape_yxz}), got "
                             f"{indices.min():g}..{indices.max():g}")
        flat = np.zeros(n_voxels, dtype=bool)
        flat[indices.astype(np.int64) - 1] = True
        mask = _to_zyx(flat.reshape(shape_yxz, order="F"), flips)
        if kind_code == "TARGET":
            kind = "target"
        elif name.upper() in EXTERNAL_NAMES:
            kind = "external"
        else:
            kind = "organ"
        structures.append(Structure(name, kind, mask))
        if kind == "target" and len(row) > 5:
            dose = _prescribed_dose(row[5])
            if dose is not None:
                prescribed.append((name, dose))
    return structures, prescribed


def _prescribed_dose(objectives: Any) -> float | None:
    """Highest reference dose (Gy) of a target's prescribing objectives; None if it has none."""
    if isinstance(objectives, (dict, scipy.io.matlab.mat_struct)):
        objectives = [objectives]
    doses = []
    for objective in np.ravel(np.asarray(objectives, dtype=object)):
        if isinstance(objective, scipy.io.matlab.mat_struct):
            # matRad DoseObjectives are MATLAB objects: scipy leaves them as mat_struct
            objective = {field: getattr(objective, field) for field in objective._fieldnames}
        if not isinstance(objective, dict):
            continue
        kind = str(objective.get("className", objective.get("type", "")))
        if not any(kind.endswith(name) for name in _PRESCRIBING_OBJECTIVES):
            continue
        value = objective.get("parameters", objective.get("dose"))
        values = np.ravel(np.asarray(value, dtype=object))
        if values.size and np.isscalar(values[0]):
            doses.append(float(values[0]))
    return max(doses) if doses else None


def _fractions(mat: dict) -> int:
    pln = mat.get("pln")
    if isinstance(pln, dict) and np.size(pln.get("numOfFractions", [])) == 1:
        return int(pln["numOfFractions"])
    return DEFAULT_FRACTIONS
