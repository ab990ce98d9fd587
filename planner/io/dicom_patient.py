"""A patient as DICOM: one CT series and one RT Structure Set in a folder.

:func:`read_dicom_patient` reads the usual export of a treatment planning system (or a CT
folder with a structure set kept elsewhere);
:func:`write_dicom_patient` writes a patient as such an export, so RT Plan and RT Dose can
refer to it. CT rules are in :mod:`planner.io.ct`, contour rules in :mod:`planner.io.rtstruct`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom.uid import generate_uid

from planner.density import hu_to_density
from planner.errors import InputError
from planner.io._atomic import atomic_directory
from planner.io._dicom import CT_IMAGE_STORAGE, RT_STRUCTURE_SET_STORAGE, read_header, save
from planner.io.ct import CtSeries, read_ct_series, write_ct_series
from planner.io.rtstruct import (
    StructureSet,
    rasterise_structure_set,
    read_structure_set,
    structure_set_dataset,
)
from planner.patient import DicomReferences, Patient

STRUCTURE_SET_FILE = "RS.dcm"


def _scan(folder: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """CT slices by SeriesInstanceUID and RT Structure Set files in ``folder`` (recursively)."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    series: dict[str, list[Path]] = {}
    structure_sets = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        ds = read_header(path)
        if ds is None:
            continue
        if ds.SOPClassUID == CT_IMAGE_STORAGE:
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path)
        elif ds.SOPClassUID == RT_STRUCTURE_SET_STORAGE:
            structure_sets.append(path)
    return series, structure_sets


def _one_series(folder: Path, series: dict[str, list[Path]]) -> list[Path]:
    if not series:
        raise InputError(f"{folder}: no CT images found")
    if len(series) > 1:
        examples = "; ".join(f"{paths[0]} in series {uid or '(none)'}"
                             for uid, paths in series.items())
        raise InputError(f"{folder}: CT images of {len(series)} series ({examples}); "
                         f"keep one series per folder")
    return next(iter(series.values()))


def find_ct_and_structure_set(folder: Path) -> tuple[list[Path], Path]:
    """The CT slices and the RT Structure Set file in ``folder`` (searched recursively).

    Files that are clearly not DICOM are skipped (see :func:`planner.io._dicom.read_header`);
    DICOM objects other than CT images and RT Structure Sets (RT Plan, RT Dose, DICOMDIR, ...)
    are ignored.

    Raises
    ------
    InputError
        Naming the folder: not a folder, no CT images, CT images of several series, no RT
        Structure Set or several. Naming the file: a corrupt DICOM file.
    """
    folder = Path(folder)
    series, structure_sets = _scan(folder)
    ct_paths = _one_series(folder, series)
    if not structure_sets:
        raise InputError(f"{folder}: no RT Structure Set found")
    if len(structure_sets) > 1:
        raise InputError(f"{folder}: {len(structure_sets)} RT Structure Sets "
                         f"({', '.join(map(str, structure_sets))}); keep one per folder")
    return ct_paths, structure_sets[0]


def find_ct_series(folder: Path) -> list[Path]:
    """The CT slices in ``folder`` (searched recursively), as :func:`find_ct_and_structure_set`
    finds them; RT Structure Sets in the folder are ignored.

    Raises
    ------
    InputError
        Naming the folder: not a folder, no CT images, CT images of several series. Naming the
        file: a corrupt DICOM file.
    """
    folder = Path(folder)
    return _one_series(folder, _scan(folder)[0])


@dataclass(frozen=True)
class DicomFolder:
    """What can be read of a DICOM folder that does not read as a patient (``planner info``).

    Attributes
    ----------
    ct : CtSeries or None
        The CT series, when the folder holds one series that reads.
    structure_sets : tuple of StructureSet
        Every RT Structure Set that reads, duplicate ROI names allowed.
    """

    ct: CtSeries | None
    structure_sets: tuple[StructureSet, ...]


def read_dicom_folder(folder: Path) -> DicomFolder:
    """Read what can be read of ``folder``: the CT series and the structure sets, each left out
    (not raised) when it does not read; the reason is what :func:`read_dicom_patient` raises.

    Raises
    ------
    InputError
        Not a folder, or a corrupt DICOM file (:func:`find_ct_and_structure_set`).
    """
    folder = Path(folder)
    series, paths = _scan(folder)
    try:
        ct = read_ct_series(_one_series(folder, series))
    except InputError:
        ct = None
    structure_sets = []
    for path in paths:
        try:
            structure_sets.append(read_structure_set(path, unique_names=False))
        except InputError:
            continue
    return DicomFolder(ct, tuple(structure_sets))


