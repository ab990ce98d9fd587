"""Output: the plan folder (RT Plan and RT Dose, the review report, ``summary.json`` and
``plan.log``), written as one atomic folder so that an interrupted or failed run leaves nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from planner.io._atomic import atomic_directory
from planner.io.plan_dicom import PlanFiles, write_plan_dicom
from planner.plan.beams import PlanBeams
from planner.plan.delivery import DeliveredPlan
from planner.plan.fluence import FluencePlan
from planner.plan.grid import PlanGrids
from planner.plan.log import StepLog
from planner.plan.setup import PlanCase
from planner.plan.summary import (DICOM_FOLDER, LOG_FILE, REPORT_FOLDER, SUMMARY_FILE,
                                  summary_text)
from planner.review import write_report
from planner.review.report import ReviewPlan, aperture_fluences, shown_paths


def write_plan_folder(out_dir: Path, case: PlanCase, grids: PlanGrids, beams: PlanBeams,
                      fluence: FluencePlan, planned: DeliveredPlan, summary: dict[str, Any], *,
                      normalisation: str, overwrite: bool, log: StepLog) -> PlanFiles:
    """The steps "export" (RT Plan + RT Dose, and CT + RTSTRUCT when the patient did not come
    from DICOM) and "report", then ``summary`` (completed with the report's figures and the
    times) and the log, all into ``out_dir`` at once.

    Returns
    -------
    PlanFiles
        The DICOM files, with their folder inside ``out_dir``.
    """
    patient, protocol = case.patient, case.protocol
    plan_beams = list(planned.beams)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        files = write_plan_dicom(tmp / DICOM_FOLDER, patient, plan_beams, beams.machine,
                                 planned.dose_gy, grids.dose_grid, fractions=case.fractions,
                                 prescriptions=protocol.prescriptions, label=protocol.name[:16])
        log.step("export", f"RT Plan + RT Dose{' + CT + RTSTRUCT' if files.wrote_images else ''}"
                           f" in {DICOM_FOLDER}/")
        review = ReviewPlan(label=protocol.name, beams=planned.beams,
                            leaf_boundaries_mm=beams.machine.leaf_boundaries_mm,
                            fluences=aperture_fluences(plan_beams,
                                                       beams.machine.leaf_boundaries_mm),
                            fractions=case.fractions, normalisation=normalisation,
                            source="planner plan",
                            sop_instance_uid=files.rt_plan_sop_instance_uid,
                            patient_id=files.references.patient_id,
                            patient_name=files.references.patient_name)
        reviewed = write_report(tmp / REPORT_FOLDER, patient, planned.dose_gy, grids.dose_grid,
                                protocol=protocol, plan=review,
                                predicted_dose_gy=fluence.predicted_gy,
                                prediction_note=fluence.seed_note,
                                fluence_dose_gy=fluence.dose_gy)
        log.step("report", f"{REPORT_FOLDER}/report.html")
        summary["quality"] = [{"figure": f.name, "structure": f.structure,
                               "value": round(f.value, 4), "unit": f.unit}
                              for f in reviewed.quality]
        summary["prediction"] = [dataclasses.asdict(r) for r in reviewed.prediction]
        summary["times_s"] = {k: round(v, 2) for k, v in log.times_s.items()}
        # No path of this machine: files relative to the plan folder, as the report shows them.
        summary["source"] = shown_paths(summary["source"], out_dir)
        summary["protocol"]["source"] = shown_paths(summary["protocol"]["source"], out_dir)
        summary["total_s"] = round(log.elapsed_s(), 2)
        log.lines.extend(summary_text(summary, fluence.goals, planned.goals).splitlines())
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
        (tmp / LOG_FILE).write_text("\n".join(log.lines) + "\n")
    return dataclasses.replace(files, folder=out_dir / DICOM_FOLDER)
