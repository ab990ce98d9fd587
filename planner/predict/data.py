"""Network inputs from a patient, and the preprocessed OpenKBP cache the training reads.

The network sees 9 volumes on the OpenKBP 128^3 grid (``[z, y, x]``, as
:func:`planner.io.openkbp.read_openkbp_patient` orients it), see :data:`CHANNELS`:

- ``CT``: HU clipped to [-1000, 2000], divided by 1000;
- ``targets``: each target's mask times its prescription divided by 70 Gy (the OpenKBP PTVs do
  not overlap; where targets overlap the highest prescription wins);
- the 7 OpenKBP organs at risk as 0/1 masks (zero where not contoured).

The cache holds one compressed ``.npz`` per patient (about 1 MB): HU as int16, the ROIs and the
possible-dose mask as bits of one uint16 volume, the reference dose as float32, so an epoch
reads no CSV.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from planner.errors import InputError
from planner.io._atomic import write_file_atomic
from planner.io.openkbp import (
    OAR_NAMES,
    ROI_NAMES,
    TARGET_DOSE_GY,
    read_openkbp_case,
)

CHANNELS = ("CT", "targets", *OAR_NAMES)
TARGET_SCALE_GY = 70.0
CT_RANGE_HU = (-1000.0, 2000.0)
CACHE_VERSION = 1
_MASK_BIT = len(ROI_NAMES)  # bit of the possible-dose mask in the packed ROI volume
DEFAULT_CACHE = (Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                 / "planner" / "openkbp")


def encode_inputs(hu: np.ndarray, target_doses_gy: Mapping[str, tuple[np.ndarray, float]],
                  oars: Mapping[str, np.ndarray]) -> np.ndarray:
    """The network's input volumes.

    Parameters
    ----------
    hu : (nz, ny, nx) float array, HU
    target_doses_gy : mapping of target name to ``(mask, prescription in Gy)``
    oars : mapping of OpenKBP organ name (:data:`planner.io.openkbp.OAR_NAMES`) to a bool or
        fractional (0..1) mask; organs not given are zero.

    Returns
    -------
    (9, nz, ny, nx) float32 array, in the order of :data:`CHANNELS`
    """
    out = np.zeros((len(CHANNELS), *hu.shape), dtype=np.float32)
    out[0] = np.clip(hu, *CT_RANGE_HU) / 1000.0
    for mask, dose_gy in target_doses_gy.values():
        np.maximum(out[1], np.asarray(mask, np.float32) * (dose_gy / TARGET_SCALE_GY), out=out[1])
    for name, mask in oars.items():
        out[CHANNELS.index(name)] = mask
    return out


@dataclass(frozen=True)
class Case:
    """One preprocessed OpenKBP patient, on the 128^3 ``[z, y, x]`` grid (or a crop of it).

    ``hu`` float32, HU; ``dose_gy`` float32, Gy; ``possible_dose_mask`` bool; ``rois`` the ROI
    masks present; ``voxel_volume_mm3``. The network inputs are built on demand
    (:meth:`inputs`), after any crop, since building them costs more than reading the case.
    """

    name: str
    hu: np.ndarray = field(repr=False)
    dose_gy: np.ndarray = field(repr=False)
    possible_dose_mask: np.ndarray = field(repr=False)
    rois: dict[str, np.ndarray] = field(repr=False)
    voxel_volume_mm3: float

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(name for name in self.rois if name in TARGET_DOSE_GY)

    def inputs(self) -> np.ndarray:
        """The network inputs ``(9, *shape)`` float32 (:func:`encode_inputs`)."""
        return encode_inputs(self.hu, {n: (self.rois[n], TARGET_DOSE_GY[n]) for n in self.targets},
                             {n: m for n, m in self.rois.items() if n in OAR_NAMES})


def _source_stamp(folder: Path) -> list[list[str]]:
    """Names, sizes and modification times of a patient's files (the cache is redone on change)."""
    return [[p.name, str(p.stat().st_size), str(p.stat().st_mtime_ns)]
            for p in sorted(folder.iterdir()) if p.is_file()]


def _write_case(folder: Path, target: Path) -> None:
    patient, dose = read_openkbp_case(folder, needed_for="training needs the reference dose")
    bits = np.zeros(patient.grid.shape, np.uint16)
    for s in patient.structures:
        bits |= s.mask.astype(np.uint16) << np.uint16(ROI_NAMES.index(s.name))
    bits |= patient.possible_dose_mask.astype(np.uint16) << np.uint16(_MASK_BIT)
    meta = np.array(repr({"version": CACHE_VERSION, "stamp": _source_stamp(folder)}))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, hu=patient.hu.astype(np.int16), bits=bits, dose=dose,
                                spacing_mm=np.array(patient.grid.spacing_mm), meta=meta)

    write_file_atomic(target, write, overwrite=True)