def read_dicom_patient(folder: Path, *, structure_set: str | Path | None = None) -> Patient:
    """Read the CT series in ``folder`` and an RT Structure Set as a Patient.

    Parameters
    ----------
    folder : Path
        Searched recursively; must hold exactly one CT series, and exactly one RT Structure Set
        unless ``structure_set`` is given.
    structure_set : str or Path, optional
        The RT Structure Set file to use, anywhere (another system's export, for instance);
        any structure set in ``folder`` is then ignored. By default the one in ``folder``.

    Returns
    -------
    Patient
        ``hu`` (float32 HU) and ``density`` (g/cm^3) on the CT grid; one boolean-mask
        Structure per ROI with contours, kind from RTROIInterpretedType (see
        :func:`planner.io.rtstruct.rasterise_structure_set`); ``prescriptions=()``; ``dicom``
        with the CT's and the structure set's identity; ``name`` the PatientID (the folder name
        when empty); ``source=str(folder)``.

    Raises
    ------
    InputError
        One line naming the file or folder: see :func:`find_ct_and_structure_set`,
        :func:`planner.io.ct.read_ct_series`, :func:`planner.io.rtstruct.read_structure_set`
        and :func:`planner.io.rtstruct.rasterise_contours`; also a structure set of another
        patient or another frame of reference than the CT.

    Warns
    -----
    UserWarning
        For each ROI that has no closed contours, or whose contours lie outside the CT's field
        of view: the ROI is skipped (structure sets often carry empty placeholder ROIs).
    """
    folder = Path(folder)
    if structure_set is None:
        ct_paths, structure_set_path = find_ct_and_structure_set(folder)
    else:
        ct_paths, structure_set_path = find_ct_series(folder), Path(structure_set)
    ct = read_ct_series(ct_paths)
    contours = read_structure_set(structure_set_path)
    ct_frame = ct.references.frame_of_reference_uid
    if contours.patient_id and ct.references.patient_id \
            and contours.patient_id != ct.references.patient_id:
        raise InputError(f"{structure_set_path}: PatientID {contours.patient_id!r} differs "
                         f"from {ct.references.patient_id!r} of the CT")
    for frame in contours.frame_of_reference_uids:
        if frame != ct_frame:
            raise InputError(f"{structure_set_path}: frame of reference {frame} differs from "
                             f"{ct_frame} of the CT")
    for roi in contours.rois:
        if roi.frame_of_reference_uid and roi.frame_of_reference_uid != ct_frame:
            raise InputError(f"{structure_set_path}: ROI {roi.name!r}: frame of reference "
                             f"{roi.frame_of_reference_uid} differs from {ct_frame} of the CT")
    structures = rasterise_structure_set(contours, ct.grid)
    references = DicomReferences(
        patient_id=ct.references.patient_id,
        patient_name=ct.references.patient_name,
        study_instance_uid=ct.references.study_instance_uid,
        frame_of_reference_uid=ct_frame,
        ct_series_instance_uid=ct.references.ct_series_instance_uid,
        ct_sop_instance_uids=ct.references.ct_sop_instance_uids,
        structure_set_sop_instance_uid=contours.sop_instance_uid,
        patient_position=ct.references.patient_position,
    )
    return Patient(
        name=ct.references.patient_id or folder.resolve().name,
        grid=ct.grid,
        hu=ct.hu,
        density=hu_to_density(ct.hu),
        structures=structures,
        prescriptions=(),
        dicom=references,
        source=str(folder),
    )


def write_dicom_patient(patient: Patient, out_dir: Path, *, overwrite: bool = False
                        ) -> DicomReferences:
    """Write ``patient`` as a CT series and an RT Structure Set into ``out_dir``.

    The folder appears complete or not at all (:func:`planner.io._atomic.atomic_directory`).
    Patient identity, study and frame of reference come from ``patient.dicom`` when present
    (the grid is in that frame's patient coordinates), otherwise ``patient.name`` and new UIDs;
    the CT series, every slice and the structure set get new UIDs. Files: ``CT.0001.dcm`` ...
    (one per slice, HU rounded to integers) and ``RS.dcm``.

    Parameters
    ----------
    patient : Patient
    out_dir : Path
        Must not exist unless ``overwrite``.
    overwrite : bool
        Replace an existing ``out_dir`` (the CLI's ``--force``).

    Returns
    -------
    DicomReferences
        The identity of what was written, for RT Plan and RT Dose to refer to.

    Raises
    ------
    InputError
        ``out_dir`` exists and ``overwrite`` is false.
    """
    old = patient.dicom
    references = DicomReferences(
        patient_id=old.patient_id if old else patient.name,
        patient_name=old.patient_name if old else patient.name,
        study_instance_uid=old.study_instance_uid if old else generate_uid(),
        frame_of_reference_uid=old.frame_of_reference_uid if old else generate_uid(),
        ct_series_instance_uid=generate_uid(),
        ct_sop_instance_uids=tuple(generate_uid() for _ in range(patient.grid.shape[0])),
        structure_set_sop_instance_uid=generate_uid(),
        patient_position=old.patient_position if old else "HFS",
    )
    created = datetime.now()
    with atomic_directory(Path(out_dir), overwrite=overwrite) as folder:
        write_ct_series(folder, patient.grid, patient.hu, references, created=created)
        save(structure_set_dataset(patient.structures, patient.grid, references,
                                   created=created), folder / STRUCTURE_SET_FILE)
    return references
