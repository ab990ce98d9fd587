"""Patient input and output: DICOM, OpenKBP, matRad files, and the built-in example phantoms.

:func:`load_patient` reads any supported input from one string, as the command line gives it.
The readers are imported when used, so that reading one format does not load the others'
dependencies (pydicom for DICOM, for instance).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from planner import phantoms
from planner.errors import InputError
from planner.patient import Patient

__all__ = ["EXAMPLES", "load_patient"]

#: Names accepted after ``example:``, each with the phantom function it calls (default arguments).
EXAMPLES = {"cshape": phantoms.cshape_phantom, "water": phantoms.water_box,
            "slab": phantoms.slab_phantom}

_ACCEPTED = ("example:" + "|".join(EXAMPLES) + ", a matRad .mat file, an OpenKBP patient folder "
             "(with ct.csv or ct.csv.gz) or a DICOM folder (CT + RTSTRUCT)")


def load_patient(spec: str | Path) -> Patient:
    """Read a patient from an example name, a matRad file, an OpenKBP folder or a DICOM folder.

    Parameters
    ----------
    spec : str or Path
        ``example:cshape`` (TG-119 C-shape), ``example:water`` (water box) or ``example:slab``
        (water/lung/water slabs), built by ``planner.phantoms`` with their default arguments; a
        ``.mat`` file (``planner.io.matrad.read_matrad_mat``); a folder holding ``ct.csv`` or
        ``ct.csv.gz`` (OpenKBP, ``planner.io.openkbp.read_openkbp_patient``); any other folder
        (DICOM CT + RTSTRUCT, ``planner.io.dicom_patient.read_dicom_patient``).

    Returns
    -------
    Patient
        With ``source`` set to ``spec`` as given.

    Raises
    ------
    InputError
        Unknown example name, missing path, a file of another type, or whatever the reader
        raises for bad content; the message lists the accepted inputs where the spec itself is
        at fault.
    """
    text = str(spec)
    if text.startswith("example:"):
        name = text.removeprefix("example:")
        if name not in EXAMPLES:
            raise InputError(f"{text}: unknown example {name!r}; accepted: {_ACCEPTED}")
        patient = EXAMPLES[name]()
    else:
        path = Path(spec)
        if path.is_dir():
            if (path / "ct.csv").is_file() or (path / "ct.csv.gz").is_file():
                from planner.io.openkbp import read_openkbp_patient

                patient = read_openkbp_patient(path)
            else:
                from planner.io.dicom_patient import read_dicom_patient

                patient = read_dicom_patient(path)
        elif path.is_file():
            if path.suffix.lower() != ".mat":
                raise InputError(f"{path}: not a supported input file; accepted: {_ACCEPTED}")
            from planner.io.matrad import read_matrad_mat

            patient = read_matrad_mat(path)
        else:
            raise InputError(f"{path}: no such file or folder; accepted: {_ACCEPTED}")
    return dataclasses.replace(patient, source=text)