def _cache_is_current(path: Path, folder: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path) as z:
            return str(z["meta"]) == repr({"version": CACHE_VERSION,
                                           "stamp": _source_stamp(folder)})
    except (OSError, ValueError, KeyError):
        return False


def patient_folders(data_dir: Path) -> list[Path]:
    """The ``pt_*`` folders of an OpenKBP split folder by patient number (or the patient itself)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such folder")
    if (data_dir / "ct.csv").is_file() or (data_dir / "ct.csv.gz").is_file():
        return [data_dir]
    folders = [p for p in data_dir.iterdir() if p.is_dir() and p.name.startswith("pt_")]

    def number(p: Path) -> tuple[int, str]:
        tail = p.name.removeprefix("pt_")
        return (int(tail), p.name) if tail.isdigit() else (1 << 30, p.name)

    if not folders:
        raise InputError(f"{data_dir}: no OpenKBP patient folders (pt_*) and no ct.csv")
    return sorted(folders, key=number)


def prepare_cache(folders: Sequence[Path], cache_dir: Path,
                  progress: Callable[[str], None] | None = None) -> list[Path]:
    """Preprocess patient folders into ``cache_dir`` once; up-to-date entries are kept.

    Entries are named ``<split folder>_<patient folder>.npz`` and redone when the source files'
    names, sizes or times change.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for folder in folders:
        path = cache_dir / f"{folder.parent.name}_{folder.name}.npz"
        if not _cache_is_current(path, folder):
            if progress is not None:
                progress(f"caching {folder}")
            _write_case(folder, path)
        paths.append(path)
    return paths


def load_case(path: Path) -> Case:
    """A cached patient: CT, reference dose and masks."""
    with np.load(path) as z:
        hu = z["hu"].astype(np.float32)
        bits = z["bits"]
        dose = z["dose"]
        spacing = z["spacing_mm"]
    rois = {name: (bits & np.uint16(1 << i)) != 0 for i, name in enumerate(ROI_NAMES)}
    return Case(
        name=Path(path).stem,
        hu=hu,
        dose_gy=dose,
        possible_dose_mask=(bits & np.uint16(1 << _MASK_BIT)) != 0,
        rois={name: mask for name, mask in rois.items() if mask.any()},
        voxel_volume_mm3=float(np.prod(spacing)),
    )


#: ROI names swapped by a left-right mirror image.
_MIRROR = {"LeftParotid": "RightParotid", "RightParotid": "LeftParotid"}
#: Input channels of the mirror image, in the order of :data:`CHANNELS`.
MIRRORED_CHANNELS = tuple(CHANNELS.index(_MIRROR.get(c, c)) for c in CHANNELS)


def augment(case: Case, rng: np.random.Generator, crop: int | None) -> Case:
    """A randomly mirrored (left-right, 50 %) and cropped copy of ``case`` for training.

    The mirror swaps the parotids; it is faithful because the OpenKBP plans' 9 beams
    (0, 40, ..., 320 deg) are themselves mirror-symmetric. ``crop`` (a multiple of 2 ** levels)
    takes a cube of that side centred on a random voxel of the possible-dose mask (clamped to the
    volume), which also shifts the anatomy in the network's view.
    """
    hu, dose, mask, rois = case.hu, case.dose_gy, case.possible_dose_mask, case.rois
    if rng.random() < 0.5:
        hu, dose, mask = hu[..., ::-1], dose[..., ::-1], mask[..., ::-1]
        rois = {_MIRROR.get(n, n): m[..., ::-1] for n, m in rois.items()}
    if crop is not None and crop < dose.shape[0]:
        # centred on a random voxel where dose is possible, so that no step is spent on air
        candidates = np.flatnonzero(mask)
        centre = (np.unravel_index(int(rng.choice(candidates)), mask.shape) if candidates.size
                  else tuple(n // 2 for n in mask.shape))
        start = [min(max(int(c) - crop // 2, 0), n - crop) for c, n in zip(centre, dose.shape)]
        window = tuple(slice(s, s + crop) for s in start)
        hu, dose, mask = hu[window], dose[window], mask[window]
        rois = {n: m[window] for n, m in rois.items()}
    return Case(case.name, np.ascontiguousarray(hu), np.ascontiguousarray(dose),
                np.ascontiguousarray(mask), {n: np.ascontiguousarray(m) for n, m in rois.items()},
                case.voxel_volume_mm3)
