"""Plan one patient, stage by stage (DESIGN.md, "Data flow").

Each stage is a function over plain data that the CLI, the benchmarks and a notebook call alike;
:func:`plan_patient` runs them in order::

    case = prepare_case(patient, protocol)        # set-up: protocol mapped onto the structures
    grids = prepare_grids(case, 3.0)              # set-up: dose grid, structures on both grids
    beams = place_beams(case, 9, 5.0)             # set-up: isocentre, beams, beamlets
    fluence = optimise_fluence(case, grids, beams, device=..., seed=..., time_limit_s=..., log=...)
    fields = sequence_fields(case, beams, fluence.result.x)            # delivery: sequencing
    weights = weight_segments(case, grids, beams, fields, fluence, device=..., log=...)
    delivery = trace_fields(case, grids, beams, fields, device=...)    # delivery: final dose
    planned = delivery.plan(weights.result.x)
    result, planned, repair = repair_goals(delivery, weights, fluence, planned, log=...)
    # where repair.still_lost: the fluence corrected for what delivery added, delivered again
    fluence = correct_fluence(case, grids, fluence, planned.dose_gy, log=...)
    planned, note = normalise(delivery, result.x, planned, log=...)
    summary = plan_summary(...); write_plan_folder(...)                # summary and output
"""

from planner.plan.beams import PlanBeams, place_beams, smoothness_regulariser, target_centre_xyz_mm
from planner.plan.delivery import DeliveredPlan, Delivery, trace_fields
from planner.plan.fluence import FluencePlan, beamlet_dose, correct_fluence, optimise_fluence
from planner.plan.goal_repair import GoalRepairReport, repair_goals
from planner.plan.grid import PlanGrids, dose_grid_for, prepare_grids, resample_patient
from planner.plan.log import StepLog
from planner.plan.normalisation import normalise
from planner.plan.output import write_plan_folder
from planner.plan.run import PlanResult, plan_patient
from planner.plan.segment_weights import SegmentWeights, weight_segments
from planner.plan.sequencing import SequencedFields, sequence_fields
from planner.plan.setup import PlanCase, ProtocolConflictError, default_protocol, prepare_case
from planner.plan.summary import (DICOM_FOLDER, LOG_FILE, REPORT_FOLDER, SUMMARY_FILE,
                                  plan_summary, summary_text)

__all__ = [
    "DICOM_FOLDER",
    "LOG_FILE",
    "REPORT_FOLDER",
    "SUMMARY_FILE",
    "DeliveredPlan",
    "Delivery",
    "FluencePlan",
    "GoalRepairReport",
    "PlanBeams",
    "PlanCase",
    "PlanGrids",
    "PlanResult",
    "ProtocolConflictError",
    "SegmentWeights",
    "SequencedFields",
    "StepLog",
    "beamlet_dose",
    "correct_fluence",
    "default_protocol",
    "dose_grid_for",
    "normalise",
    "optimise_fluence",
    "place_beams",
    "plan_patient",
    "plan_summary",
    "prepare_case",
    "prepare_grids",
    "repair_goals",
    "resample_patient",
    "sequence_fields",
    "smoothness_regulariser",
    "summary_text",
    "target_centre_xyz_mm",
    "trace_fields",
    "weight_segments",
    "write_plan_folder",
]
