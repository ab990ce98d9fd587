"""planner: 6 MV IMRT treatment planning from CT and RT Structure Set to a deliverable RT Plan.

The steps a notebook calls, each a function over plain data (the ``planner`` command is a thin
layer over them)::

    import planner

    patient = planner.load_patient("example:cshape")      # or a DICOM / OpenKBP folder
    result = planner.plan_patient(patient, "tg119_c_shape", out_dir="out/cshape")
    print(planner.summary_text(result.summary, result.goals_fluence, result.goals_plan))
    check = planner.check_plan("out/cshape/dicom/RP.dcm")  # secondary dose check
    review = planner.review_plan("RP.dcm", "RD.dcm", "RS.dcm", "ct", "review")  # any system's

The stages of a plan one by one are in :mod:`planner.plan`; DICOM and OpenKBP input and output
in :mod:`planner.io`; DVHs, goals and the report in :mod:`planner.review`.
"""

# First: modules imported below read it (planner.plan's summary records the version).
__version__ = "0.1.0"

from dose.grid import Grid  # noqa: E402
from planner.check import CheckResult, check_plan, format_check  # noqa: E402
from planner.errors import InputError, PlannerError  # noqa: E402
from planner.io import load_patient  # noqa: E402
from planner.patient import DicomReferences, Patient, Prescription, Structure  # noqa: E402
from planner.plan import PlanResult, plan_patient, summary_text  # noqa: E402
from planner.protocol import Protocol, read_protocol  # noqa: E402
from planner.review import Review  # noqa: E402
from planner.review.external import review_plan  # noqa: E402

__all__ = ["CheckResult", "DicomReferences", "Grid", "InputError", "Patient", "PlanResult",
           "PlannerError", "Prescription", "Protocol", "Review", "Structure", "check_plan",
           "format_check", "load_patient", "plan_patient", "read_protocol", "review_plan",
           "summary_text"]
