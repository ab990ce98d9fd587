"""Small DICOM helpers shared by the CT and RT Structure Set readers and writers.

Reading: :func:`read_header` decides whether a file is DICOM at all and names it in any error;
:func:`read_dicom` reads a whole file under the same rules; :func:`read_modality` reads an RT
object of a given modality.
Writing: :func:`new_dataset` starts a dataset with the patient, study, equipment and SOP common
attributes every object planner writes carries; :func:`format_ds` and :func:`raw_ds_element`
write decimal strings.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from planner.errors import InputError
from planner.patient import DicomReferences

# Storage SOP classes (DICOM PS3.4 Annex B.5).
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"

MANUFACTURER = "planner"


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, so that InputError messages stay one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read(path: Path, *, header_only: bool) -> Dataset | None:
    with open(path, "rb") as f:
        prefix = f.read(132)
    has_magic = prefix[128:132] == b"DICM"
    # pydicom warns of odd values (as it reads, or converts them): its warnings are re-issued
    # naming the file, for a whole read; a header read's are dropped (the whole read repeats
    # them, and a file that turns out not to be DICOM has nothing to say).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # For a header, values over 4 KB are skipped, not read: a non-DICOM file parsed by
            # force may claim a length of gigabytes, and the attributes that classify a file
            # are short.
            ds = pydicom.dcmread(path, force=not has_magic, stop_before_pixels=header_only,
                                 defer_size=4096 if header_only else None)
            sop_class = ds.get("SOPClassUID")
            if not header_only:
                for _ in ds:  # converts every top-level value now, so that its warning is here
                    pass
        except Exception as error:  # pydicom raises many types on corrupt input
            if not has_magic:
                return None
            raise InputError(f"{path}: unreadable DICOM file ({first_line(error)})") from error
    if not sop_class:
        if not has_magic:
            return None
        raise InputError(f"{path}: DICOM file without a SOP Class UID")
    if not header_only:
        for w in caught:
            warnings.warn(f"{path}: {first_line(w.message)}", UserWarning, stacklevel=4)
    return ds


def read_header(path: Path) -> Dataset | None:
    """Read a file's short attributes (no pixel data), or None if the file is clearly not DICOM.

    A file with the ``DICM`` prefix at byte 128 is DICOM, and any failure to read it is an error.
    A file without the prefix (DICOM allows it for data sets stored without file meta
    information, e.g. pydicom's own ``rtstruct.dcm``) counts as DICOM only if it parses and
    carries a SOP Class UID; anything else (a text file, a README, an image) is skipped.
    Values over 4 KB are not read (they are read from the file when accessed).

    Raises
    ------
    InputError
        ``"<path>: unreadable DICOM file (<reason>)"`` for a corrupt DICOM file.
    """
    return _read(path, header_only=True)


def read_dicom(path: Path) -> Dataset:
    """Read a whole DICOM file, with or without the ``DICM`` prefix (see :func:`read_header`).

    Raises
    ------
    InputError
        ``"<path>: not a DICOM file"``, or unreadable as in :func:`read_header`.
    """
    ds = _read(path, header_only=False)
    if ds is None:
        raise InputError(f"{path}: not a DICOM file")
    return ds


def read_modality(path: Path, modality: str, what: str) -> Dataset:
    """Read a whole DICOM file (with the ``DICM`` prefix) that must be of ``modality``.

    Parameters
    ----------
    path : Path
    modality : str
        The Modality it must carry (``"RTPLAN"``, ``"RTDOSE"``).
    what : str
        The object's name in the error message (``"RT Plan"``).

    Raises
    ------
    InputError
        ``"<path>: unreadable DICOM file (<reason>)"``, or ``"<path>: not an <what> (Modality
        ...)"``.
    """
    try:
        ds = pydicom.dcmread(path)
        found = ds.get("Modality")
    except Exception as error:  # pydicom raises many types on corrupt input
        raise InputError(f"{path}: unreadable DICOM file ({first_line(error)})") from error
    if found != modality:
        raise InputError(f"{path}: not an {what} (Modality {found!r})")
    return ds


def format_ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) as close to ``value`` as DS allows."""
    return format_number_as_ds(float(value))


def raw_ds_element(tag: int, values: np.ndarray, decimals: int) -> RawDataElement:
    """A multi-valued DS element of ``values`` with ``decimals`` digits after the point.

    For bulk coordinates (contour points): pydicom would otherwise build and validate one
    Python object per value, which dominates the writing time of a structure set (seconds for
    a clinical body contour). pydicom writes a raw element's bytes as they are.

    Raises
    ------
    ValueError
        If a value would not fit the 16 characters of a DS.
    """
    values = np.asarray(values, dtype=float).ravel()
    if values.size and not np.abs(values).max() < 10.0 ** (14 - decimals):
        raise ValueError(f"values up to {np.abs(values).max():g} do not fit a DS with "
                         f"{decimals} decimals")
    text = "\\".join(map(f"{{:.{decimals}f}}".format, values.tolist())).encode("ascii")
    if len(text) % 2:
        text += b" "  # DICOM values have even length; DS pads with a space
    return RawDataElement(Tag(tag), "DS", len(text), text, 0, False, True)


def mark_as_encoded(ds: Dataset) -> None:
    """Declare ``ds`` and its sequence items already encoded as explicit VR little endian.

    pydicom then writes raw elements (:func:`raw_ds_element`) as they are; otherwise it decodes
    every element of a dataset built in memory to correct ambiguous VRs (US or SS, OB or OW),
    which costs seconds for a structure set's contours. Only for datasets without such
    attributes (pixel, LUT and overlay data have them). pydicom documents
    ``Dataset.set_original_encoding`` for this use.
    """
    charset = ds.get("SpecificCharacterSet")
    # What pydicom compares against: the dataset's own character set, or for an item built in
    # memory (no SpecificCharacterSet) the default it inherits.
    encoding = convert_encodings(charset) if charset else default_encoding
    ds.set_original_encoding(False, True, encoding)
    for tag in ds.keys():
        element = ds.get_item(tag)  # iterating the dataset itself would decode raw elements
        if element.VR == "SQ":
            for item in element.value:
                mark_as_encoded(item)


def new_dataset(
    references: DicomReferences,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: str,
    series_instance_uid: str,
    series_number: int,
    created: datetime,
) -> Dataset:
    """A dataset with file meta, SOP common, patient, study, series and equipment attributes.

    Parameters
    ----------
    references : DicomReferences
        Patient and study identity (``patient_id``, ``patient_name``, ``study_instance_uid``).
    sop_class_uid, sop_instance_uid, series_instance_uid : str
    modality : str
        ``"CT"``, ``"RTSTRUCT"``, ...
    series_number : int
    created : datetime
        Written as the instance creation date/time.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta  # its TransferSyntaxUID sets the encoding the file is written in
    date, time = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: patient and structure names may be non-ASCII
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    # Patient and general study modules; type 2 attributes planner does not know stay empty.
    ds.PatientName = references.patient_name
    ds.PatientID = references.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = references.study_instance_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.Manufacturer = MANUFACTURER
    return ds


# pydicom 3 renamed save_as's write_like_original=False (deprecated there) enforce_file_format.
_FILE_FORMAT = ({"enforce_file_format": True} if int(pydicom.__version__.split(".")[0]) >= 3
                else {"write_like_original": False})


def save(ds: Dataset, path: Path) -> None:
    """Write ``ds`` with the 128-byte preamble and file meta (a DICOM Part 10 file), encoded as
    its file meta's TransferSyntaxUID says."""
    ds.save_as(path, **_FILE_FORMAT)
