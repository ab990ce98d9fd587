"""Read (and write) patients in the OpenKBP grand-challenge format.

An OpenKBP patient is a folder of sparse CSV files on a fixed 128^3 grid (Babier et al., "OpenKBP:
The open-access knowledge-based planning grand challenge and dataset", Med Phys 48:5549, 2021):
each file has the header ``,data``, then one ``index,value`` row per listed voxel, the index flat
in C order over the 128^3 array; masks leave the value empty. Files may be gzip-compressed
(``.csv.gz``).

Orientation, worked out from the data (train-pats pt_1 and pt_10, see
``tests/planner/io/test_openkbp.py``): the third OpenKBP axis is the slice axis (its spacing is the
third value of ``voxel_dimensions.csv``, and the spinal cord runs along it) and its index grows
towards the feet (the brainstem has lower indices than the spinal cord); the first axis grows
towards posterior (the spinal cord has higher indices than the mandible) and the second towards
patient left (LeftParotid has higher indices than RightParotid). So OpenKBP ``a[r, c, s]`` is our
``[z, y, x]`` array at ``[127 - s, r, c]``: +x left, +y posterior, +z superior (DICOM LPS,
head-first supine), and a gantry-0 beam enters anteriorly (low row index).

OpenKBP gives no patient coordinates: the grid is centred on the origin (the centre of the middle
voxel is at (0, 0, 0) mm).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

from dose.grid import Grid
from planner.density import hu_to_density
from planner.errors import InputError
from planner.io._atomic import write_file_atomic
from planner.patient import Patient, Prescription, Structure

OPENKBP_SHAPE = (128, 128, 128)
OAR_NAMES = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx",
             "Mandible")
#: Prescriptions of the OpenKBP plans (README of the data set), Gy in 35 fractions.
TARGET_DOSE_GY = {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}
FRACTIONS = 35
ROI_NAMES = OAR_NAMES + tuple(TARGET_DOSE_GY)
#: OpenKBP CT grey values are HU + 1024 on 0..4095; unlisted voxels are 0 (air).
CT_OFFSET = 1024.0
CT_MAX = 4095.0
_N_VOXELS = int(np.prod(OPENKBP_SHAPE))


def _find(folder: Path, stem: str) -> Path | None:
    """``folder/stem.csv`` or ``folder/stem.csv.gz``, whichever exists (plain first)."""
    for suffix in (".csv", ".csv.gz"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _read_text(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: cannot read ({error})") from error


def _read_sparse(path: Path, *, values: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat OpenKBP indices (int64) and, if ``values``, their values (float64) from one CSV."""
    text = _read_text(path)
    header, _, body = text.partition(b"\n")
    if header.strip() != b",data":
        raise InputError(f"{path}: malformed CSV (header {header[:40]!r}, expected ',data')")
    if not body.strip():
        return np.zeros(0, np.int64), (np.zeros(0) if values else None)
    try:
        # np.loadtxt parses in C: about 30 ms for the 80,000 rows of a CT (measured).
        table = np.loadtxt(io.BytesIO(body), delimiter=",", usecols=(0, 1) if values else (0,),
                           dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise InputError(f"{path}: malformed CSV ({error})") from error
    index_float = table[:, 0]
    index = index_float.astype(np.int64)
    if np.any(index != index_float):
        raise InputError(f"{path}: malformed CSV (non-integer voxel index)")
    bad = (index < 0) | (index >= _N_VOXELS)
    if np.any(bad):
        raise InputError(f"{path}: voxel index {int(index[bad][0])} out of range "
                         f"0..{_N_VOXELS - 1} of the {OPENKBP_SHAPE} grid")
    return index, (table[:, 1] if values else None)


def _openkbp_to_planner_index(index: np.ndarray) -> np.ndarray:
    """Flat C-order OpenKBP indices ``[r, c, s]`` to flat indices of our ``[z, y, x]`` array."""
    n = OPENKBP_SHAPE[0]
    row, col, sl = np.unravel_index(index, OPENKBP_SHAPE)
    return ((n - 1 - sl) * n + row) * n + col


def openkbp_to_planner(array: np.ndarray) -> np.ndarray:
    """An OpenKBP-ordered ``(128, 128, 128)`` array as our ``[z, y, x]`` array (a copy)."""
    return np.ascontiguousarray(np.asarray(array).transpose(2, 0, 1)[::-1])


def planner_to_openkbp(array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`openkbp_to_planner` (a copy)."""
    return np.ascontiguousarray(np.asarray(array)[::-1].transpose(1, 2, 0))


def _mask(path: Path) -> np.ndarray:
    index, _ = _read_sparse(path, values=False)
    mask = np.zeros(_N_VOXELS, dtype=bool)
    mask[_openkbp_to_planner_index(index)] = True
    return mask.reshape(OPENKBP_SHAPE)


def _values(path: Path) -> np.ndarray:
    index, values = _read_sparse(path, values=True)
    out = np.zeros(_N_VOXELS, dtype=np.float32)
    out[_openkbp_to_planner_index(index)] = values
    return out.reshape(OPENKBP_SHAPE)


def read_openkbp_grid(folder: Path) -> Grid:
    """The grid of an OpenKBP patient from ``voxel_dimensions.csv``, centred on (0, 0, 0) mm.

    Raises
    ------
    InputError
        When ``voxel_dimensions.csv`` is missing or does not hold 3 positive numbers.
    """
    folder = Path(folder)
    path = _find(folder, "voxel_dimensions")
    if path is None:
        raise InputError(f"{folder / 'voxel_dimensions.csv'}: missing")
    try:
        dims = np.loadtxt(io.BytesIO(_read_text(path)), dtype=np.float64, ndmin=1)
    except ValueError as error:
        raise InputError(f"{path}: malformed CSV ({error})") from error
    if dims.shape != (3,) or not np.all(np.isfinite(dims)) or np.any(dims <= 0):
        raise InputError(f"{path}: expected 3 positive voxel sizes in mm, got {dims.tolist()}")
    # OpenKBP lists (row, column, slice) sizes; ours is (dz, dy, dx).
    spacing = (dims[2], dims[0], dims[1])
    origin = tuple(-(n - 1) / 2 * s for n, s in zip(OPENKBP_SHAPE, spacing))
    return Grid(origin, spacing, OPENKBP_SHAPE)


def read_openkbp_patient(folder: Path) -> Patient:
    """Read one OpenKBP patient folder (``pt_*``) into a :class:`Patient`.

    Parameters
    ----------
    folder : Path
        Holds ``ct.csv[.gz]`` and ``voxel_dimensions.csv[.gz]`` (required), the ROI masks
        present (:data:`ROI_NAMES`), ``possible_dose_mask.csv[.gz]`` (optional). Other files
        (``dose.csv``: see :func:`read_openkbp_dose`) are not read.

    Returns
    -------
    Patient
        On a 128^3 grid centred on (0, 0, 0) mm (module docstring: orientation). HU are the
        OpenKBP values clipped to [0, 4095] minus 1024; targets PTV70/63/56 with prescriptions of
        70/63/56 Gy in 35 fractions for those present (an ROI file listing no voxel counts as
        absent); ``possible_dose_mask`` None if absent.

    Raises
    ------
    InputError
        Missing ``ct`` or ``voxel_dimensions``; a malformed CSV; a voxel index outside the grid.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    grid = read_openkbp_grid(folder)
    ct_path = _find(folder, "ct")
    if ct_path is None:
        raise InputError(f"{folder / 'ct.csv'}: missing")
    hu = np.clip(_values(ct_path), 0.0, CT_MAX) - np.float32(CT_OFFSET)
    structures = []
    for name in ROI_NAMES:
        path = _find(folder, name)
        mask = None if path is None else _mask(path)
        if mask is not None and mask.any():  # a file listing no voxel: not contoured
            kind = "target" if name in TARGET_DOSE_GY else "organ"
            structures.append(Structure(name, kind, mask))
    prescriptions = tuple(Prescription(s.name, TARGET_DOSE_GY[s.name], FRACTIONS)
                          for s in structures if s.kind == "target")
    mask_path = _find(folder, "possible_dose_mask")
    return Patient(
        name=folder.name,
        grid=grid,
        hu=hu,
        density=hu_to_density(hu),
        structures=tuple(structures),
        prescriptions=prescriptions,
        possible_dose_mask=None if mask_path is None else _mask(mask_path),
        source=str(folder),
    )


def read_openkbp_dose(path: Path) -> np.ndarray | None:
    """The dose of an OpenKBP patient folder (its ``dose.csv``), or of one dose CSV file.

    Parameters
    ----------
    path : Path
        A patient folder (reads ``dose.csv[.gz]``; None if there is none), or a dose CSV file in
        the same sparse format (e.g. a challenge submission ``pt_241.csv``).

    Returns
    -------
    (128, 128, 128) float32 array, Gy, or None
        On the ``[z, y, x]`` grid of :func:`read_openkbp_patient`; unlisted voxels are 0.
    """
    path = Path(path)
    if path.is_dir():
        found = _find(path, "dose")
        if found is None:
            return None
        path = found
    elif not path.is_file():
        raise InputError(f"{path}: missing")
    return _values(path)


def read_openkbp_case(folder: Path, *, needed_for: str) -> tuple[Patient, np.ndarray]:
    """An OpenKBP patient with its reference dose and possible-dose mask, both required.

    Parameters
    ----------
    folder : Path
        A patient folder (see :func:`read_openkbp_patient`).
    needed_for : str
        Says in the error for a missing ``dose.csv`` why it is needed
        (e.g. ``"training needs the reference dose"``).

    Returns
    -------
    patient : Patient
        ``possible_dose_mask`` set.
    dose_gy : (128, 128, 128) float32 array, Gy
        See :func:`read_openkbp_dose`.

    Raises
    ------
    InputError
        ``"<folder>/dose.csv: missing (<needed_for>)"``,
        ``"<folder>/possible_dose_mask.csv: missing"``, or see :func:`read_openkbp_patient`.
    """
    folder = Path(folder)
    patient = read_openkbp_patient(folder)
    dose = read_openkbp_dose(folder)
    if dose is None:
        raise InputError(f"{folder / 'dose.csv'}: missing ({needed_for})")
    if patient.possible_dose_mask is None:
        raise InputError(f"{folder / 'possible_dose_mask.csv'}: missing")
    return patient, dose


def write_openkbp_dose(path: Path, dose_gy: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a ``[z, y, x]`` 128^3 dose (Gy) as a sparse OpenKBP CSV (gzip if ``.gz``).

    Only non-zero voxels are listed, as in the challenge's files; written atomically.
    """
    dose_gy = np.asarray(dose_gy)
    if dose_gy.shape != OPENKBP_SHAPE:
        raise ValueError(f"dose shape {dose_gy.shape} is not the OpenKBP grid {OPENKBP_SHAPE}")
    flat = planner_to_openkbp(dose_gy).ravel()
    index = np.flatnonzero(flat)
    buffer = io.StringIO()
    buffer.write(",data\n")
    np.savetxt(buffer, np.column_stack([index, flat[index]]), fmt=["%d", "%.6g"], delimiter=",")
    data = buffer.getvalue().encode()

    def write(tmp: Path) -> None:
        tmp.write_bytes(gzip.compress(data) if Path(path).name.endswith(".gz") else data)

    return write_file_atomic(Path(path), write, overwrite=overwrite)
